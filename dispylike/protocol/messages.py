"""Application messages (after the handshake): frozen dataclasses and their codec.

A message body is a pickle of the tuple of its field values, decoded with an
unpickler that refuses every global: only builtin containers and scalars can
come out, so decoding a control message never runs code, even from an
authenticated peer.  User objects (arguments, results, code) travel as opaque
``bytes`` fields that only the job process (arguments, code) or the client
(results) unpickles.

Each field is checked against its annotation after decoding; nested tuples are
checked by the message's ``check`` method.  An unknown type is an error.
"""

from __future__ import annotations

import dataclasses
import pickle
import types
import typing
from typing import Any, ClassVar

from ..errors import ProtocolError
from ..status import JobStatus
from .frames import FIRST_APP_TYPE, Message
from .plain import Pieces as Pieces  # (here too, as before)
from .plain import safe_loads as safe_loads

_REGISTRY: dict[int, type] = {}
_FINAL_STATUSES = frozenset(int(s) for s in JobStatus if s.is_final)


def message(type_id: int):
    """Class decorator: a frozen dataclass registered under ``type_id``."""
    def wrap(cls):
        if type_id < FIRST_APP_TYPE or type_id in _REGISTRY:
            raise ValueError(f'bad or duplicate message type {type_id}')
        cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        cls.TYPE = type_id
        hints = typing.get_type_hints(cls)
        cls._FIELDS = tuple((f.name, _runtime_type(hints[f.name]))
                            for f in dataclasses.fields(cls))
        _REGISTRY[type_id] = cls
        return cls
    return wrap


