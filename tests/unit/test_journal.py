"""The recover file: round trips, folding, torn tails, corruption, creation rules."""

import io
import os
import random
import stat
import time
import zlib

import cloudpickle
import pytest

from dispylike import DispyJob
from dispylike.client.recover import _restored
from dispylike.errors import DispyError
from dispylike.persistence.journal import (
    FILE_HEADER,
    FORMAT_VERSION,
    KEEP_ARGS_MAX,
    MAGIC,
    RECORD_HEADER,
    NodeRecord,
    PendingJob,
    RecordKind,
    RecoverFileError,
    RecoverJournal,
    default_recover_path,
    encode_record,
    latest_recover_file,
    read_journal,
)
from dispylike.persistence.journal import _fold_records as fold_records

META = {'comp_id': 'c1', 'name': 'compute', 'client_name': 'me', 'created': 1.5,
        'secret_check': b'\x01\x02', 'dispy_port': 9700, 'tls': ('c.pem', 'k.pem', 'ca.pem'),
        'extra': [1, 2]}


def write_sample(path) -> None:
    """Two jobs pending (one never dispatched), one done, two nodes, then CLOSED."""
    with RecoverJournal.create(path) as journal:
        journal.cluster(META)
        journal.node('10.0.0.1:9700', '10.77.0.1', 9700, 'n1')
        journal.node('10.0.0.2:9700', '10.77.0.2', 9700, 'n2')
        journal.submitted(1, 'job-a', b'args-1')
        journal.submitted(2, ('tuple', 2), b'args-2')
        journal.submitted(3, None, b'')
        journal.dispatched(1, '10.0.0.1:9700', 1)
        journal.dispatched(3, '10.0.0.2:9700', 1)
        journal.done(3)
        journal.closed()


def test_round_trip_of_every_record_kind(tmp_path):
    path = tmp_path / 'j'
    write_sample(path)
    state = read_journal(path)
    assert state.meta == META
    assert state.nodes == {'10.0.0.1:9700': NodeRecord('10.77.0.1', 9700, 'n1'),
                           '10.0.0.2:9700': ('10.77.0.2', 9700, 'n2')}
    assert state.jobs == {1: PendingJob(1, 'job-a', b'args-1', '10.0.0.1:9700', 1),
                          2: PendingJob(2, ('tuple', 2), b'args-2', None, 0)}
    assert state.closed is True
    assert state.torn_bytes == 0
    assert state.records == 10


def test_done_removes_pending_and_late_dispatch_is_moot(tmp_path):
    path = tmp_path / 'j'
    with RecoverJournal.create(path) as journal:
        journal.submitted(7, 'x', b'a')
        journal.dispatched(7, 'h:1', 1)
        journal.done(7)
        journal.dispatched(7, 'h:2', 2)  # stale, after DONE
        journal.done(99)  # never submitted
    state = read_journal(path)
    assert state.jobs == {}
    assert state.closed is False


def test_latest_dispatch_wins(tmp_path):
    path = tmp_path / 'j'
    with RecoverJournal.create(path) as journal:
        journal.submitted(5, None, b'a')
        journal.dispatched(5, 'h:1', 1)
        journal.dispatched(5, 'h:2', 2)
        journal.dispatched(5, 'h:3', 3)
    job = read_journal(path).jobs[5]
    assert (job.node_key, job.attempt) == ('h:3', 3)


def test_random_history_matches_a_model(tmp_path):
    rng = random.Random(1234)
    path = tmp_path / 'j'
    model: dict[int, tuple] = {}
    with RecoverJournal.create(path) as journal:
        for step in range(3000):
            uid = rng.randrange(200)
            action = rng.random()
            if action < 0.4:
                big = rng.random() < 0.02                  # now and then a large one
                blob = rng.randbytes(rng.randrange(70_000, 200_000) if big
                                     else rng.randrange(20))
                journal.submitted(uid, step, blob)
                model[uid] = (step, blob, None, 0)
            elif action < 0.8:
                journal.dispatched(uid, f'h:{step}', step)
                if uid in model:
                    model[uid] = model[uid][:2] + (f'h:{step}', step)
            else:
                journal.done(uid)
                model.pop(uid, None)
            if step % 97 == 0:
                journal.flush(sync=False)
    state = read_journal(path)
    assert state.records == 3000
    assert {uid: (j.job_id, j.args_blob, j.node_key, j.attempt)
            for uid, j in state.jobs.items()} == model


