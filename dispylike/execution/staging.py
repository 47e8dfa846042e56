"""File names from peers, confined to a directory.  Pure path logic plus safe writes.

A peer names files by relative path.  Absolute paths, ``..`` components, NUL
bytes and empty names are refused with :class:`StagingError`; so are paths
that lead outside the base directory through a symlink and existing targets
that are not regular files (devices, FIFOs, sockets, directories, links).

:class:`FileSink` writes without a window for a planted symlink: it walks the
directories from an open descriptor of the base, one component at a time with
``O_NOFOLLOW``, creates its temporary file there with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` (never an existing file, so never a device or a FIFO) and renames
it into place in the same directory (a rename replaces a name, it never writes
through it).  :class:`FileBudget` caps what one computation may store.
"""

from __future__ import annotations

import os
import posixpath
import stat

from ..errors import DispyError

#: Files of one computation being received at the same time, at most (each holds two
#: descriptors until it is complete; the client sends one at a time).
MAX_OPEN_FILES = 8
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


class FileBudget:
    """What one computation may store on this host: files and bytes received from its
    peer (0 = no limit), and files in transfer at once.  Aborted files are refunded."""

    def __init__(self, max_files: int = 0, max_bytes: int = 0,
                 max_open: int = MAX_OPEN_FILES) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_open = max_open
        self.files = 0
        self.bytes = 0
        self.open = 0

    def start(self, relpath: str) -> None:
        if self.max_open and self.open >= self.max_open:
            raise StagingError(f'{relpath}: more than {self.max_open} files in transfer at once')
        if self.max_files and self.files >= self.max_files:
            raise StagingError(f'{relpath}: the computation has stored {self.files} files, '
                               f'the limit of this host')
        self.files += 1
        self.open += 1

    def charge(self, relpath: str, size: int) -> None:
        if self.max_bytes and self.bytes + size > self.max_bytes:
            raise StagingError(f'{relpath}: the computation\'s files would exceed the limit '
                               f'of {self.max_bytes} bytes in all on this host')
        self.bytes += size

    def end(self, kept: bool, size: int) -> None:
        self.open -= 1
        if not kept:
            self.files -= 1
            self.bytes -= size


def make_confined_dir(base: str, relpath: str, mode: int = 0o755) -> str:
    """Make the directory ``base/relpath`` (and those above it) where every component
    is a real directory, not a symlink; return its path."""
    parts = check_relpath(relpath).split('/')
    os.close(_open_parent(base, parts, relpath, mode))
    return os.path.join(base, *parts)


def _open_parent(base: str, parts: list[str], relpath: str, mode: int = 0o755) -> int:
    """A descriptor of ``base/parts...``, each directory made if missing and none of
    them a symlink (checked by the kernel, so nothing can be swapped in between)."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for name in parts:
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:   # ELOOP: a symlink; ENOTDIR: a file or a device
                raise StagingError(f'refused path {relpath!r}: {name!r} is not a directory '
                                   f'of its own ({exc.strerror})') from None
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileSink:
    """Receives one file in chunks (offset-checked, size-capped) into a confined path.

    Data goes to a temporary name and is renamed into place when complete, so a
    half-sent file is never visible under its real name.  With a ``budget`` the
    file counts against its computation's limits.
    """

    def __init__(self, base: str, relpath: str, max_size: int = 0,
                 budget: FileBudget | None = None) -> None:
        parts = check_relpath(relpath).split('/')
        base = os.path.realpath(base)
        self.path = os.path.join(base, *parts)
        self.relpath = relpath
        self.max_size = max_size
        self.size = 0
        self._name = parts[-1]
        self._budget = budget
        if budget is not None:
            budget.start(relpath)
        self._fd: int | None = None
        self._dir: int | None = None
        try:
            self._dir = _open_parent(base, parts[:-1], relpath)
            self._refuse_special(relpath)
            self._tmp = f'.dispylike-part-{os.urandom(8).hex()}'
            self._fd = os.open(self._tmp, _NEW_FILE_FLAGS, 0o600, dir_fd=self._dir)
        except BaseException:
            self._release(kept=False)
            raise

    def _refuse_special(self, relpath: str) -> None:
        try:
            mode = os.stat(self._name, dir_fd=self._dir, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise StagingError(f'refused path {relpath!r}: existing non-regular file')

    def write(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            raise StagingError(f'{self.path}: file already complete')
        if offset != self.size:
            raise StagingError(f'{self.path}: chunk at offset {offset}, expected {self.size}')
        if self.max_size and self.size + len(data) > self.max_size:
            self.abort()
            raise StagingError(f'{os.path.basename(self.path)}: larger than the limit of '
                               f'{self.max_size} bytes')
        if self._budget is not None:
            try:
                self._budget.charge(self.relpath, len(data))
            except StagingError:
                self.abort()
                raise
        self.size += len(data)   # charged: refunded by abort if the write fails
        os.write(self._fd, data)

    def finish(self, mode: int) -> None:
        if self._fd is None:
            raise StagingError(f'{self.path}: file already complete')
        try:
            os.fchmod(self._fd, (mode & 0o755) | 0o600)
            os.close(self._fd)
            self._fd = None
            os.replace(self._tmp, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        except BaseException:
            self.abort()
            raise
        self._release(kept=True)

    def abort(self) -> None:
        """Drop the partial file (idempotent)."""
        if self._dir is None:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._tmp, dir_fd=self._dir)
        except FileNotFoundError:
            pass
        self._release(kept=False)

    def _release(self, kept: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None
        if self._budget is not None:
            self._budget.end(kept, self.size)
            self._budget = None
