"""Peer-supplied file names stay inside their directory."""

import os
import stat

import pytest

from dispylike.driver.management import save_job_file
from dispylike.execution.staging import (
    FileBudget,
    FileSink,
    StagingError,
    check_relpath,
    confined_path,
    make_confined_dir,
)


@pytest.mark.parametrize('bad', ['', '/etc/passwd', '../x', 'a/../../x', 'a//b', './a', 'a\x00b',
                                 'a\\b', 'a/.'])
def test_bad_relpaths_refused(bad):
    with pytest.raises(StagingError):
        check_relpath(bad)


def test_good_relpaths():
    assert check_relpath('a/b/c.txt') == 'a/b/c.txt'
    assert check_relpath('file..name') == 'file..name'


def test_symlink_escape_refused(tmp_path):
    base = tmp_path / 'base'
    base.mkdir()
    outside = tmp_path / 'outside'
    outside.mkdir()
    os.symlink(outside, base / 'link')
    with pytest.raises(StagingError, match='outside'):
        confined_path(str(base), 'link/x')
    os.symlink('/dev/null', base / 'dev')
    with pytest.raises(StagingError):
        confined_path(str(base), 'dev')


def test_file_sink_writes_atomically_and_checks_offsets(tmp_path):
    sink = FileSink(str(tmp_path), 'd/f.bin')
    sink.write(0, b'abc')
    assert not (tmp_path / 'd' / 'f.bin').exists()   # invisible until complete
    with pytest.raises(StagingError, match='offset'):
        sink.write(10, b'x')
    sink.write(3, b'def')
    sink.finish(0o755)
    assert (tmp_path / 'd' / 'f.bin').read_bytes() == b'abcdef'
    assert os.access(tmp_path / 'd' / 'f.bin', os.X_OK)


def test_file_sink_size_cap(tmp_path):
    sink = FileSink(str(tmp_path), 'big', max_size=5)
    sink.write(0, b'12345')
    with pytest.raises(StagingError, match='limit'):
        sink.write(5, b'6')
    assert os.listdir(tmp_path) == []


# --- hostile destinations: every refusal leaves nothing behind, inside or outside ------

@pytest.fixture
def base_and_outside(tmp_path):
    base, outside = tmp_path / 'base', tmp_path / 'outside'
    base.mkdir()
    outside.mkdir()
    (outside / 'victim').write_bytes(b'original')
    return base, outside


def _refused(base, relpath, match=None):
    with pytest.raises(StagingError, match=match):
        FileSink(str(base), relpath)


@pytest.mark.parametrize('relpath', ['/etc/passwd', '../outside/victim', 'a/../../outside/victim',
                                     '/dev/null'])
def test_file_sink_refuses_absolute_and_dotdot(base_and_outside, relpath):
    base, outside = base_and_outside
    _refused(base, relpath)
    assert (outside / 'victim').read_bytes() == b'original'
    assert os.listdir(base) == []


def test_file_sink_refuses_symlinked_directory(base_and_outside):
    base, outside = base_and_outside
    os.symlink(outside, base / 'link')
    _refused(base, 'link/victim', 'not a directory of its own')
    _refused(base, 'link/new-file', 'not a directory of its own')
    assert sorted(os.listdir(outside)) == ['victim']
    assert (outside / 'victim').read_bytes() == b'original'


def test_file_sink_never_writes_through_a_symlinked_file(base_and_outside):
    base, outside = base_and_outside
    os.symlink(outside / 'victim', base / 'f')
    _refused(base, 'f', 'non-regular')
    assert (outside / 'victim').read_bytes() == b'original'
    assert os.path.islink(base / 'f')


def test_file_sink_symlink_planted_between_chunks_is_replaced_not_followed(base_and_outside):
    base, outside = base_and_outside
    sink = FileSink(str(base), 'f')
    sink.write(0, b'new')
    os.symlink(outside / 'victim', base / 'f')     # planted while the file is in transfer
    sink.finish(0o644)
    assert not os.path.islink(base / 'f') and (base / 'f').read_bytes() == b'new'
    assert (outside / 'victim').read_bytes() == b'original'


