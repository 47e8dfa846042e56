"""File names from peers, confined to a directory.  Pure path logic plus safe writes.

A peer names files by relative path.  Absolute paths, ``..`` components, NUL
bytes, empty names and paths that resolve (through symlinks) outside the base
directory are refused with :class:`StagingError`.
"""

from __future__ import annotations

import os
import posixpath
import stat

from ..errors import DispyError


class StagingError(DispyError, ValueError):
    """A peer-supplied path or file was refused."""


def check_relpath(relpath: str) -> str:
    """Validate a peer-supplied relative path; return it normalised (POSIX separators)."""
    if not relpath or '\x00' in relpath or '\\' in relpath:
        raise StagingError(f'refused file name {relpath!r}')
    if relpath.startswith('/') or posixpath.isabs(relpath):
        raise StagingError(f'refused absolute path {relpath!r}')
    parts = relpath.split('/')
    if any(part in ('', '.', '..') for part in parts):
        raise StagingError(f'refused path {relpath!r}: empty, "." or ".." component')
    return '/'.join(parts)


def confined_path(base: str, relpath: str) -> str:
    """The real path of ``relpath`` under ``base``; refuses escapes via symlinks."""
    rel = check_relpath(relpath)
    base_real = os.path.realpath(base)
    target = os.path.realpath(os.path.join(base_real, *rel.split('/')))
    if os.path.commonpath([base_real, target]) != base_real or target == base_real:
        raise StagingError(f'refused path {relpath!r}: it leads outside {base}')
    if os.path.lexists(target):
        mode = os.lstat(target).st_mode
        if not (stat.S_ISREG(mode)):
            raise StagingError(f'refused path {relpath!r}: existing non-regular file')
    return target


class FileSink:
    """Receives one file in chunks (offset-checked, size-capped) into a confined path.

    Data goes to a temporary name and is renamed into place when complete, so a
    half-sent file is never visible under its real name.
    """

    def __init__(self, base: str, relpath: str, max_size: int = 0) -> None:
        self.path = confined_path(base, relpath)
        self.max_size = max_size
        self.size = 0
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._tmp = f'{self.path}.part{os.getpid()}'
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            raise StagingError(f'{self.path}: file already complete')
        if offset != self.size:
            raise StagingError(f'{self.path}: chunk at offset {offset}, expected {self.size}')
        if self.max_size and self.size + len(data) > self.max_size:
            self.abort()
            raise StagingError(f'{os.path.basename(self.path)}: larger than the limit of '
                               f'{self.max_size} bytes')
        os.write(self._fd, data)
        self.size += len(data)

    def finish(self, mode: int) -> None:
        if self._fd is None:
            raise StagingError(f'{self.path}: file already complete')
        os.close(self._fd)
        self._fd = None
        os.chmod(self._tmp, (mode & 0o755) | 0o600)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
