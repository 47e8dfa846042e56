"""Large job arguments and results travel between the node and the job process as
files in a private directory in memory (``/dev/shm``), not through the
computation process.

Through the computation process a 20 MB argument is copied into a message, sent
over a socket, decoded, and written again into a pipe that holds 1 MiB at a
time; a result likewise back.  As a file in memory it is written once and read
once (measured: a third of the CPU the pipe took, and no work at all for the
computation process).  Who reads a file removes it; the node removes the
directory with the computation, and at start-up removes directories that nodes
no longer alive left behind.  Without a writable ``/dev/shm`` everything goes
through the computation process as before.
"""

from __future__ import annotations

import mmap
import os
import stat

from ..errors import ProtocolError

#: Arguments and results at least this large go by file.
XFER_MIN = 1 << 20
SHM = '/dev/shm'
_IOV_MAX = 512
_POPULATE = getattr(mmap, 'MAP_POPULATE', 0)   # map every page at once (Linux)
_PREFIX = 'dispylike-xfer-'


def make_dir() -> str:
    """A new private transfer directory ('' where there is no memory file system)."""
    if not (os.path.isdir(SHM) and os.access(SHM, os.W_OK | os.X_OK)):
        return ''
    try:
        import tempfile  # here: the computation process (forked per job) never needs it
        return tempfile.mkdtemp(prefix=f'{_PREFIX}{os.getpid()}-', dir=SHM)
    except OSError:
        return ''


def remove_dir(path: str) -> None:
    if path:
        import shutil
        shutil.rmtree(path, ignore_errors=True)


def remove_stale() -> None:
    """Remove transfer directories whose node process is gone (it was killed)."""
    try:
        names = os.listdir(SHM)
    except OSError:
        return
    uid = os.getuid()
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split('-', 1)[0]
        path = os.path.join(SHM, name)
        try:
            if not pid.isdigit() or os.lstat(path).st_uid != uid or _alive(int(pid)):
                continue
        except OSError:
            continue
        import shutil
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def put(path: str, data: bytes | memoryview | list) -> None:
    """Write ``data`` (or the consecutive buffers of a list: a pickle as
    ``messages.Pieces`` collected it) to a new file ``path`` (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        views = [memoryview(part).cast('B') for part in
                 (data if isinstance(data, list) else [data]) if len(part)]
        while views:
            done = os.writev(fd, views[:_IOV_MAX])
            while views and done >= len(views[0]):
                done -= len(views.pop(0))
            if done:
                views[0] = views[0][done:]
    finally:
        os.close(fd)


def take(path: str) -> bytes:
    """Read the file ``path`` and remove it (one read: it is in memory)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.unlink(path)
        return _read_all(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def take_mapped(path: str) -> mmap.mmap:
    """The file ``path`` mapped read-only (its pages are already in memory: mapped,
    not copied), and removed.  For a pickle: ``pickle.loads`` reads the mapping, so
    a large argument is copied once, into the object it becomes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.unlink(path)
        return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | _POPULATE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def take_confined(directory: str, name: str, size: int, limit: int) -> bytes:
    """What a job process left as file ``name`` in ``directory``: a plain name, a
    regular file of ``size`` bytes (at most ``limit``), read and removed.
    ProtocolError for anything else (the name comes from a process running user
    code)."""
    if not directory or not name or '/' in name or name in ('.', '..') or '\x00' in name:
        raise ProtocolError(f'bad transfer file name {name!r}')
    if size > limit:
        raise ProtocolError(f'transfer file of {size} bytes over the limit of {limit}')
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ProtocolError(f'transfer file {name!r}: {exc.strerror}') from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ProtocolError(f'transfer file {name!r} is not a regular file')
        os.unlink(path)
        if info.st_size != size:
            raise ProtocolError(f'transfer file {name!r} is not what was announced')
        return _read_all(fd, size)
    finally:
        os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size)   # a file in memory gives all of it at once ...
    if len(data) < size:       # ... but a read may still stop short
        parts = [data]
        got = len(data)
        while got < size:
            part = os.read(fd, size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        data = b''.join(parts)
    return data
