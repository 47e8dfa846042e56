"""Transfer files: written once, read once and removed, names confined, stale directories
of dead nodes removed; a client on the node's host finds the token, writes argument
files the node adopts only if plain, and reads result files only in that directory."""

import os
import pickle
import subprocess
import sys

import pytest

from dispylike.driver import samehost
from dispylike.errors import ProtocolError
from dispylike.execution import xfer
from dispylike.protocol.messages import Pieces
from dispylike.protocol.payload import SplitPayload
from dispylike.transport.session import RetainedReplies

shm_only = pytest.mark.skipif(not os.path.isdir(xfer.SHM), reason='no /dev/shm')


def test_put_then_take_removes_the_file(tmp_path):
    path = str(tmp_path / 'a.in')
    xfer.put(path, b'x' * 3_000_000)
    assert xfer.take(path) == b'x' * 3_000_000
    assert not os.path.exists(path)


def test_a_pickle_in_pieces_is_written_whole_and_read_back_through_a_mapping(tmp_path):
    path = str(tmp_path / 'b.out')
    value = (b'y' * 3_000_000, 'text', 7)
    out = Pieces()
    pickle.Pickler(out, protocol=5).dump(value)
    assert any(part is value[0] for part in out.parts)           # the big field, uncopied
    xfer.put(path, out.parts + [b''] * 600)                       # over one writev's buffers
    mapped = xfer.take_mapped(path)
    assert not os.path.exists(path)                               # removed, still readable
    assert pickle.loads(mapped) == value
    mapped.close()


@pytest.mark.parametrize('name', ['', '.', '..', '../x', 'a/b', '/etc/passwd', 'a\x00b'])
def test_names_that_are_not_plain_are_refused(tmp_path, name):
    with pytest.raises(ProtocolError):
        xfer.take_confined(str(tmp_path), name, 1, 10)


def test_a_symlink_a_directory_a_wrong_size_or_too_much_is_refused(tmp_path):
    (tmp_path / 'target').write_bytes(b'secret')
    os.symlink(tmp_path / 'target', tmp_path / 'link')
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'short').write_bytes(b'abc')
    (tmp_path / 'big').write_bytes(b'abcdef')
    for name, size in (('link', 6), ('dir', 0), ('short', 4), ('big', 6), ('missing', 1)):
        with pytest.raises(ProtocolError):
            xfer.take_confined(str(tmp_path), name, size, 5)
    assert (tmp_path / 'target').read_bytes() == b'secret'       # never read through the link
    (tmp_path / 'ok').write_bytes(b'12345')
    assert xfer.take_confined(str(tmp_path), 'ok', 5, 5) == b'12345'
    assert not (tmp_path / 'ok').exists()


@pytest.mark.skipif(not os.path.isdir(xfer.SHM), reason='no /dev/shm')
def test_directories_of_dead_nodes_are_removed_and_live_ones_kept():
    mine = xfer.make_dir()
    assert mine and os.path.basename(mine).startswith(f'dispylike-xfer-{os.getpid()}-')
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True)
    dead = os.path.join(xfer.SHM, f'dispylike-xfer-{gone.stdout.strip()}-test')
    os.mkdir(dead, 0o700)
    open(os.path.join(dead, 'left.in'), 'wb').close()
    try:
        xfer.remove_stale()
        assert not os.path.exists(dead) and os.path.isdir(mine)
    finally:
        xfer.remove_dir(mine)
        xfer.remove_dir(dead)


@shm_only
def test_a_result_file_is_read_back_by_a_client_that_attaches_again():
    """A kept result the client was told about by path reaches a later connection
    (as recover_jobs would make) as bytes: the node reads it back on Attach."""
    kept = RetainedReplies(spill_dir='/nonexistent')
    path = os.path.join(xfer.make_dir(), 'r.out')
    try:
        xfer.put(path, b'the result')
        kept.add((1, 0, 11, 0.0, 0.0, path))
        kept.add((2, 0, 11, 0.0, 0.0, os.path.join(os.path.dirname(path), 'gone.out')))
        kept.inline()
        assert list(kept.entries()) == [(1, 0, 11, 0.0, 0.0, b'the result')]
        assert not os.path.exists(path) and kept.dropped == 1
        assert kept.memory_bytes == len(b'the result')
    finally:
        xfer.remove_dir(os.path.dirname(path))


def test_a_kept_result_file_is_checked_and_left_for_the_client(tmp_path):
    (tmp_path / 'r.out').write_bytes(b'12345')
    path = xfer.take_confined(str(tmp_path), 'r.out', 5, 5, keep=True)
    assert path == str(tmp_path / 'r.out') and os.path.exists(path)


@shm_only
def test_a_client_reaches_a_directory_only_with_its_token():
    directory = xfer.make_dir()
    try:
        token = xfer.token_of(directory)
        assert len(token) == 32
        assert xfer.reaches(directory, token)
        assert not xfer.reaches(directory, 'f' * 32)                  # another directory's
        assert not xfer.reaches(directory, '')
        assert not xfer.reaches(directory + '/../' + os.path.basename(directory), token)
        os.unlink(os.path.join(directory, xfer.TOKEN))               # a symlink to a copy
        with open(os.path.join(directory, 'copy'), 'w') as f:
            f.write(token)
        os.symlink(os.path.join(directory, 'copy'), os.path.join(directory, xfer.TOKEN))
        assert not xfer.reaches(directory, token)
    finally:
        xfer.remove_dir(directory)