def _runtime_type(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(_runtime_type(a) for a in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin is not None:
        return origin
    return float if hint is float else hint


class _Base:
    TYPE: ClassVar[int]
    _FIELDS: ClassVar[tuple]

    def check(self) -> None:
        """Extra validation of nested fields; raise ProtocolError."""


def encode_message(msg: Any) -> tuple[int, bytes]:
    """Return (type, body) for a registered message instance."""
    values = tuple(getattr(msg, name) for name, _ in msg._FIELDS)
    return msg.TYPE, pickle.dumps(values, protocol=5)


def encode_message_parts(msg: Any) -> tuple[int, list]:
    """Return (type, pieces of the body): the body of :func:`encode_message`, byte
    for byte, without copying its large bytes fields (``frames.encode_parts``)."""
    values = tuple(getattr(msg, name) for name, _ in msg._FIELDS)
    out = Pieces()
    pickle.Pickler(out, protocol=5).dump(values)
    return msg.TYPE, out.parts


def decode_message(frame: Message) -> Any:
    """Turn one received :class:`Message` into its dataclass, validating every field."""
    cls = _REGISTRY.get(frame.type)
    if cls is None:
        raise ProtocolError(f'unknown message type {frame.type}')
    values = safe_loads(frame)
    if not isinstance(values, tuple) or len(values) != len(cls._FIELDS):
        raise ProtocolError(f'{cls.__name__}: expected {len(cls._FIELDS)} fields')
    for (name, kind), value in zip(cls._FIELDS, values, strict=True):
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f'{cls.__name__}.{name}: unexpected {type(value).__name__}')
    msg = cls(*values)
    msg.check()
    return msg


def check_comp_id(owner: str, comp_id: str) -> None:
    """A computation id is 32 lowercase hex digits (uuid4().hex): daemons build paths
    from it, so nothing else is accepted."""
    if len(comp_id) != 32 or any(c not in '0123456789abcdef' for c in comp_id):
        raise ProtocolError(f'{owner}: malformed computation id')


def _check_items(owner: str, items: tuple, kinds: tuple) -> None:
    for item in items:
        if not isinstance(item, tuple) or len(item) != len(kinds):
            raise ProtocolError(f'{owner}: malformed entry')
        for value, kind in zip(item, kinds, strict=True):
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ProtocolError(f'{owner}: malformed entry')


# --- client <-> node -------------------------------------------------------------

@message(16)
class NodeInfoRequest(_Base):
    """Ask a node who it is.  ``group``: '' for a client of its own; a dispyscheduler
    gives its id, and the node then lets every session of that group share it."""
    group: str


@message(17)
class NodeInfo(_Base):
    name: str
    ip_addr: str
    port: int
    cpus: int
    avail_cpus: int
    platform: str
    incarnation: int
    version: str
    busy_with: str          # '' when free, else who holds the node
    avail: tuple            # (cpu %, free memory bytes, free disk bytes, swap %)

    def check(self) -> None:
        _check_items('NodeInfo', (self.avail,), (float, int, int, float))


@message(18)
class FileChunk(_Base):
    """A piece of a file for a computation's directory (relative path, confined)."""
    comp_id: str
    relpath: str
    offset: int
    data: bytes
    final: bool
    mode: int


@message(19)
class SetupComputation(_Base):
    """Create a computation on the node; its files follow, then StartComputation."""
    comp_id: str
    name: str
    client: str             # who the computation belongs to (for logs and 'busy_with')
    dest_path: str          # '' = the node picks one directory per computation
    code: bytes             # opaque: unpickled only in the computation's own process
    cleanup: bool           # remove files at close
    pulse_interval: float   # seconds between pulses both ways; 0 = no pulses

    def check(self) -> None:
        check_comp_id('SetupComputation', self.comp_id)


@message(20)
class ComputationReady(_Base):
    """``xfer_dir``, ``xfer_token``: the node's transfer directory for this computation
    and the token in it ('' if none): a client on the same host that finds the token
    there may exchange large arguments and results through it (see execution.xfer)."""
    comp_id: str
    ok: bool
    error: str
    dest_path: str
    xfer_dir: str = ''
    xfer_token: str = ''


@message(21)
class RunJobs(_Base):
    """Jobs to run: entries (uid, attempt, payload) where payload is opaque args, or
    (a client on the node's host) the name of the file in the node's transfer
    directory that holds them."""
    comp_id: str
    jobs: tuple

    def check(self) -> None:
        _check_items('RunJobs', self.jobs, (int, int, (bytes, str)))


@message(22)
class JobReplies(_Base):
    """Finished jobs: (uid, attempt, status, start_time, end_time, payload); payload
    is the pickled reply or (after LocalResults) the path of a file holding it."""
    replies: tuple

    def check(self) -> None:
        _check_items('JobReplies', self.replies, (int, int, int, float, float, (bytes, str)))
        for reply in self.replies:
            if reply[2] not in _FINAL_STATUSES:
                raise ProtocolError(f'JobReplies: job status {reply[2]} is not final')


@message(23)
class AckReplies(_Base):
    """Replies the client has recorded: (uid, attempt) pairs; the node forgets them."""
    keys: tuple

    def check(self) -> None:
        _check_items('AckReplies', self.keys, (int, int))


@message(24)
class CancelJob(_Base):
    uid: int
    attempt: int


@message(25)
class CloseComputation(_Base):
    comp_id: str
    terminate: bool


@message(26)
class ComputationClosed(_Base):
    comp_id: str


@message(27)
class Refused(_Base):
    """The node refuses a request (busy, bad computation id, ...)."""
    comp_id: str
    reason: str


@message(28)
class StartComputation(_Base):
    """All files are sent: start the computation's process and run setup(*setup_args)."""
    comp_id: str
    setup_args: bytes       # opaque: unpickled only in the computation's own process


@message(29)
class Pulse(_Base):
    """Node -> client, every pulse_interval: alive, with (cpu %, memory, disk, swap %)."""
    avail: tuple

    def check(self) -> None:
        _check_items('Pulse', (self.avail,), (float, int, int, float))


@message(30)
class Heartbeat(_Base):
    """Client -> node, every pulse_interval: the client is alive."""


@message(31)
class ProvisionalResult(_Base):
    """Node -> client: a running job's provisional result (opaque pickled payload)."""
    uid: int
    attempt: int
    payload: bytes


@message(32)
class FileStored(_Base):
    """Node -> client: ``relpath`` is stored ('' error) or was refused (the reason)."""
    comp_id: str
    relpath: str
    error: str


@message(33)
class JobFile(_Base):
    """Node -> client: a file a running job sent with dispy_send_file."""
    uid: int
    attempt: int
    relpath: str
    data: bytes


@message(34)
class Attach(_Base):
    """Client -> node, on a new connection: take over computation ``comp_id`` again
    (after a lost link, or from recover_jobs after the client crashed)."""
    comp_id: str


@message(35)
class Attached(_Base):
    """Node -> client: the answer to Attach.  ``running``: (uid, attempt) of the jobs
    still running or queued there; the ``kept`` replies the client has not
    acknowledged follow."""
    comp_id: str
    ok: bool
    reason: str
    running: tuple
    kept: int               # replies not acknowledged yet: they follow at once

    def check(self) -> None:
        _check_items('Attached', self.running, (int, int))


@message(36)
class ServiceChange(_Base):
    """Node -> client: the node stops (``serving`` False) or resumes taking new jobs;
    ``ending``: it is about to terminate its jobs and close (service end, shutdown)."""
    serving: bool
    ending: bool
    reason: str


@message(37)
class FileOffer(_Base):
    """Client -> node (cleanup=False): is ``relpath`` already there with this size and
    SHA-256?  The node answers with FileOfferReply; if not, the client sends it."""
    comp_id: str
    relpath: str
    size: int
    sha256: bytes
    mode: int


@message(38)
class FileOfferReply(_Base):
    comp_id: str
    relpath: str
    have: bool


# --- client <-> dispyscheduler ---------------------------------------------------
# The scheduler also speaks the node's FileChunk/FileStored, StartComputation/
# ComputationReady, CancelJob, JobReplies/AckReplies, ProvisionalResult, JobFile,
# Attach/Attached, Heartbeat/Pulse and CloseComputation/ComputationClosed, with
# attempt 0: the attempts on nodes are its own business.

@message(39)
class ShareComputation(_Base):
    """Client -> scheduler: a computation for the shared nodes; its files follow, then
    StartComputation.  ``nodes``: entries (host or pattern, port (0 = the default),
    cpus (0 = all), setup_args (opaque pickle, '' = none))."""
    comp_id: str
    name: str
    client: str
    dest_path: str
    code: bytes
    cleanup: bool
    pulse_interval: float   # client <-> scheduler; 0 = none
    reentrant: bool
    exclusive: bool
    nodes: tuple

    def check(self) -> None:
        check_comp_id('ShareComputation', self.comp_id)
        _check_items('ShareComputation', self.nodes, (str, int, int, bytes))


@message(40)
class SubmitJobs(_Base):
    """Client -> scheduler: jobs (uid, node, payload); node '' = any node, else an
    address, host name or 'address:port' (submit_node)."""
    comp_id: str
    jobs: tuple

    def check(self) -> None:
        _check_items('SubmitJobs', self.jobs, (int, str, bytes))


@message(41)
class JobsRunning(_Base):
    """Scheduler -> client: jobs sent to a node: (uid, node address, node port)."""
    jobs: tuple

    def check(self) -> None:
        _check_items('JobsRunning', self.jobs, (int, str, int))


@message(42)
class NodeEvent(_Base):
    """Scheduler -> client: a node was set up for the computation (Initialized), left
    it (Closed) or sent its availability (AvailInfo)."""
    status: int
    ip_addr: str
    port: int
    name: str
    cpus: int
    avail_cpus: int
    platform: str
    avail: tuple            # () or (cpu %, free memory, free disk, swap %)

    def check(self) -> None:
        if self.avail:
            _check_items('NodeEvent', (self.avail,), (float, int, int, float))


@message(43)
class NodeRequest(_Base):
    """Client -> scheduler: one of dispy's node-management calls on the computation
    (op: allocate, deallocate, close, cpus, jobs, discover, send_file)."""
    comp_id: str
    request: int            # echoed in NodeRequestDone
    op: str
    node: str
    number: int             # cpus for 'cpus'; 1 = terminate for 'close'
    text: str               # file name for 'send_file'


@message(44)
class NodeRequestDone(_Base):
    request: int
    result: int             # dispy's return value (0 ok, -1 failed, cpus for 'cpus')
    uids: tuple             # 'jobs': the uids running on the node

    def check(self) -> None:
        if not all(isinstance(u, int) and not isinstance(u, bool) for u in self.uids):
            raise ProtocolError('NodeRequestDone: malformed uids')


@message(45)
class LocalResults(_Base):
    """Client -> node, on the node's host (it found ComputationReady's token): leave
    large results of this computation in the transfer directory and send their paths;
    each file is removed when its reply is acknowledged.  Ends with the connection."""
    comp_id: str
