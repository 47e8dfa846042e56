"""The node daemon: serves authenticated clients and runs their jobs.

::

    client ──TCP (handshake)──> ClientSession ──> NodeComputation ──> ComputationHost
                                   │  replies batched, kept until acked      (zygote + jobs)
                                   └─ handler table: message type -> method

One client (a JobCluster) holds the node at a time; others are refused with
the holder's name.  The node runs at most one job per CPU it serves; extra
jobs wait in the node's queue.  When a client's connection ends, its
computations are terminated and cleaned up and the node is free again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import random
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psutil

from .. import config
from ..discovery.addresses import primary_address
from ..discovery.beacon import NodeBeacon
from ..errors import ComputationError, ConnectionClosed, ProtocolError
from ..execution.host import ComputationHost, JobOutcome, failure_payload
from ..execution.staging import FileSink, StagingError, check_relpath
from ..protocol import messages as m
from ..protocol.discovery import Announce
from ..protocol.frames import DEFAULT_MESSAGE_CAP, PROTOCOL_VERSION
from ..security.tls import maybe_server_context
from ..status import JobStatus
from ..transport.connection import Connection, Server
from ..transport.loop import set_event
from ..version import __version__

log = logging.getLogger('dispylike.node')

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
MAX_UNACKED = 100_000
#: A peer silent for this many pulse intervals is taken for dead (dispy's rule).
ZOMBIE_PULSES = 5
MIN_PULSE = 0.2
REPLY_BATCH_BYTES = 16 * 1024 * 1024
#: A job result larger than this is refused (Terminated, with the reason): it must fit
#: one message to the client (``frames.DEFAULT_MESSAGE_CAP``) with room to spare.
MAX_RESULT_BYTES = DEFAULT_MESSAGE_CAP - 16 * 1024 * 1024


@dataclass
class NodeOptions:
    hosts: list[str] = field(default_factory=list)
    ext_host: str = ''
    dispy_port: int = config.DispyPort
    node_port: int | None = None      # explicit TCP port (0 = any free); default NodePort
    cpus: int = 0                     # 0 = all; negative = all but that many
    name: str = ''
    dest_path_prefix: str = ''
    secret: str = ''
    clean: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    msg_timeout: float = config.MsgTimeout
    cancel_grace: float = 5.0
    certfile: str = ''
    keyfile: str = ''
    cafile: str = ''
    ipv4_udp_multicast: bool = False
    discovery: bool = True            # answer UDP probes and announce at start-up
    scheduler_hosts: list[str] = field(default_factory=list)   # also announced to, unicast


def resolve_cpus(requested: int, available: int) -> int:
    """dispy's rule: 0 = all, negative = all but that many, else at most the machine's."""
    if requested == 0:
        return available
    if requested < 0:
        if available + requested < 1:
            raise ValueError(f'cpus {requested} leaves no CPU of {available}')
        return available + requested
    if requested > available:
        raise ValueError(f'cpus {requested} is more than the {available} this machine has')
    return requested


@dataclass
class NodeComputation:
    comp_id: str
    name: str
    dest_path: str
    remove_files: bool
    code: bytes
    host: ComputationHost | None = None
    sinks: dict[str, FileSink] = field(default_factory=dict)
    running: dict[int, int] = field(default_factory=dict)   # uid -> attempt
    queued: set[int] = field(default_factory=set)           # uids waiting in the node queue
    idle: asyncio.Event = field(default_factory=set_event)  # set when nothing runs
    starting: bool = False


@dataclass
class _Queued:
    session: ClientSession
    comp: NodeComputation
    uid: int
    attempt: int
    payload: bytes


class ClientSession:
    """One authenticated client connection and what it owns on this node."""

    def __init__(self, node: NodeDaemon, conn: Connection) -> None:
        self.node = node
        self.conn = conn
        self.client = conn.peer
        self.comps: dict[str, NodeComputation] = {}
        # Replies the client has not acknowledged yet.  Nothing is resent from here
        # today (the connection is the session); the record is what delivery after
        # a reconnect (issue 5) will build on.  Bounded, as the peer sets its size.
        self.unacked: dict[tuple[int, int], None] = {}
        self.tasks: set[asyncio.Task] = set()    # long handlers (setup, close)
        self.last_rx = time.monotonic()
        self.pulse_task: asyncio.Task | None = None
        self._outbox: list[tuple] = []
        self._outbox_bytes = 0

    def reply(self, entry: tuple) -> None:
        self.unacked[(entry[0], entry[1])] = None
        if len(self.unacked) > MAX_UNACKED:
            del self.unacked[next(iter(self.unacked))]
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(entry)
        self._outbox_bytes += len(entry[5])
        if self._outbox_bytes > REPLY_BATCH_BYTES:   # keep each message far below the cap
            self._flush()

    def _flush(self) -> None:
        batch, self._outbox, self._outbox_bytes = tuple(self._outbox), [], 0
        if batch and not self.conn.closed:
            try:
                self.conn.send(m.JobReplies(batch))
            except ConnectionClosed:
                pass


class NodeDaemon:
    """The dispynode service.  ``await start()``, then ``await serve_until(event)``."""

    def __init__(self, opts: NodeOptions) -> None:
        self.opts = opts
        self.cpus = resolve_cpus(opts.cpus, os.cpu_count() or 1)
        self.name = opts.name or socket.gethostname()
        self.incarnation = random.getrandbits(63)
        self.prefix = opts.dest_path_prefix or os.path.join(tempfile.gettempdir(), 'dispylike',
                                                            'node')
        self.ip_addr = ''
        self.port = 0
        self.owner: ClientSession | None = None
        self.free = self.cpus
        self.queue: deque[_Queued] = deque()
        self.jobs_done = 0
        self._sessions: set[asyncio.Task] = set()
        self.beacon: NodeBeacon | None = None
        self._server = Server(opts.secret, self._serve_client, name='dispynode',
                              handshake_timeout=opts.msg_timeout,
                              ssl_context=maybe_server_context(opts.certfile or None,
                                                               opts.keyfile or None,
                                                               opts.cafile or None))
        self._handlers: dict[type, Callable[[ClientSession, Any], Any]] = {
            m.NodeInfoRequest: self._on_info,
            m.SetupComputation: self._on_setup,
            m.FileChunk: self._on_file,
            m.StartComputation: self._on_start,
            m.RunJobs: self._on_run,
            m.AckReplies: self._on_ack,
            m.CancelJob: self._on_cancel,
            m.CloseComputation: self._on_close,
            m.Heartbeat: lambda session, msg: None,   # receiving it is the point
        }

    # --- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if self.opts.clean and os.path.isdir(self.prefix):  # noqa: ASYNC240 - start-up only
            shutil.rmtree(self.prefix, ignore_errors=True)
        os.makedirs(self.prefix, mode=0o700, exist_ok=True)
        port = self.opts.node_port
        if port is None:
            port = config.port_of('NodePort', self.opts.dispy_port)
        hosts = self.opts.hosts or ['']
        for host in hosts:
            self.port = await self._server.listen(host or None, port)
            port = self.port  # every address on the same port
        self.ip_addr = self.opts.ext_host or (hosts[0] if hosts[0] else primary_address())
        if not self.opts.ext_host and not hosts[0]:
            log.info('advertising %s (the first non-loopback address; the host name may '
                     'resolve to a loopback address)', self.ip_addr)
        if self.opts.discovery:
            await self._start_beacon([h for h in hosts if h])
        log.info('dispylike node %s (protocol %d) "%s" serving %d CPU%s at %s:%d '
                 '(listening on %s%s); files under %s', __version__, PROTOCOL_VERSION, self.name,
                 self.cpus, '' if self.cpus == 1 else 's', self.ip_addr, self.port,
                 ', '.join(h or '*' for h in hosts), ', TLS' if self.opts.certfile else '',
                 self.prefix)

    async def _start_beacon(self, addresses: list[str]) -> None:
        self.beacon = NodeBeacon(self.opts.secret, self._announcement)
        try:
            await self.beacon.start(self.port, addresses)
        except OSError as exc:
            log.warning('discovery disabled: cannot listen on UDP port %d: %s', self.port, exc)
            return
        targets = self.beacon.announce(config.port_of('ClientPort', self.opts.dispy_port),
                                       self.opts.ipv4_udp_multicast, self.opts.scheduler_hosts)
        log.info('answering discovery on UDP port %d; announced to %s', self.port,
                 ', '.join(targets) or 'nobody (no broadcast or multicast interface)')

    def _announcement(self, nonce: bytes) -> Announce:
        return Announce(nonce, self.port, self.cpus, self.incarnation, self.name, self.ip_addr)

    async def stop(self) -> None:
        """Terminate every computation, tell clients, release resources (idempotent)."""
        if self.beacon is not None:
            self.beacon.close()
        for conn in list(self._server.connections):
            conn.abort()
        await self._server.close()
        if self._sessions:  # let each session terminate its jobs and clean its files
            await asyncio.wait(list(self._sessions), timeout=30)

    # --- per client -------------------------------------------------------------
    async def _serve_client(self, conn: Connection) -> None:
        session = ClientSession(self, conn)
        me = asyncio.current_task()
        self._sessions.add(me)
        log.debug('client %s connected', conn.peer)
        try:
            while True:
                msg = await conn.recv()
                session.last_rx = time.monotonic()
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise ProtocolError(f'unexpected message {type(msg).__name__}')
                result = handler(session, msg)
                if asyncio.iscoroutine(result):
                    # long work (setup, cleanup) must not stop this loop from noticing
                    # that the client went away
                    task = asyncio.get_running_loop().create_task(result)
                    session.tasks.add(task)
                    task.add_done_callback(partial(self._handler_done, session))
        finally:
            await self._end_session(session)
            self._sessions.discard(me)

    def _handler_done(self, session: ClientSession, task: asyncio.Task) -> None:
        session.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('client %s: %s', session.client, task.exception())
            session.conn.abort()

    async def _end_session(self, session: ClientSession) -> None:
        for task in list(session.tasks):
            task.cancel()
        if session.tasks:
            await asyncio.wait(list(session.tasks), timeout=30)
        for comp in list(session.comps.values()):
            await self._close_comp(session, comp, terminate=True)
        if self.owner is session:
            self.owner = None
        log.debug('client %s disconnected', session.client)

    def _on_info(self, session: ClientSession, msg: m.NodeInfoRequest) -> None:
        owner = self.owner.client if self.owner and self.owner is not session else ''
        session.conn.send(m.NodeInfo(self.name, self.ip_addr, self.port, self.cpus, self.free,
                                     platform.platform(), self.incarnation, __version__, owner,
                                     availability(self.prefix)))

    def _on_setup(self, session: ClientSession, msg: m.SetupComputation) -> None:
        if msg.comp_id in session.comps:
            raise ProtocolError(f'computation {msg.comp_id!r} set up twice')
        if self.owner is not None and self.owner is not session:
            session.conn.send(m.Refused(msg.comp_id, f'node is in use by {self.owner.client}'))
            return
        try:
            rel = check_relpath(msg.dest_path) if msg.dest_path else \
                f'{_safe_name(msg.name)}_{msg.comp_id[:8]}'
        except StagingError as exc:
            session.conn.send(m.Refused(msg.comp_id, str(exc)))
            return
        dest = os.path.join(self.prefix, rel)
        os.makedirs(dest, mode=0o700, exist_ok=True)
        self.owner = session
        session.client = msg.client or session.client
        if msg.pulse_interval > 0 and session.pulse_task is None:
            session.pulse_task = asyncio.get_running_loop().create_task(
                self._pulse(session, max(MIN_PULSE, msg.pulse_interval)))
            session.tasks.add(session.pulse_task)
        session.comps[msg.comp_id] = NodeComputation(msg.comp_id, msg.name, dest, msg.cleanup,
                                                     msg.code)
        log.info('computation "%s" from %s set up in %s', msg.name, session.client, dest)

    async def _pulse(self, session: ClientSession, interval: float) -> None:
        """Pulse the client; a client silent for 5 intervals is gone: end its session
        (its jobs are terminated and its files cleaned) so the node serves others."""
        while not session.conn.closed:
            await asyncio.sleep(interval)
            silent = time.monotonic() - session.last_rx
            if silent > ZOMBIE_PULSES * interval:
                log.warning('client %s silent for %.1f s: ending its session', session.client,
                            silent)
                session.conn.abort()
                return
            try:
                session.conn.send(m.Pulse(availability(self.prefix)))
            except ConnectionClosed:
                return

    def _comp(self, session: ClientSession, comp_id: str) -> NodeComputation:
        comp = session.comps.get(comp_id)
        if comp is None:
            raise ProtocolError(f'unknown computation {comp_id!r}')
        return comp

    def _on_file(self, session: ClientSession, msg: m.FileChunk) -> None:
        comp = self._comp(session, msg.comp_id)
        try:
            sink = comp.sinks.get(msg.relpath)
            if sink is None:
                sink = comp.sinks[msg.relpath] = FileSink(comp.dest_path, msg.relpath,
                                                          self.opts.max_file_size)
            sink.write(msg.offset, msg.data)
            if msg.final:
                del comp.sinks[msg.relpath]
                sink.finish(msg.mode)
                session.conn.send(m.FileStored(msg.comp_id, msg.relpath, ''))
        except (StagingError, OSError) as exc:
            sink = comp.sinks.pop(msg.relpath, None)
            if sink is not None:
                sink.abort()
            log.warning('refused file %r from %s: %s', msg.relpath, session.client, exc)
            session.conn.send(m.FileStored(msg.comp_id, msg.relpath, str(exc)))

    async def _on_start(self, session: ClientSession, msg: m.StartComputation) -> None:
        comp = self._comp(session, msg.comp_id)
        if comp.host is not None or comp.starting:
            raise ProtocolError(f'computation {comp.name!r} started twice')
        comp.starting = True
        host = ComputationHost(comp.comp_id, comp.name, comp.dest_path,
                               on_broken=partial(self._comp_broken, session, comp),
                               on_provisional=partial(self._provisional, session),
                               on_file=partial(self._job_file, session))
        node_globals = {'dispy_node_name': self.name, 'dispy_node_ip_addr': self.ip_addr,
                        'dispy_job_path': comp.dest_path,
                        '_dispy_max_file_size': self.opts.max_file_size}
        try:
            await host.start(comp.code, node_globals, msg.setup_args, spares=self.cpus)
        except ComputationError as exc:
            log.warning('computation "%s" from %s failed: %s', comp.name, session.client, exc)
            session.conn.send(m.ComputationReady(comp.comp_id, False, str(exc), comp.dest_path))
            return
        comp.host, comp.code = host, b''
        if comp.comp_id not in session.comps:       # closed while it was starting
            await host.close(run_cleanup=True)
            return
        session.conn.send(m.ComputationReady(comp.comp_id, True, '', comp.dest_path))

    def _provisional(self, session: ClientSession, uid: int, attempt: int,
                     payload: bytes) -> None:
        if not session.conn.closed:
            try:
                session.conn.send(m.ProvisionalResult(uid, attempt, payload))
            except ConnectionClosed:
                pass

    def _job_file(self, session: ClientSession, uid: int, attempt: int, relpath: str,
                  data: bytes) -> None:
        """A job's dispy_send_file: check the name and size here too, then pass it on."""
        try:
            check_relpath(relpath)
            if self.opts.max_file_size and len(data) > self.opts.max_file_size:
                raise StagingError(f'{len(data)} bytes is over the limit of '
                                   f'{self.opts.max_file_size}')
        except StagingError as exc:
            log.warning('refused file %r from job %s: %s', relpath, uid, exc)
            return
        if not session.conn.closed:
            try:
                session.conn.send(m.JobFile(uid, attempt, relpath, data))
            except ConnectionClosed:
                pass

    def _comp_broken(self, session: ClientSession, comp: NodeComputation, reason: str) -> None:
        """The computation's process died: this node can no longer run its jobs, so drop
        the client's link; the client then reschedules or abandons them as for a lost node."""
        if comp.comp_id in session.comps:
            log.error('computation "%s" from %s: %s; disconnecting the client',
                      comp.name, session.client, reason)
            session.conn.abort()

    def _on_run(self, session: ClientSession, msg: m.RunJobs) -> None:
        comp = self._comp(session, msg.comp_id)
        if comp.host is None:
            raise ProtocolError(f'jobs for computation {comp.name!r} before it is ready')
        for uid, attempt, payload in msg.jobs:
            if uid in comp.running or uid in comp.queued:
                raise ProtocolError(f'job {uid} sent twice')
            comp.queued.add(uid)
            self.queue.append(_Queued(session, comp, uid, attempt, payload))
        self._pump()

    def _pump(self) -> None:
        while self.free > 0 and self.queue:
            q = self.queue.popleft()
            q.comp.queued.discard(q.uid)
            if q.comp.comp_id not in q.session.comps or q.session.conn.closed:
                continue  # its computation is closed: nobody waits for a reply
            self.free -= 1
            q.comp.running[q.uid] = q.attempt
            q.comp.idle.clear()
            fut = q.comp.host.run(q.uid, q.attempt, q.payload)
            fut.add_done_callback(partial(self._job_done, q.session, q.comp, q.uid, q.attempt))

    def _job_done(self, session: ClientSession, comp: NodeComputation, uid: int, attempt: int,
                  fut: asyncio.Future) -> None:
        outcome: JobOutcome = fut.result()
        if len(outcome.payload) > MAX_RESULT_BYTES:
            outcome = JobOutcome(JobStatus.Terminated, outcome.start_time, outcome.end_time,
                                 failure_payload(f'the result is {len(outcome.payload)} bytes; '
                                                 f'the limit is {MAX_RESULT_BYTES}: save it to '
                                                 'a file instead'))
        self.free += 1
        self.jobs_done += 1
        if comp.running.get(uid) == attempt:
            del comp.running[uid]
            if not comp.running:
                comp.idle.set()
        session.reply((uid, attempt, int(outcome.status), outcome.start_time, outcome.end_time,
                       outcome.payload))
        self._pump()

    def _on_ack(self, session: ClientSession, msg: m.AckReplies) -> None:
        for key in msg.keys:
            session.unacked.pop(key, None)

    def _on_cancel(self, session: ClientSession, msg: m.CancelJob) -> None:
        for q in self.queue:
            if q.session is session and q.uid == msg.uid and q.attempt == msg.attempt:
                self.queue.remove(q)
                q.comp.queued.discard(q.uid)
                session.reply((msg.uid, msg.attempt, int(JobStatus.Cancelled), 0.0, 0.0,
                               failure_payload('cancelled before it started')))
                return
        for comp in session.comps.values():
            if comp.running.get(msg.uid) == msg.attempt and comp.host is not None:
                comp.host.cancel(msg.uid, self.opts.cancel_grace)
                return

    async def _on_close(self, session: ClientSession, msg: m.CloseComputation) -> None:
        comp = session.comps.get(msg.comp_id)
        if comp is not None:
            await self._close_comp(session, comp, msg.terminate)
        session.conn.send(m.ComputationClosed(msg.comp_id))

    async def _close_comp(self, session: ClientSession, comp: NodeComputation,
                          terminate: bool) -> None:
        session.comps.pop(comp.comp_id, None)
        self.queue = deque(q for q in self.queue if q.comp is not comp)
        for sink in comp.sinks.values():
            sink.abort()
        if comp.host is not None:
            if not terminate:
                await comp.idle.wait()
            error = await comp.host.close(run_cleanup=True)
            if error:
                log.warning('cleanup of "%s" failed:\n%s', comp.name, error)
        if comp.remove_files:
            shutil.rmtree(comp.dest_path, ignore_errors=True)
        if self.owner is session and not session.comps:
            self.owner = None
        log.info('computation "%s" from %s closed', comp.name, session.client)


def availability(path: str) -> tuple[float, int, int, float]:
    """(CPU use %, available memory, free disk under ``path``, swap use %) from psutil."""
    return (float(psutil.cpu_percent(None)), int(psutil.virtual_memory().available),
            int(psutil.disk_usage(path).free), float(psutil.swap_memory().percent))


def _safe_name(name: str) -> str:
    cleaned = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:40]
    return cleaned.strip('.') or 'computation'

