"""The recover file: an append-only journal a client can be recovered from.

A :class:`JobCluster` appends to it as it works; after the client process is
killed at any instant, a new process folds it back (:func:`read_journal`) into
the jobs that were submitted but not finished, the node each one was last sent
to, and their arguments, so it can ask those nodes for the results.

Layout (all integers big-endian)::

    file   := FILE_HEADER record*
    FILE_HEADER (9 B):
        +--------------+---------+
        | b'DLKRECOV'  | version |
        |     8 B      |   u8    |
        +--------------+---------+
    record (9 B header + payload):
        +--------+------+-----------------------+-------------+
        | length | kind | crc32(kind + payload) | payload ... |
        |  u32   |  u8  |          u32          |  length B   |
        +--------+------+-----------------------+-------------+
    payload := pickle.dumps(tuple_of_fields, protocol=5)

    kind      fields
    CLUSTER   (meta: dict,)            metadata; never a 'secret' key
    NODE      (key, host, port, name)  key is 'host:port'
    SUBMIT    (uid, job_id, args_blob) args_blob: opaque bytes, b'' if over 1 MiB
    DISPATCH  (uid, node_key, attempt) the latest one of a uid wins
    DONE      (uid,)                   final on the client: nothing to recover
    CLOSED    ()                       the cluster was closed cleanly
    JOB_ID    (uid, job_id)            the program set job.id after submitting

Crash safety: a killed writer leaves at most one partial record at the end,
and reading stops at the first record that is truncated or fails its
checksum; those bytes are reported as ``torn_bytes``, never as an error.
Appends go to an in-memory buffer (no system call per record); the owner calls
:meth:`RecoverJournal.flush` periodically (group commit) and at close, so a
crash loses at most the records since the last flush.  Large arguments are
not copied on the way: their bytes object is kept as one of the buffers that
:meth:`RecoverJournal.flush` hands to one ``writev``.

Why pickle is acceptable here: the file is created mode 0600 by the user's own
program and is only ever read back by that same user, who could run any code
anyway; it never crosses the network.  A record whose checksum is valid but
whose fields are malformed is not a torn tail but a bug or a foreign file, so
it raises :class:`RecoverFileError`; so a ``job_id`` must be an object plain
pickle can load in the recovering process (builtins, or importable classes).

The writer is not thread-safe: make all calls from one thread (the client's
event-loop thread) or serialise them.
"""

from __future__ import annotations

import enum
import os
import pickle
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

from ..errors import DispyError

MAGIC = b'DLKRECOV'
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct('!8sB')
RECORD_HEADER = struct.Struct('!IBI')
RECOVER_PREFIX = '_dispy_'
PICKLE_PROTOCOL = 5

#: Keys refused in CLUSTER metadata so the shared secret is never stored in clear.
_FORBIDDEN_META_KEYS = frozenset({'secret'})


class RecoverFileError(DispyError):
    """The recover file is missing, not a recover file, malformed, or misused."""


class RecordKind(enum.IntEnum):
    """The kind byte of a record.  Zero is never used, so zero-filled garbage fails."""

    CLUSTER = 1
    NODE = 2
    SUBMIT = 3
    DISPATCH = 4
    DONE = 5
    CLOSED = 6
    JOB_ID = 7


# crc32 of each possible kind byte alone; continued over the payload it equals
# crc32(kind + payload) without concatenating.
_KIND_SEED = tuple(zlib.crc32(bytes([kind])) for kind in range(256))


#: SUBMIT records with arguments at least this large keep the caller's bytes object as
#: one of the buffers to write instead of copying it (twice) into the buffer.
BIG_ARGS = 64 * 1024
#: Arguments larger than this are not kept (their SUBMIT record holds b''): the file
#: exists to fetch results, and writing every 20 MB argument to disk was the largest
#: cost of a client sending bulk data (bench W3: -45% MB/s).  dispy keeps none.
KEEP_ARGS_MAX = 1 << 20
_IOV_MAX = 512   # buffers per writev (Linux allows 1024)