def test_large_arguments_are_written_from_the_callers_object(tmp_path, monkeypatch):
    path = tmp_path / 'j'
    big = os.urandom(300_000)
    written = []
    real_writev = os.writev

    def spy(fd, buffers):
        written.extend(buffers)
        return real_writev(fd, buffers)
    monkeypatch.setattr(os, 'writev', spy)
    with RecoverJournal.create(path) as journal:
        journal.submitted(1, 'small', b'abc')
        journal.submitted(2, ('big', 2), big)
        journal.dispatched(2, 'h:1', 1)
        assert journal.pending_bytes > len(big)
        journal.flush(sync=False)
        assert journal.pending_bytes == 0
    assert any(buf is big for buf in written)               # not copied on the way
    state = read_journal(path)
    assert state.jobs == {1: PendingJob(1, 'small', b'abc'),
                          2: PendingJob(2, ('big', 2), big, 'h:1', 1)}
    assert state.torn_bytes == 0


def test_arguments_over_the_cap_are_not_kept_and_recover_without_them(tmp_path):
    path = tmp_path / 'j'
    at_cap, over = os.urandom(KEEP_ARGS_MAX), os.urandom(KEEP_ARGS_MAX + 1)
    with RecoverJournal.create(path) as journal:
        journal.submitted(1, 'at cap', at_cap)
        journal.submitted(2, 'over', over)
        journal.flush(sync=False)
    assert path.stat().st_size < 2 * KEEP_ARGS_MAX            # only one of them on disk
    state = read_journal(path)
    assert state.jobs[1].args_blob == at_cap and state.jobs[2].args_blob == b''
    job = _restored(state.jobs[2])
    assert (job.id, job.args, job.kwargs) == ('over', None, None)
    assert job.status == DispyJob.Abandoned                   # never dispatched
    job = _restored(PendingJob(3, 'kept', cloudpickle.dumps(((1, 2), {'k': 3}))))
    assert (job.args, job.kwargs) == ((1, 2), {'k': 3})


def test_a_short_writev_leaves_the_rest_for_the_next_flush(tmp_path, monkeypatch):
    path = tmp_path / 'j'
    big = os.urandom(200_000)
    real_writev = os.writev
    calls = []

    def short(fd, buffers):
        calls.append(1)
        if len(calls) == 1:            # the first call writes 1,000 bytes, then fails
            real_writev(fd, [memoryview(b''.join(bytes(b) for b in buffers))[:1000]])
            return 1000
        if len(calls) == 2:
            raise OSError(28, 'No space left on device')
        return real_writev(fd, buffers)
    monkeypatch.setattr(os, 'writev', short)
    with RecoverJournal.create(path) as journal:
        journal.submitted(1, None, big)
        journal.submitted(2, None, b'small')
        with pytest.raises(OSError):
            journal.flush(sync=False)
        assert journal.pending_bytes > 0
        journal.flush(sync=False)
        assert journal.pending_bytes == 0
    state = read_journal(path)
    assert state.jobs == {1: PendingJob(1, None, big), 2: PendingJob(2, None, b'small')}
    assert state.torn_bytes == 0


def write_then_last(path, last):
    """Write two records, then ``last``; return the file's bytes and where ``last`` starts."""
    with RecoverJournal.create(path) as journal:
        journal.node('h:1', 'h', 1, 'n')
        journal.submitted(1, 'kept', b'args')
        journal.flush()
        start = os.path.getsize(path)
        last(journal)
    data = path.read_bytes()
    assert start < len(data)
    return data, start


def check_survivors(state) -> None:
    assert state.nodes == {'h:1': ('h', 1, 'n')}
    assert state.jobs == {1: PendingJob(1, 'kept', b'args')}
    assert state.records == 2


def test_torn_tail_at_every_offset_of_the_last_record_is_ignored(tmp_path):
    data, start = write_then_last(tmp_path / 'j', lambda j: j.dispatched(1, 'h:1', 4))
    cut_path = tmp_path / 'cut'
    for cut in range(start, len(data)):
        cut_path.write_bytes(data[:cut])
        state = read_journal(cut_path)
        check_survivors(state)
        assert state.torn_bytes == cut - start, cut
    cut_path.write_bytes(data)
    assert read_journal(cut_path).jobs[1].attempt == 4


def test_flipped_byte_anywhere_in_the_last_record_stops_reading_there(tmp_path):
    data, start = write_then_last(tmp_path / 'j', lambda j: j.done(1))
    bad_path = tmp_path / 'bad'
    for offset in range(start, len(data)):
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        bad_path.write_bytes(bad)
        state = read_journal(bad_path)
        check_survivors(state)
        assert state.torn_bytes == len(data) - start, offset


