"""Message codec: round trips, validation, and no code execution while decoding."""

import os
import pickle

import pytest

from dispylike.errors import ProtocolError
from dispylike.protocol import messages as m
from dispylike.protocol.frames import Message


def roundtrip(msg):
    t, body = m.encode_message(msg)
    return m.decode_message(Message(t, body))


def test_round_trip_every_kind():
    samples = [
        m.NodeInfoRequest(''),
        m.NodeInfo('n', '127.0.0.1', 9701, 2, 2, 'Linux', 123, '0.1', '', (1.5, 2, 3, 0.0)),
        m.FileChunk('c', 'a/b.txt', 0, b'data', True, 0o644),
        m.SetupComputation('0' * 32, 'compute', 'me', '', b'code', True, 2.0),
        m.Pulse((1.0, 2, 3, 4.0)),
        m.Heartbeat(),
        m.ProvisionalResult(3, 4, b'r'),
        m.StartComputation('c', b''),
        m.ComputationReady('c', True, '', '/tmp/x'),
        m.RunJobs('c', ((1, 1, b'p'), (2, 2, b'q'))),
        m.JobReplies(((1, 1, 11, 1.0, 2.0, b'r'),)),
        m.AckReplies(((1, 1),)),
        m.CancelJob(1, 3),
        m.CloseComputation('c', False),
        m.ComputationClosed('c'),
        m.Refused('c', 'busy'),
        m.ShareComputation('a' * 32, 'compute', 'me', '', b'code', True, 0.0, False, True,
                           (('10.77.0.*', 0, 2, b''),)),
        m.SubmitJobs('c', ((1, '', b'p'), (2, '10.77.0.2', b'q'))),
        m.JobsRunning(((1, '10.77.0.2', 9701),)),
        m.NodeEvent(1, '10.77.0.2', 9701, 'n', 2, 2, 'Linux', ()),
        m.NodeEvent(3, '10.77.0.2', 9701, 'n', 2, 2, 'Linux', (1.0, 2, 3, 4.0)),
        m.NodeRequest('c', 7, 'cpus', '10.77.0.2', 1, ''),
        m.NodeRequestDone(7, 1, (3, 4)),
    ]
    for msg in samples:
        assert roundtrip(msg) == msg


def test_unknown_type():
    with pytest.raises(ProtocolError, match='unknown message type'):
        m.decode_message(Message(999, pickle.dumps(())))


def test_wrong_field_count_and_types():
    with pytest.raises(ProtocolError, match='fields'):
        m.decode_message(Message(m.CancelJob.TYPE, pickle.dumps((1,))))
    with pytest.raises(ProtocolError, match='CancelJob.uid'):
        m.decode_message(Message(m.CancelJob.TYPE, pickle.dumps(('1', 2))))
    with pytest.raises(ProtocolError, match='CancelJob.uid'):
        m.decode_message(Message(m.CancelJob.TYPE, pickle.dumps((True, 2))))


def test_nested_entries_checked():
    bad = pickle.dumps(('c', ((1, 'x', b'p'),)))
    with pytest.raises(ProtocolError, match='RunJobs'):
        m.decode_message(Message(m.RunJobs.TYPE, bad))
    bad = pickle.dumps(((1,),))
    with pytest.raises(ProtocolError, match='AckReplies'):
        m.decode_message(Message(m.AckReplies.TYPE, bad))


class Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_globals_in_a_message_are_refused_not_executed(monkeypatch):
    body = pickle.dumps(('c', Evil()))
    called = []
    monkeypatch.setattr(os, 'system', lambda *a: called.append(a))
    with pytest.raises(ProtocolError, match='only builtins'):
        m.decode_message(Message(m.Refused.TYPE, body))
    assert called == []


def test_malformed_pickle_is_protocol_error():
    for body in (b'', b'\x80\x05garbage', b'not a pickle at all'):
        with pytest.raises(ProtocolError):
            m.decode_message(Message(m.CancelJob.TYPE, body))


@pytest.mark.parametrize('msg', [
    m.ShareComputation('a' * 32, 'f', 'me', '', b'', True, 0.0, False, False, (('h', 0, 2),)),
    m.ShareComputation('../../victim', 'f', 'me', '', b'', True, 0.0, False, False, ()),
    m.SetupComputation('/../../x' + '0' * 24, 'f', 'me', '', b'', True, 0.0),
    m.SubmitJobs('c', ((1, 2, b'p'),)),
    m.JobsRunning(((1, '10.77.0.2'),)),
    m.NodeEvent(1, 'a', 1, 'n', 2, 2, 'L', (1.0, 2)),
    m.NodeRequestDone(7, 1, ('x',)),
    m.JobReplies(((1, 1, 6, 0.0, 0.0, b''),)),      # Running: not a final status
    m.JobReplies(((1, 1, 999, 0.0, 0.0, b''),)),    # no such status
])
def test_scheduler_messages_with_malformed_entries_are_refused(msg):
    t, body = m.encode_message(msg)
    with pytest.raises(ProtocolError):
        m.decode_message(Message(t, body))