# Hot-path aliases (the writer appends hundreds of thousands of records).
_dumps = pickle.dumps
_crc32 = zlib.crc32
_pack_header = RECORD_HEADER.pack
_CLUSTER = int(RecordKind.CLUSTER)
_NODE = int(RecordKind.NODE)
_SUBMIT = int(RecordKind.SUBMIT)
_DISPATCH = int(RecordKind.DISPATCH)
_DONE = int(RecordKind.DONE)
_CLOSED = int(RecordKind.CLOSED)
_JOB_ID = int(RecordKind.JOB_ID)


def encode_record(kind: RecordKind, fields: tuple[Any, ...]) -> bytes:
    """One record's bytes: header + pickled fields.  Low level; prefer RecoverJournal."""
    payload = pickle.dumps(fields, protocol=PICKLE_PROTOCOL)
    crc = zlib.crc32(payload, _KIND_SEED[kind])
    return RECORD_HEADER.pack(len(payload), kind, crc) + payload


def default_recover_path(now: float | None = None, directory: str = '.') -> str:
    """``directory/_dispy_YYYYMMDDHHMMSS`` for ``now`` (default: the current time), local time."""
    stamp = time.strftime('%Y%m%d%H%M%S', time.localtime(now))
    return os.path.join(directory, RECOVER_PREFIX + stamp)


def latest_recover_file(directory: str = '.') -> str:
    """The path of the newest ``_dispy_*`` regular file in ``directory`` (by name order)."""
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries
                     if e.name.startswith(RECOVER_PREFIX) and e.is_file()]
    except OSError as exc:
        raise RecoverFileError(f'cannot list {directory!r} for recover files: {exc}') from exc
    if not names:
        raise RecoverFileError(
            f'no recover file ({RECOVER_PREFIX}*) in {os.path.abspath(directory)!r}')
    return os.path.join(directory, max(names))


# ---------------------------------------------------------------------------- writer