def test_file_sink_refuses_devices_fifos_and_directories(tmp_path):
    os.mkfifo(tmp_path / 'fifo')                   # opening it for writing would block
    os.symlink('/dev/null', tmp_path / 'null')
    (tmp_path / 'dir').mkdir()
    for name in ('fifo', 'null', 'dir'):
        _refused(tmp_path, name, 'non-regular')
    _refused(tmp_path, 'fifo/x', 'not a directory')
    try:
        os.mknod(tmp_path / 'chardev', 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        return                                     # no CAP_MKNOD here: the FIFO case stands
    _refused(tmp_path, 'chardev', 'non-regular')


def test_file_sink_leaves_no_temporary_file_when_aborted(tmp_path):
    sink = FileSink(str(tmp_path), 'd/f')
    sink.write(0, b'x')
    sink.abort()
    sink.abort()                                   # idempotent
    assert os.listdir(tmp_path / 'd') == []


def test_make_confined_dir_refuses_symlinked_components(base_and_outside):
    base, outside = base_and_outside
    assert make_confined_dir(str(base), 'a/b') == os.path.join(str(base), 'a', 'b')
    assert (base / 'a' / 'b').is_dir()
    os.symlink(outside, base / 'link')
    with pytest.raises(StagingError):
        make_confined_dir(str(base), 'link/c')
    assert sorted(os.listdir(outside)) == ['victim']


# --- the per-computation budget ------------------------------------------------------

def test_budget_caps_file_count_and_refunds_aborted_files(tmp_path):
    budget = FileBudget(max_files=2)
    for name in ('a', 'b'):
        sink = FileSink(str(tmp_path), name, budget=budget)
        sink.write(0, b'1')
        sink.finish(0o644)
    with pytest.raises(StagingError, match='stored 2 files'):
        FileSink(str(tmp_path), 'c', budget=budget)
    budget2 = FileBudget(max_files=1)
    FileSink(str(tmp_path), 'd', budget=budget2).abort()   # refunded
    FileSink(str(tmp_path), 'd', budget=budget2).finish(0o644)
    assert budget2.files == 1 and budget2.open == 0


def test_budget_caps_total_bytes_across_files(tmp_path):
    budget = FileBudget(max_bytes=10)
    first = FileSink(str(tmp_path), 'a', budget=budget)
    first.write(0, b'x' * 6)
    first.finish(0o644)
    second = FileSink(str(tmp_path), 'b', budget=budget)
    with pytest.raises(StagingError, match='10 bytes in all'):
        second.write(0, b'y' * 5)
    assert sorted(os.listdir(tmp_path)) == ['a']   # the refused file is gone
    assert (budget.files, budget.bytes, budget.open) == (1, 6, 0)


def test_budget_caps_files_in_transfer_at_once(tmp_path):
    budget = FileBudget(max_open=2)
    sinks = [FileSink(str(tmp_path), name, budget=budget) for name in ('a', 'b')]
    with pytest.raises(StagingError, match='in transfer'):
        FileSink(str(tmp_path), 'c', budget=budget)
    sinks[0].finish(0o644)
    FileSink(str(tmp_path), 'c', budget=budget).abort()


# --- the client's side: files a node sends from jobs (dispy_send_file) --------------

@pytest.mark.parametrize('relpath', ['/tmp/abs', '../up', 'a/../../up', 'link/x', 'flink',
                                     'fifo', ''])
def test_client_refuses_hostile_job_file_names(base_and_outside, monkeypatch, caplog, relpath):
    base, outside = base_and_outside
    os.symlink(outside, base / 'link')
    os.symlink(outside / 'victim', base / 'flink')
    os.mkfifo(base / 'fifo')
    monkeypatch.chdir(base)
    save_job_file(relpath, b'evil', 'node1')
    assert 'refused file' in caplog.text
    assert sorted(os.listdir(base)) == ['fifo', 'flink', 'link']
    assert sorted(os.listdir(outside)) == ['victim']
    assert (outside / 'victim').read_bytes() == b'original'


def test_client_saves_a_good_job_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_job_file('out/r.bin', b'ok', 'node1')
    assert (tmp_path / 'out' / 'r.bin').read_bytes() == b'ok'