def test_corrupt_middle_record_hides_the_records_after_it(tmp_path):
    path = tmp_path / 'j'
    with RecoverJournal.create(path) as journal:
        journal.submitted(1, None, b'a')
        journal.flush()
        middle = os.path.getsize(path)
        journal.submitted(2, None, b'b')
        journal.submitted(3, None, b'c')
    data = bytearray(path.read_bytes())
    data[middle + 12] ^= 0x01  # inside the second record's payload
    path.write_bytes(data)
    state = read_journal(path)
    assert list(state.jobs) == [1]
    assert state.torn_bytes == len(data) - middle


def test_zero_filled_tail_is_torn_not_a_record(tmp_path):
    path = tmp_path / 'j'
    with RecoverJournal.create(path) as journal:
        journal.submitted(1, None, b'a')
    size = os.path.getsize(path)
    with open(path, 'ab') as stream:
        stream.write(bytes(64))
    state = read_journal(path)
    assert list(state.jobs) == [1]
    assert state.torn_bytes == 64
    assert os.path.getsize(path) == size + 64


class SmallReads(io.BytesIO):
    """A stream that fails a test asking it for more than it could ever hold."""

    def read(self, size=-1):
        if size < 0 or size > len(self.getbuffer()):
            raise AssertionError(f'read({size}) of a {len(self.getbuffer())}-byte file')
        return super().read(size)


def test_torn_huge_length_is_not_read(tmp_path):
    good = encode_record(RecordKind.SUBMIT, (1, None, b'a'))
    torn = RECORD_HEADER.pack(0xFFFFFFFF, RecordKind.DONE, 0) + b'xx'
    data = FILE_HEADER.pack(MAGIC, FORMAT_VERSION) + good + torn
    stream = SmallReads(data)
    stream.seek(FILE_HEADER.size)
    state = fold_records('j', stream, len(data))
    assert list(state.jobs) == [1]
    assert state.torn_bytes == len(torn)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecoverFileError, match='does not exist'):
        read_journal(tmp_path / 'nope')


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'j'
    path.write_bytes(b'')
    with pytest.raises(RecoverFileError, match='empty'):
        read_journal(path)


@pytest.mark.parametrize('content', [b'XXXXXXXX\x01', b'DLK', b'not a journal at all'])
def test_wrong_magic_is_a_clear_error(tmp_path, content):
    path = tmp_path / 'j'
    path.write_bytes(content)
    with pytest.raises(RecoverFileError, match='not a dispylike recover file'):
        read_journal(path)


def test_other_format_version_is_a_clear_error(tmp_path):
    path = tmp_path / 'j'
    path.write_bytes(FILE_HEADER.pack(MAGIC, FORMAT_VERSION + 1))
    with pytest.raises(RecoverFileError, match=f'version {FORMAT_VERSION + 1}'):
        read_journal(path)


def test_header_only_file_is_an_empty_state(tmp_path):
    path = tmp_path / 'j'
    RecoverJournal.create(path).close()
    state = read_journal(path)
    assert (state.meta, state.nodes, state.jobs, state.closed) == ({}, {}, {}, False)
    assert (state.records, state.torn_bytes) == (0, 0)


@pytest.mark.parametrize('record', [
    encode_record(RecordKind.SUBMIT, ('uid', None, b'')),
    encode_record(RecordKind.DISPATCH, (1, 'h:1')),
    encode_record(RecordKind.NODE, ['k', 'h', 1, 'n']),
    encode_record(RecordKind.CLUSTER, ('not a dict',)),
    encode_record(RecordKind.CLOSED, (1,)),
])
def test_checksummed_but_malformed_record_is_an_error(tmp_path, record):
    path = tmp_path / 'j'
    path.write_bytes(FILE_HEADER.pack(MAGIC, FORMAT_VERSION) + record)
    with pytest.raises(RecoverFileError, match='malformed'):
        read_journal(path)


def test_checksummed_unknown_kind_is_an_error(tmp_path):
    record = bytearray(encode_record(RecordKind.DONE, (1,)))
    record[4] = 200  # the kind byte; recompute the checksum so only the kind is wrong
    crc = zlib.crc32(bytes(record[4:5]) + bytes(record[9:]))
    record[5:9] = crc.to_bytes(4, 'big')
    path = tmp_path / 'j'
    path.write_bytes(FILE_HEADER.pack(MAGIC, FORMAT_VERSION) + record)
    with pytest.raises(RecoverFileError, match='unknown record kind 200'):
        read_journal(path)


def test_recover_file_error_is_a_dispy_error():
    assert issubclass(RecoverFileError, DispyError)