class RecoverJournal:
    """Append-only writer of a recover file.  Create it with :meth:`create`.

    The record methods only append to an in-memory buffer; :meth:`flush` writes
    the buffer (and by default fsyncs).  OS errors from writing propagate as
    ``OSError``; bytes not yet written stay buffered, so a later flush does not
    leave a hole in the file.
    """

    __slots__ = ('_buf', '_chunks', '_closed', '_fd', '_pending', '_path', '_removed')

    # The argument checks below mirror the reader's: a record the reader would
    # refuse must fail here, where the bug is, not at recovery time.

    def __init__(self, fd: int, path: str) -> None:
        """Wrap an open, already-headed file descriptor; use :meth:`create` instead."""
        self._fd = fd
        self._path = path
        self._buf = bytearray()        # small records not yet written ...
        self._chunks: list = []        # ... after these buffers (large records), in order
        self._pending = 0              # bytes in _chunks
        self._closed = False
        self._removed = False

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> RecoverJournal:
        """Create a new recover file at ``path`` (mode 0600) and write its header.

        Refuses to overwrite an existing file (RecoverFileError).
        """
        path = os.fspath(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise RecoverFileError(
                f'recover file {path!r} already exists; refusing to overwrite it '
                f'(recover from it, remove it, or choose another name)') from exc
        except OSError as exc:
            raise RecoverFileError(f'cannot create recover file {path!r}: {exc}') from exc
        try:
            _write_all(fd, FILE_HEADER.pack(MAGIC, FORMAT_VERSION))
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            raise RecoverFileError(f'cannot write recover file {path!r}: {exc}') from exc
        return cls(fd, path)

    @property
    def path(self) -> str:
        return self._path

    @property
    def pending_bytes(self) -> int:
        """Bytes appended but not yet written to the file."""
        return self._pending + len(self._buf)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has run (not to be confused with :meth:`closed`)."""
        return self._closed

    # -- records (hot path: no system calls) --

    def _append(self, kind: int, fields: tuple[Any, ...]) -> None:
        # ~0.6 us a record: module-level aliases and plain-int kinds keep it lean.
        if self._closed:
            raise RecoverFileError(f'recover file {self._path!r} is closed')
        payload = _dumps(fields, PICKLE_PROTOCOL)
        buf = self._buf
        buf += _pack_header(len(payload), kind, _crc32(payload, _KIND_SEED[kind]))
        buf += payload

    def cluster(self, meta: dict[str, Any]) -> None:
        """Record the cluster's metadata (an opaque dict; a 'secret' key is refused)."""
        if not isinstance(meta, dict):
            raise TypeError(f'cluster metadata must be a dict, not {type(meta).__name__}')
        bad = sorted(str(k) for k in meta
                     if isinstance(k, str) and k.lower() in _FORBIDDEN_META_KEYS)
        if bad:
            raise ValueError(f'refusing to store a secret ({bad}) in the recover file: '
                             f'it is kept in clear')
        self._append(_CLUSTER, (dict(meta),))

    def node(self, key: str, host: str, port: int, name: str) -> None:
        """Record a node the cluster uses, under ``key`` ('host:port')."""
        if not (isinstance(key, str) and isinstance(host, str) and isinstance(port, int)
                and isinstance(name, str)):
            raise TypeError(f'node record needs (str, str, int, str), got '
                            f'{(key, host, port, name)!r}')
        self._append(_NODE, (key, host, port, name))

    def submitted(self, uid: int, job_id: object, args_blob: bytes) -> None:
        """Record a submitted job; ``args_blob`` is the caller's serialised arguments."""
        if not isinstance(uid, int):
            raise TypeError(f'uid must be an int, not {type(uid).__name__}')
        if not isinstance(args_blob, (bytes, bytearray, memoryview)):
            raise TypeError(f'args_blob must be bytes, not {type(args_blob).__name__}')
        if len(args_blob) > KEEP_ARGS_MAX:
            self._append(_SUBMIT, (uid, job_id, b''))
        elif len(args_blob) >= BIG_ARGS:
            self._append_big(_SUBMIT, (uid, job_id, bytes(args_blob)))
        else:
            self._append(_SUBMIT, (uid, job_id, bytes(args_blob)))

    def _append_big(self, kind: int, fields: tuple[Any, ...]) -> None:
        """Like _append, for a record holding a large bytes object: the pickler hands
        that object itself to the collector (it bypasses its buffer for data of 64 KiB
        or more), so it is written from where it is."""
        if self._closed:
            raise RecoverFileError(f'recover file {self._path!r} is closed')
        parts = _Collector()
        pickle.Pickler(parts, PICKLE_PROTOCOL).dump(fields)
        crc = _KIND_SEED[kind]
        for part in parts:
            crc = _crc32(part, crc)
        self._move_buf_to_chunks()
        self._buf += _pack_header(parts.size, kind, crc)
        self._move_buf_to_chunks()
        self._chunks += parts
        self._pending += parts.size

    def _move_buf_to_chunks(self) -> None:
        if self._buf:
            self._chunks.append(bytes(self._buf))
            self._pending += len(self._buf)
            self._buf.clear()

    def dispatched(self, uid: int, node_key: str, attempt: int) -> None:
        """Record that attempt ``attempt`` of job ``uid`` was sent to ``node_key``."""
        if not (isinstance(uid, int) and isinstance(node_key, str) and isinstance(attempt, int)):
            raise TypeError(f'dispatch record needs (int, str, int), got '
                            f'{(uid, node_key, attempt)!r}')
        self._append(_DISPATCH, (uid, node_key, attempt))

    def done(self, uid: int) -> None:
        """Record that job ``uid`` reached a final state on the client."""
        if not isinstance(uid, int):
            raise TypeError(f'uid must be an int, not {type(uid).__name__}')
        self._append(_DONE, (uid,))

    def job_id(self, uid: int, job_id: object) -> None:
        """Record a new ``id`` the program gave job ``uid`` after submitting it."""
        if not isinstance(uid, int):
            raise TypeError(f'uid must be an int, not {type(uid).__name__}')
        self._append(_JOB_ID, (uid, job_id))

    def closed(self) -> None:
        """Record that the cluster was closed cleanly (call before :meth:`close`)."""
        self._append(_CLOSED, ())

    # -- I/O --

    def flush(self, sync: bool = True) -> None:
        """Write the buffered records (one write loop) and, if ``sync``, fsync once."""
        if self._closed:
            raise RecoverFileError(f'recover file {self._path!r} is closed')
        if self._chunks:
            self._move_buf_to_chunks()
            self._write_chunks()
        elif self._buf:
            written = 0
            try:
                with memoryview(self._buf) as view:
                    while written < len(view):
                        written += os.write(self._fd, view[written:])
            finally:
                # Keep what was not written, so a later flush completes the torn
                # record instead of leaving a hole that would hide everything after it.
                del self._buf[:written]
        if sync:
            os.fsync(self._fd)

    def _write_chunks(self) -> None:
        """Write the buffers in order; what a failure leaves unwritten stays (as a
        memoryview of its remainder) for the next flush."""
        chunks = self._chunks
        while chunks:
            written = os.writev(self._fd, chunks[:_IOV_MAX])
            self._pending -= written
            done = 0
            while done < len(chunks) and written >= len(chunks[done]):
                written -= len(chunks[done])
                done += 1
            del chunks[:done]
            if written:
                chunks[0] = memoryview(chunks[0])[written:]

    def close(self, remove: bool = False) -> None:
        """Flush, fsync and close; unlink the file too if ``remove``.  Idempotent."""
        if not self._closed:
            try:
                self.flush(sync=True)
            finally:
                self._closed = True
                os.close(self._fd)
        if remove and not self._removed:
            self._removed = True
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> RecoverJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = 'closed' if self._closed else f'{self.pending_bytes} B pending'
        return f'<RecoverJournal {self._path!r} {state}>'


class _Collector(list):
    """A file for pickle.Pickler that keeps what it is given, large objects uncopied."""

    size = 0

    def write(self, data: bytes) -> None:
        self.append(data)
        self.size += len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------------------- reader


class NodeRecord(NamedTuple):
    """Where a node listens, as recorded by NODE."""

    host: str
    port: int
    name: str


@dataclass(slots=True)
class PendingJob:
    """A job submitted and not DONE; ``node_key`` is None if never dispatched."""

    uid: int
    job_id: object
    args_blob: bytes
    node_key: str | None = None
    attempt: int = 0


@dataclass(slots=True)
class RecoverState:
    """What a recover file says, folded record by record."""

    meta: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    jobs: dict[int, PendingJob] = field(default_factory=dict)
    closed: bool = False
    torn_bytes: int = 0
    records: int = 0


def read_journal(path: str | os.PathLike[str]) -> RecoverState:
    """Fold the recover file at ``path`` into a :class:`RecoverState`.

    A truncated or checksum-failing record ends the reading (``torn_bytes``
    counts the bytes from it to the end of the file).  A missing or empty file,
    a wrong header, or a checksummed record with malformed fields raises
    :class:`RecoverFileError`.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as stream:
            size = os.fstat(stream.fileno()).st_size
            _check_file_header(path, stream.read(FILE_HEADER.size))
            return _fold_records(path, stream, size)
    except FileNotFoundError as exc:
        raise RecoverFileError(f'recover file {path!r} does not exist') from exc
    except OSError as exc:
        raise RecoverFileError(f'cannot read recover file {path!r}: {exc}') from exc


def _check_file_header(path: str, header: bytes) -> None:
    if not header:
        raise RecoverFileError(
            f'recover file {path!r} is empty (its writer died before writing the header)')
    if len(header) < FILE_HEADER.size or not header.startswith(MAGIC):
        raise RecoverFileError(f'{path!r} is not a dispylike recover file (bad magic)')
    _, version = FILE_HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise RecoverFileError(
            f'recover file {path!r} has format version {version}; this dispylike reads '
            f'version {FORMAT_VERSION}')


def _fold_records(path: str, stream: BinaryIO, size: int) -> RecoverState:
    state = RecoverState()
    offset = FILE_HEADER.size
    while offset < size:
        header = stream.read(RECORD_HEADER.size)
        if len(header) < RECORD_HEADER.size:
            break
        length, kind, crc = RECORD_HEADER.unpack(header)
        # Check the length against the file before reading: a torn length may be huge.
        if length > size - offset - RECORD_HEADER.size:
            break
        payload = stream.read(length)
        if len(payload) < length or zlib.crc32(payload, _KIND_SEED[kind]) != crc:
            break
        _apply(state, path, offset, kind, payload)
        state.records += 1
        offset += RECORD_HEADER.size + length
    state.torn_bytes = size - offset
    return state


# Exceptions pickle.loads may raise on bytes that are not a pickle of ours.
_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                    ImportError, IndexError, KeyError)


_KINDS = {int(kind): kind for kind in RecordKind}


def _apply(state: RecoverState, path: str, offset: int, kind: int, payload: bytes) -> None:
    """Validate one checksummed record and fold it into ``state``."""
    record_kind = _KINDS.get(kind)
    if record_kind is None:
        raise RecoverFileError(f'{path!r}: unknown record kind {kind} at offset {offset}')
    try:
        fields = pickle.loads(payload)
    except _UNPICKLE_ERRORS as exc:
        raise RecoverFileError(
            f'{path!r}: undecodable {record_kind.name} record at offset {offset}: {exc}') from exc
    problem = _FIELD_CHECKS[record_kind](fields)
    if problem:
        raise RecoverFileError(f'{path!r}: malformed {record_kind.name} record at offset {offset}: '
                               f'{problem}')
    _FOLDS[record_kind](state, fields)


def _shape(fields: object, types: tuple[type, ...]) -> str:
    """'' if ``fields`` is a tuple of exactly ``types`` (in order), else why not."""
    if type(fields) is not tuple or len(fields) != len(types):
        return f'expected {len(types)} fields, got {type(fields).__name__} {fields!r:.80}'
    for value, expected in zip(fields, types, strict=True):
        if not isinstance(value, expected):
            return f'a field is {type(value).__name__}, expected {expected.__name__}'
    return ''


_FIELD_CHECKS = {
    RecordKind.CLUSTER: lambda f: _shape(f, (dict,)),
    RecordKind.NODE: lambda f: _shape(f, (str, str, int, str)),
    RecordKind.SUBMIT: lambda f: _shape(f, (int, object, bytes)),
    RecordKind.DISPATCH: lambda f: _shape(f, (int, str, int)),
    RecordKind.DONE: lambda f: _shape(f, (int,)),
    RecordKind.CLOSED: lambda f: _shape(f, ()),
    RecordKind.JOB_ID: lambda f: _shape(f, (int, object)),
}


def _fold_cluster(state: RecoverState, fields: tuple[Any, ...]) -> None:
    state.meta.update(fields[0])


def _fold_node(state: RecoverState, fields: tuple[Any, ...]) -> None:
    key, host, port, name = fields
    state.nodes[key] = NodeRecord(host, port, name)


def _fold_submit(state: RecoverState, fields: tuple[Any, ...]) -> None:
    uid, job_id, args_blob = fields
    state.jobs[uid] = PendingJob(uid, job_id, args_blob)


def _fold_dispatch(state: RecoverState, fields: tuple[Any, ...]) -> None:
    uid, node_key, attempt = fields
    job = state.jobs.get(uid)
    if job is not None:  # a dispatch of a job already DONE (or never submitted) is moot
        job.node_key = node_key
        job.attempt = attempt


def _fold_done(state: RecoverState, fields: tuple[Any, ...]) -> None:
    state.jobs.pop(fields[0], None)


def _fold_closed(state: RecoverState, fields: tuple[Any, ...]) -> None:
    state.closed = True


def _fold_job_id(state: RecoverState, fields: tuple[Any, ...]) -> None:
    job = state.jobs.get(fields[0])
    if job is not None:
        job.job_id = fields[1]


_FOLDS = {
    RecordKind.CLUSTER: _fold_cluster,
    RecordKind.NODE: _fold_node,
    RecordKind.SUBMIT: _fold_submit,
    RecordKind.DISPATCH: _fold_dispatch,
    RecordKind.DONE: _fold_done,
    RecordKind.CLOSED: _fold_closed,
    RecordKind.JOB_ID: _fold_job_id,
}