def test_a_directory_outside_the_memory_file_system_is_never_reached(tmp_path):
    (tmp_path / xfer.TOKEN).write_text('a' * 32)
    assert not xfer.reaches(str(tmp_path), 'a' * 32)


def test_argument_files_are_adopted_only_if_plain_regular_and_not_too_large(tmp_path):
    d = str(tmp_path)
    (tmp_path / 'c1-0.in').write_bytes(b'x' * 10)
    assert xfer.adopt(d, 'c1-0.in', 10) == os.path.join(d, 'c1-0.in')
    (tmp_path / 'c2-0.in').write_bytes(b'x' * 11)
    with pytest.raises(ProtocolError, match='over the limit'):
        xfer.adopt(d, 'c2-0.in', 10)
    assert not (tmp_path / 'c2-0.in').exists()                     # removed
    (tmp_path / 'secret').write_bytes(b's')
    os.symlink(tmp_path / 'secret', tmp_path / 'c3-0.in')
    os.mkfifo(tmp_path / 'c4-0.in')                                 # would block a read
    for name in ('c3-0.in', 'c4-0.in', 'c5-0.in', 'x.in', 'c../x.in', '../c1-0.in', 'c1-0.out'):
        with pytest.raises(ProtocolError):
            xfer.adopt(d, name, 10)


@shm_only
def test_a_client_writes_large_arguments_into_a_directory_it_shares_and_reuses_the_files():
    directory = xfer.make_dir()
    try:
        shared = samehost.shared_dir(directory, xfer.token_of(directory))
        assert shared is not None and samehost.shared_dir(directory, 'f' * 32) is None
        big = SplitPayload((b'head', b'x' * xfer.XFER_MIN, b'tail'), xfer.XFER_MIN + 8)
        first = shared.arguments(7, 1, big)
        assert first.startswith(xfer.KEPT_ARGUMENTS)
        with open(os.path.join(directory, first), 'rb') as f:
            assert f.read() == big.join()
        assert shared.arguments(8, 1, b'small') == b'small'
        second = shared.arguments(9, 1, big)
        assert second != first                                   # the first is still busy
        shared.replied(7, 1)
        smaller = b'y' * xfer.XFER_MIN
        assert shared.arguments(10, 1, smaller) == first          # written again, shorter
        with open(os.path.join(directory, first), 'rb') as f:
            assert f.read() == smaller
        mapped = xfer.take_mapped(os.path.join(directory, first))  # a job process
        assert os.path.exists(os.path.join(directory, first))     # leaves a client's own
        mapped.close()
        xfer.remove_dir(directory)
        assert shared.arguments(11, 1, big) == big.join()        # gone: bytes then
    finally:
        xfer.remove_dir(directory)


@shm_only
def test_result_files_read_by_the_client_are_reused_up_to_a_bound(monkeypatch):
    monkeypatch.setattr(xfer, 'SPARE_FILES', 2)
    directory = xfer.make_dir()
    try:
        for i in range(3):
            xfer.put_reusing(directory, f'{i}.out', [b'r' * 10], 10)
        assert sorted(os.listdir(directory)) == ['.token', '0.out', '1.out', '2.out']
        for i in range(3):
            xfer.recycle(os.path.join(directory, f'{i}.out'))
        spares = [f for f in os.listdir(directory) if f.startswith(xfer.SPARE)]
        assert len(spares) == 2 and len(os.listdir(directory)) == 3     # the third removed
        xfer.put_reusing(directory, 'new.out', [b'ab', b'c'], 3)         # into a spare
        with open(os.path.join(directory, 'new.out'), 'rb') as f:
            assert f.read() == b'abc'
        assert len([f for f in os.listdir(directory) if f.startswith(xfer.SPARE)]) == 1
    finally:
        xfer.remove_dir(directory)


def test_a_client_reads_result_files_only_where_its_node_shares_them(tmp_path):
    d = str(tmp_path)
    shared = samehost.SharedDir(d)
    (tmp_path / 'r.out').write_bytes(pickle.dumps('result'))
    mapped = samehost.result(shared, os.path.join(d, 'r.out'))
    assert pickle.loads(mapped) == 'result'
    mapped.close()
    assert samehost.result(shared, b'bytes') == b'bytes'
    assert samehost.result(None, b'bytes') == b'bytes'
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'r.out').write_bytes(b'x')
    for path in (os.path.join(d, 'other', 'r.out'), '/etc/passwd', os.path.join(d, 'none')):
        with pytest.raises(ProtocolError):
            samehost.result(shared, path)
    with pytest.raises(ProtocolError):
        samehost.result(None, os.path.join(d, 'r.out'))              # not shared at all


def test_kept_replies_hold_result_paths_in_memory_and_hand_them_back_when_done(tmp_path):
    kept = RetainedReplies(str(tmp_path / 'spill'), memory_cap=0, disk_cap=0)
    done = []
    kept.file_done = done.append
    kept.add((1, 0, 11, 0.0, 0.0, '/x/1.out'))      # over both caps as bytes: kept anyway
    kept.add((2, 0, 11, 0.0, 0.0, '/x/2.out'))
    assert [e[5] for e in kept.entries()] == ['/x/1.out', '/x/2.out'] and kept.dropped == 0
    assert not (tmp_path / 'spill').exists()
    kept.discard((1, 0))                             # acknowledged
    assert done == ['/x/1.out']
    kept.clear()                                     # the computation closed
    assert done == ['/x/1.out', '/x/2.out'] and len(kept) == 0