def test_file_mode_is_0600(tmp_path):
    path = tmp_path / 'j'
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        RecoverJournal.create(path).close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_create_refuses_an_existing_path(tmp_path):
    path = tmp_path / 'j'
    path.write_bytes(b'precious')
    with pytest.raises(RecoverFileError, match='already exists'):
        RecoverJournal.create(path)
    assert path.read_bytes() == b'precious'


@pytest.mark.parametrize('key', ['secret', 'Secret'])
def test_meta_with_a_secret_key_is_refused(tmp_path, key):
    with RecoverJournal.create(tmp_path / 'j') as journal:
        with pytest.raises(ValueError, match='secret'):
            journal.cluster({'name': 'x', key: 'hunter2'})
        assert journal.pending_bytes == 0
    assert b'hunter2' not in (tmp_path / 'j').read_bytes()


def test_writer_refuses_fields_the_reader_would_refuse(tmp_path):
    with RecoverJournal.create(tmp_path / 'j') as journal:
        with pytest.raises(TypeError):
            journal.submitted(1, None, 'not bytes')
        with pytest.raises(TypeError):
            journal.dispatched(1, None, 1)
        with pytest.raises(TypeError):
            journal.node('k', 'h', '9700', 'n')
        with pytest.raises(TypeError):
            journal.done('1')
        with pytest.raises(TypeError):
            journal.cluster([('name', 'x')])
        assert journal.pending_bytes == 0


def test_records_are_buffered_until_flush(tmp_path):
    path = tmp_path / 'j'
    with RecoverJournal.create(path) as journal:
        header_size = os.path.getsize(path)
        assert header_size == FILE_HEADER.size
        journal.submitted(1, None, b'a')
        journal.done(1)
        pending = journal.pending_bytes
        assert pending > 0
        assert os.path.getsize(path) == header_size
        journal.flush(sync=False)
        assert journal.pending_bytes == 0
        assert os.path.getsize(path) == header_size + pending
        assert read_journal(path).records == 2  # readable while still open


def test_close_flushes_is_idempotent_and_can_remove(tmp_path):
    path = tmp_path / 'j'
    journal = RecoverJournal.create(path)
    journal.submitted(1, None, b'a')
    journal.close()
    journal.close()
    assert journal.is_closed
    assert list(read_journal(path).jobs) == [1]
    with pytest.raises(RecoverFileError, match='closed'):
        journal.done(1)
    with pytest.raises(RecoverFileError, match='closed'):
        journal.flush()
    journal.close(remove=True)
    assert not path.exists()
    journal.close(remove=True)


def test_context_manager_closes_on_error(tmp_path):
    path = tmp_path / 'j'
    with pytest.raises(KeyError), RecoverJournal.create(path) as journal:
        journal.submitted(1, None, b'a')
        raise KeyError('boom')
    assert journal.is_closed
    assert list(read_journal(path).jobs) == [1]


def test_closed_flag(tmp_path):
    open_path, closed_path = tmp_path / 'open', tmp_path / 'closed'
    with RecoverJournal.create(open_path) as journal:
        journal.submitted(1, None, b'a')
    with RecoverJournal.create(closed_path) as journal:
        journal.submitted(1, None, b'a')
        journal.closed()
    assert read_journal(open_path).closed is False
    assert read_journal(closed_path).closed is True


def test_default_recover_path_uses_local_time(tmp_path):
    now = time.mktime((2024, 3, 9, 14, 5, 7, 0, 0, -1))
    assert default_recover_path(now) == os.path.join('.', '_dispy_20240309140507')
    assert default_recover_path(now, str(tmp_path)) == str(tmp_path / '_dispy_20240309140507')
    assert os.path.basename(default_recover_path()).startswith('_dispy_')


def test_latest_recover_file_picks_the_newest(tmp_path):
    for stamp in (1_700_000_000, 1_700_086_400, 1_600_000_000):
        RecoverJournal.create(default_recover_path(stamp, str(tmp_path))).close()
    (tmp_path / '_dispy_99999999999999').mkdir()  # a directory is never a recover file
    (tmp_path / 'zzz_not_ours').write_bytes(b'')
    newest = default_recover_path(1_700_086_400, str(tmp_path))
    assert latest_recover_file(str(tmp_path)) == newest


def test_latest_recover_file_when_there_is_none(tmp_path):
    (tmp_path / 'other').write_bytes(b'')
    with pytest.raises(RecoverFileError, match='no recover file'):
        latest_recover_file(str(tmp_path))
    with pytest.raises(RecoverFileError, match='cannot list'):
        latest_recover_file(str(tmp_path / 'missing'))
