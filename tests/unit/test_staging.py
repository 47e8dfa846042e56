"""Peer-supplied file names stay inside their directory."""

import os

import pytest

from dispylike.execution.staging import FileSink, StagingError, check_relpath, confined_path


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
