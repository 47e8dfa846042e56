"""Message codec: round trips, validation, and no code execution while decoding."""

import os
import pickle
import random

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


def test_parts_encoding_is_byte_for_byte_the_pickle_and_keeps_large_fields_uncopied():
    payload = os.urandom(300_000)
    msg = m.RunJobs('0' * 32, ((1, 0, b'small'), (2, 0, payload)))
    kind, parts = m.encode_message_parts(msg)
    assert (kind, b''.join(parts)) == m.encode_message(msg)
    assert any(part is payload for part in parts)


@pytest.mark.parametrize('protocol', [0, 1, 2, 3, 4, 5])
def test_safe_loads_reads_a_message_in_frames_split_anywhere(protocol):
    rng = random.Random(protocol)
    value = (1, 'a\nb\n', 2.5, (None, True, -7, 10 ** 30), ['', 'é' * 500])
    if protocol >= 3:
        value += (rng.randbytes(200_000), b'')
    if protocol >= 5:
        value += (bytearray(b'ba'),)
    data = pickle.dumps(value, protocol=protocol)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(data)), 6))
        parts = tuple(data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True))
        parts = tuple(bytearray(p) if rng.random() < 0.5 else p for p in parts)
        assert m.safe_loads(Message(20, parts=parts)) == value
    with pytest.raises(ProtocolError):
        m.safe_loads(Message(20, parts=(data[:10], data[10:-1])))      # truncated
    with pytest.raises(ProtocolError):                                 # a global, in frames
        m.safe_loads(Message(20, parts=(pickle.dumps(os.system)[:5], pickle.dumps(os.system)[5:])))


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
