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

A client on the same host (same memory file system, allowed into the directory:
the node's user or root) skips the socket too.  The node names its directory
and a random token kept in it when the computation is ready; a client that reads
that token there writes large arguments into the directory itself (``c*.in``,
:func:`adopt` checks them on the node) and reads large results where the job
left them (:func:`map_result`); the node removes a result once the client has
acknowledged it.  Measured in issue 8's W3: 20 MB each way costs the client one
copy instead of a pickle copy plus a socket, and the node nothing.

Files are reused: memory a file system in memory hands out must be zeroed and
mapped page by page, and given back page by page (here 10.5 ms to write 20 MB
into a new file, 3 ms to remove it; 5 ms to write it into one that exists,
mapped).  A result file acknowledged by the client becomes a spare
(``free-*.out``, :func:`recycle`) that the next large result is written into
(:func:`put_reusing`); a client keeps its argument files (``cp*.in``, which a
job process leaves in place) for its next large arguments.  At most
SPARE_FILES spares of SPARE_BYTES in all are kept; the rest are removed.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ..errors import ProtocolError

if TYPE_CHECKING:
    import mmap

#: Arguments and results at least this large go by file.
XFER_MIN = 1 << 20
SHM = '/dev/shm'
_IOV_MAX = 512
_PREFIX = 'dispylike-xfer-'
TOKEN = '.token'          # in each directory: proves a client sees the same one
SPARE = 'free-'           # a result file kept for reuse
KEPT_ARGUMENTS = 'cp'     # a client's argument file, reused by that client
#: Spare files kept per directory (results) or per client and node (arguments).
SPARE_FILES = 8
SPARE_BYTES = 256 << 20


def make_dir() -> str:
    """A new private transfer directory ('' where there is no memory file system)."""
    if not (os.path.isdir(SHM) and os.access(SHM, os.W_OK | os.X_OK)):
        return ''
    try:
        import tempfile  # here: the computation process (forked per job) never needs it
        path = tempfile.mkdtemp(prefix=f'{_PREFIX}{os.getpid()}-', dir=SHM)
        put(os.path.join(path, TOKEN), os.urandom(16).hex().encode())
        return path
    except OSError:
        return ''


def token_of(directory: str) -> str:
    """The token a transfer directory holds ('' if none)."""
    try:
        with open(os.path.join(directory, TOKEN), 'rb') as f:
            return f.read(64).decode('ascii', 'replace')
    except OSError:
        return ''


def reaches(directory: str, token: str) -> bool:
    """True if ``directory`` (named by a node) is a transfer directory on this host's
    memory file system that this process may write into, holding ``token``."""
    import hmac
    if (not token or os.path.dirname(directory) != SHM
            or not os.path.basename(directory).startswith(_PREFIX)):
        return False
    try:
        info = os.lstat(directory)
        fd = os.open(os.path.join(directory, TOKEN), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        seen = os.read(fd, 64)
    finally:
        os.close(fd)
    return (stat.S_ISDIR(info.st_mode) and os.access(directory, os.W_OK | os.X_OK)
            and hmac.compare_digest(seen, token.encode('ascii', 'replace')))


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
    not copied), and removed unless a client keeps it (``cp*``).  For a pickle:
    ``pickle.loads`` reads the mapping, so a large argument is copied once, into
    the object it becomes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not os.path.basename(path).startswith(KEPT_ARGUMENTS):
            os.unlink(path)
        return _map_private(fd)
    finally:
        os.close(fd)


def overwrite(path: str, parts: list, size: int) -> None:
    """Write the consecutive buffers ``parts`` (``size`` bytes) as the whole content of
    the file ``path``, created if missing: through a shared mapping, so the pages a
    reused file already has are copied into, not allocated again."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f'{path} is not a regular file')
        os.ftruncate(fd, size)
        if size:
            mmap = mmap_module()
            with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _populate(mmap),
                           prot=mmap.PROT_READ | mmap.PROT_WRITE) as mapped:
                offset = 0
                for part in parts:
                    mapped[offset:offset + len(part)] = part
                    offset += len(part)
    finally:
        os.close(fd)


def put_reusing(directory: str, name: str, parts: list, size: int) -> None:
    """Write a result file ``name`` in ``directory``: into a spare if there is one (it
    is renamed: atomic, so two writers never take the same), else a new file."""
    for spare in _spares(directory):
        try:
            os.rename(os.path.join(directory, spare), os.path.join(directory, name))
        except OSError:
            continue             # another job process took it
        overwrite(os.path.join(directory, name), parts, size)
        return
    put(os.path.join(directory, name), parts)


def recycle(path: str) -> None:
    """A result file read by its client: kept as a spare for the next result (while
    the directory holds fewer than SPARE_FILES of SPARE_BYTES), else removed."""
    directory = os.path.dirname(path)
    try:
        spares = _spares(directory)
        size = os.stat(path, follow_symlinks=False).st_size
        held = sum(os.stat(os.path.join(directory, f)).st_size for f in spares)
        if len(spares) < SPARE_FILES and held + size <= SPARE_BYTES:
            os.rename(path, os.path.join(directory, f'{SPARE}{os.urandom(6).hex()}.out'))
            return
    except OSError:
        pass
    discard(path)


def _spares(directory: str) -> list[str]:
    try:
        return [f for f in os.listdir(directory) if f.startswith(SPARE)]
    except OSError:
        return []


def take_confined(directory: str, name: str, size: int, limit: int,
                  keep: bool = False) -> bytes | str:
    """What a job process left as file ``name`` in ``directory``: a plain name, a
    regular file of ``size`` bytes (at most ``limit``), read and removed - or with
    ``keep``, left for a client on this host: its path.  ProtocolError for anything
    else (the name comes from a process running user code)."""
    if size > limit:
        raise ProtocolError(f'transfer file of {size} bytes over the limit of {limit}')
    path, fd = _open_confined(directory, name)
    try:
        if os.fstat(fd).st_size != size:
            os.unlink(path)
            raise ProtocolError(f'transfer file {name!r} is not what was announced')
        if keep:
            return path
        os.unlink(path)
        return _read_all(fd, size)
    finally:
        os.close(fd)


def adopt(directory: str, name: str, limit: int) -> str:
    """The path of an argument file a client on this host wrote (``c*.in``, a regular
    file of at most ``limit`` bytes) for the job process to read.  ProtocolError
    (with the file removed, if it was one) for anything else."""
    if not (name.startswith('c') and name.endswith('.in')):
        raise ProtocolError(f'bad argument file name {name!r}')
    path, fd = _open_confined(directory, name)
    try:
        if os.fstat(fd).st_size > limit:
            os.unlink(path)
            raise ProtocolError(f'argument file {name!r} over the limit of {limit} bytes')
    finally:
        os.close(fd)
    return path


def _open_confined(directory: str, name: str) -> tuple[str, int]:
    """(path, descriptor) of the regular file ``name`` directly in ``directory``."""
    if not directory or not name or '/' in name or name in ('.', '..') or '\x00' in name:
        raise ProtocolError(f'bad transfer file name {name!r}')
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ProtocolError(f'transfer file {name!r}: {exc.strerror}') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ProtocolError(f'transfer file {name!r} is not a regular file')
    return path, fd


def map_result(directory: str, path: str) -> mmap.mmap | bytes:
    """A result a node on this host left at ``path`` in its transfer ``directory``,
    mapped read-only (the node removes it once the client has acknowledged it).
    ProtocolError if ``path`` is anything else."""
    if os.path.dirname(path) != directory:
        raise ProtocolError(f'result file {path!r} outside the node\'s transfer directory')
    _path, fd = _open_confined(directory, os.path.basename(path))
    try:
        if not os.fstat(fd).st_size:
            return b''
        return _map_private(fd)
    finally:
        os.close(fd)


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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


def mmap_module():
    """The ``mmap`` module, imported on first use: the computation process imports
    it only once transfer files are in use, as every module it holds (and the
    mappings of its shared library) is copied into each job process it forks."""
    import mmap
    return mmap


def _map_private(fd: int) -> mmap.mmap:
    mmap = mmap_module()
    return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | _populate(mmap), prot=mmap.PROT_READ)


def _populate(mmap) -> int:
    return getattr(mmap, 'MAP_POPULATE', 0)   # map every page at once (Linux)
