"""Transfer files: written once, read once and removed, names confined, stale directories
of dead nodes removed."""

import os
import pickle
import subprocess
import sys

import pytest

from dispylike.errors import ProtocolError
from dispylike.execution import xfer
from dispylike.protocol.messages import Pieces


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
