"""The node daemon: serves authenticated clients and runs their jobs.

::

    connection ──(handshake)──> ClientSession ──> NodeComputation ──> ComputationHost
         │ handler table:           │ outlives its connection           (zygote + jobs)
         │ message type -> method   │ replies kept until acknowledged
         └─ Attach: a new connection takes over a session (link healed, recover_jobs)

One client holds the node at a time; others are refused with the holder's
name.  The sessions of one dispyscheduler (same non-empty ``group``) hold it
together, one session per computation, and their jobs share its CPUs.

The node runs at most one job per CPU it serves: it lends each CPU to a
computation process with a job, and forwards up to ``cpus`` more jobs to wait
there, so that a CPU passes from one job to the next inside that process
without a round trip through the node; further jobs wait in the node's queue.
A client that closes its computation frees the node at once; one whose
connection is lost keeps its jobs running and its replies kept for
``zombie_interval`` minutes, then its computations are terminated and cleaned.
Housekeeping (service hours, zombies, re-announcements) runs once a tick.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
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
from ..errors import ComputationError, ProtocolError
from ..execution import xfer
from ..execution.host import ComputationHost
from ..execution.staging import (
    FileBudget,
    FileSink,
    StagingError,
    confined_path,
    make_confined_dir,
)
from ..protocol import messages as m
from ..protocol.discovery import Announce
from ..protocol.frames import PROTOCOL_VERSION
from ..security.tls import maybe_server_context
from ..transport.connection import Connection, Server
from ..transport.loop import set_event
from ..transport.session import ClientSession
from ..version import __version__
from .housekeeping import Housekeeping
from .jobs import JobFlow, QueuedJob
from .options import DEFAULT_MAX_FILE_SIZE, NodeOptions, resolve_cpus
from .service import Service, ServiceHours

__all__ = ['DEFAULT_MAX_FILE_SIZE', 'NodeDaemon', 'NodeOptions', 'resolve_cpus']

log = logging.getLogger('dispylike.node')

#: A peer silent for this many pulse intervals is taken for dead (dispy's rule).
ZOMBIE_PULSES = 5
MIN_PULSE = 0.2



@dataclass
class NodeComputation:
    comp_id: str
    name: str
    dest_path: str
    remove_files: bool
    code: bytes
    budget: FileBudget
    host: ComputationHost | None = None
    sinks: dict[str, FileSink] = field(default_factory=dict)
    running: dict[int, int] = field(default_factory=dict)   # uid -> attempt, at the host
    queued: set[int] = field(default_factory=set)           # uids waiting in the node queue
    idle: asyncio.Event = field(default_factory=set_event)  # set when no job is at the host
    starting: bool = False
    last_end: float = 0.0        # monotonic time of the last job end (0: none yet)
    gap: float = 0.0             # moving average of the time between job ends (s)


class NodeDaemon(JobFlow, Housekeeping):
    """The dispynode service.  ``await start()``; ``done`` is set when it wants to exit
    (``--serve`` reached, ``dispynode_shutdown()``); ``await stop()`` releases it all.
    ``clock`` (local time of day, for service hours) is injectable for tests."""

    def __init__(self, opts: NodeOptions,
                 clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.opts = opts
        self.clock = clock
        self.hours = ServiceHours.parse(opts.service_start, opts.service_stop, opts.service_end)
        self.service = Service.SERVING
        self.cpus = resolve_cpus(opts.cpus, os.cpu_count() or 1)
        self.name = opts.name or socket.gethostname()
        self.incarnation = random.getrandbits(63)
        self.prefix = os.path.abspath(opts.dest_path_prefix or os.path.join(
            tempfile.gettempdir(), 'dispylike', 'node'))
        self.ip_addr = ''
        self.port = 0
        self.owners: set[ClientSession] = set()     # sessions holding the node (one group)
        self.clients: set[ClientSession] = set()     # own computations, attached or not
        self._endings: set[asyncio.Task] = set()      # sessions being ended (held: see _end)
        self.hosts: set[ComputationHost] = set()     # computation processes alive
        self.queue: deque[QueuedJob] = deque()
        self.jobs_done = 0
        self.served = 0
        self.done = asyncio.Event()
        self.tick = min(1.0, opts.ping_interval) if opts.ping_interval else 1.0
        self._last_announce = time.monotonic()
        self._sessions: set[asyncio.Task] = set()
        self._housekeeper: asyncio.Task | None = None
        self.beacon: NodeBeacon | None = None
        self._server = Server(opts.secret, self._serve_client, name='dispynode',
                              handshake_timeout=opts.msg_timeout,
                              ssl_context=maybe_server_context(opts.certfile or None,
                                                               opts.keyfile or None,
                                                               opts.cafile or None))
        self._handlers: dict[type, Callable[[ClientSession, Any], Any]] = {
            m.NodeInfoRequest: self._on_info,
            m.SetupComputation: self._on_setup,
            m.FileOffer: self._on_file_offer,
            m.FileChunk: self._on_file,
            m.StartComputation: self._on_start,
            m.RunJobs: self._on_run,
            m.AckReplies: lambda session, msg: session.ack(msg.keys),
            m.LocalResults: self._on_local_results,
            m.CancelJob: self._on_cancel,
            m.CloseComputation: self._on_close,
            m.Heartbeat: lambda session, msg: None,   # receiving it is the point
        }

    # --- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if self.opts.clean and os.path.isdir(self.prefix):  # noqa: ASYNC240 - start-up only
            shutil.rmtree(self.prefix, ignore_errors=True)
        os.makedirs(self.prefix, mode=0o700, exist_ok=True)
        xfer.remove_stale()      # transfer files of a node that was killed
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
        self.service = self.hours.state(self.clock())
        if self.opts.discovery:
            await self._start_beacon([h for h in hosts if h])
        log.info('dispylike node %s (protocol %d) "%s" serving %d CPU%s at %s:%d '
                 '(listening on %s%s); files under %s', __version__, PROTOCOL_VERSION, self.name,
                 self.cpus, '' if self.cpus == 1 else 's', self.ip_addr, self.port,
                 ', '.join(h or '*' for h in hosts), ', TLS' if self.opts.certfile else '',
                 self.prefix)
        if not self.hours.always:
            log.info('service hours: %s; now %s', self.hours.describe(), self.service.value)
        self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _start_beacon(self, addresses: list[str]) -> None:
        self.beacon = NodeBeacon(self.opts.secret, self._announcement)
        self.beacon.silent = self.service is not Service.SERVING
        try:
            await self.beacon.start(self.port, addresses)
        except OSError as exc:
            log.warning('discovery disabled: cannot listen on UDP port %d: %s', self.port, exc)
            self.beacon = None
            return
        if self.service is Service.SERVING:
            log.info('answering discovery on UDP port %d; announced to %s', self.port,
                     ', '.join(self._announce()) or 'nobody (no broadcast or multicast '
                                                    'interface)')

    def _announce(self) -> list[str]:
        self._last_announce = time.monotonic()
        if self.beacon is None:
            return []
        return self.beacon.announce(config.port_of('ClientPort', self.opts.dispy_port),
                                    self.opts.ipv4_udp_multicast, self.opts.scheduler_hosts)

    def _announcement(self, nonce: bytes) -> Announce:
        return Announce(nonce, self.port, self.cpus, self.incarnation, self.name, self.ip_addr)

    async def stop(self) -> None:
        """Tell clients, terminate every computation, release resources (idempotent)."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        if self.beacon is not None:
            self.beacon.close()
        for session in list(self.clients):
            session.send(m.ServiceChange(False, True, 'dispynode is shutting down'))
        for session in list(self.clients):
            await self._end_session(session)
        for conn in list(self._server.connections):
            conn.abort()
        await self._server.close()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=30)
        if self.opts.clean:
            shutil.rmtree(self.prefix, ignore_errors=True)

    @property
    def free(self) -> int:
        """CPUs served and not lent to a computation process (negative for a while
        after ``set_cpus`` took away CPUs that run jobs)."""
        return self.cpus - sum(host.lent for host in self.hosts)

    def set_cpus(self, cpus: int) -> int:
        """Serve ``cpus`` CPUs from now on (the console's ``cpus N``); jobs running on
        CPUs taken away finish first (their CPUs come back to the node instead of
        passing on to waiting jobs).  ValueError if the machine has not got them."""
        self.cpus = resolve_cpus(cpus, os.cpu_count() or 1)
        owed = -self.free
        for host in self.hosts:
            if owed <= 0:
                break
            count = min(owed, host.lent)
            host.take_back(count)
            owed -= count
        self._pump()
        return self.cpus

    # --- per connection ---------------------------------------------------------
    async def _serve_client(self, conn: Connection) -> None:
        session = ClientSession(conn, self._spill_dir())
        session.retained.file_done = xfer.recycle     # a result file read: reused
        me = asyncio.current_task()
        self._sessions.add(me)
        log.debug('client %s connected', conn.peer)
        violation = False
        try:
            while True:
                msg = await conn.recv()
                if type(msg) is m.Attach:
                    session = self._on_attach(session, conn, msg)
                    continue
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
        except ProtocolError:
            violation = True  # logged by the server; a peer that breaks the protocol
            raise             # loses its session at once, kept jobs and all
        finally:
            if violation and session.conn is conn:
                await self._end_session(session)
            else:
                self._connection_ended(session, conn)
            self._sessions.discard(me)

    def _spill_dir(self) -> str:
        return os.path.join(self.prefix, '.replies', os.urandom(8).hex())

    def _handler_done(self, session: ClientSession, task: asyncio.Task) -> None:
        session.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('client %s: %s', session.client, task.exception())
            self._end(session)

    def _connection_ended(self, session: ClientSession, conn: Connection) -> None:
        if session.conn is not conn:
            return            # the session lives on another connection now
        if session not in self.clients:
            log.debug('client %s disconnected', session.client)
            return
        if not session.retained and all(c.host is None for c in session.comps.values()):
            # nothing started, so nothing to recover (setup refused, a file over a limit):
            # holding the node for zombie_interval would only lock others out
            log.info('client %s left before its computation started: node freed',
                     session.client)
            self._end(session)
            return
        session.detach()
        running = sum(len(c.running) + len(c.queued) for c in session.comps.values())
        log.warning('client %s disconnected; its %d job(s) go on and their results are kept '
                    'for %g min (zombie_interval)', session.client, running,
                    self.opts.zombie_interval)

    def _on_attach(self, session: ClientSession, conn: Connection,
                   msg: m.Attach) -> ClientSession:
        """A client (again) takes over its computation from this connection."""
        target = next((s for s in self.clients if msg.comp_id in s.comps), None)
        if target is None or session.comps:
            reason = 'unknown computation' if target is None else 'this connection has its own'
            conn.send(m.Attached(msg.comp_id, False, reason, (), 0))
            return session
        old = target.conn
        if old is not None and old is not conn:
            old.abort()       # the client has given up on it
        running = tuple((uid, attempt) for c in target.comps.values()
                        for uid, attempt in c.running.items())
        running += tuple((q.uid, q.attempt) for q in self.queue if q.session is target)
        conn.send(m.Attached(msg.comp_id, True, '', running, len(target.retained)))
        target.attach(conn)
        log.info('client %s attached again (%d job(s) running, %d kept replies)',
                 target.client, len(running), len(target.retained))
        return target

    def _end(self, session: ClientSession) -> None:
        """End ``session`` in the background.  The task is held until it is done: the
        event loop keeps only a weak reference to a task."""
        task = asyncio.get_running_loop().create_task(self._end_session(session))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _end_session(self, session: ClientSession) -> None:
        """Terminate the session's computations, clean its files, forget it."""
        for task in list(session.tasks):
            task.cancel()
        if session.tasks:
            await asyncio.wait(list(session.tasks), timeout=30)
        for comp in list(session.comps.values()):
            await self._close_comp(session, comp, terminate=True)
        session.retained.clear()
        self.clients.discard(session)
        if session.conn is not None:
            session.conn.abort()
        self.owners.discard(session)

    # --- handlers ---------------------------------------------------------------
    def held_by(self, session: ClientSession) -> str:
        """'' if ``session`` may use the node, else who holds it."""
        for owner in self.owners:
            if owner is not session and not (session.group and owner.group == session.group):
                return owner.client + ('' if owner.attached else
                                       ' (disconnected; kept for recovery)')
        return ''

    def _on_info(self, session: ClientSession, msg: m.NodeInfoRequest) -> None:
        if not session.comps:
            session.group = msg.group
        busy = self.held_by(session)
        if not busy and self.service is not Service.SERVING:
            busy = f'nobody: it is out of service hours ({self.hours.describe()})'
        session.send(m.NodeInfo(self.name, self.ip_addr, self.port, self.cpus, self.free,
                                platform.platform(), self.incarnation, __version__, busy,
                                availability(self.prefix)))

    def _on_setup(self, session: ClientSession, msg: m.SetupComputation) -> None:
        if msg.comp_id in session.comps or any(msg.comp_id in s.comps for s in self.clients):
            raise ProtocolError(f'computation {msg.comp_id!r} set up twice')
        holder = self.held_by(session)
        if holder:
            session.send(m.Refused(msg.comp_id, f'node is in use by {holder}'))
            return
        if self.service is not Service.SERVING:
            session.send(m.Refused(msg.comp_id, 'out of service hours '
                                                f'({self.hours.describe()})'))
            return
        rel = msg.dest_path or f'{_safe_name(msg.name)}_{msg.comp_id[:8]}'
        try:
            dest = make_confined_dir(self.prefix, rel, mode=0o700)
        except (StagingError, OSError) as exc:
            session.send(m.Refused(msg.comp_id, str(exc)))
            return
        if any(c.dest_path == dest for s in self.clients for c in s.comps.values()):
            session.send(m.Refused(msg.comp_id, f'dest_path {msg.dest_path!r} is in use by '
                                                'another computation on this node'))
            return
        self.owners.add(session)
        self.clients.add(session)
        session.client = msg.client or session.client
        if msg.pulse_interval > 0 and session.pulse_task is None:
            session.pulse_task = asyncio.get_running_loop().create_task(
                self._pulse(session, max(MIN_PULSE, msg.pulse_interval)))
            session.tasks.add(session.pulse_task)
        remove = msg.cleanup or self.opts.force_cleanup
        budget = FileBudget(self.opts.max_files, self.opts.max_total_file_size)
        session.comps[msg.comp_id] = NodeComputation(msg.comp_id, msg.name, dest, remove,
                                                     msg.code, budget)
        log.info('computation "%s" from %s set up in %s', msg.name, session.client, dest)

    async def _pulse(self, session: ClientSession, interval: float) -> None:
        """Pulse the client while it is attached; a client silent for 5 intervals is
        cut off (its session is then kept for zombie_interval, as for a lost link)."""
        while session in self.clients or session.comps:
            await asyncio.sleep(interval)
            if not session.attached:
                continue
            silent = time.monotonic() - session.last_rx
            if silent > ZOMBIE_PULSES * interval:
                log.warning('client %s silent for %.1f s: dropping its connection',
                            session.client, silent)
                session.conn.abort()
                continue
            session.send(m.Pulse(availability(self.prefix)))

    def _comp(self, session: ClientSession, comp_id: str) -> NodeComputation:
        comp = session.comps.get(comp_id)
        if comp is None:
            raise ProtocolError(f'unknown computation {comp_id!r}')
        return comp

    async def _on_file_offer(self, session: ClientSession, msg: m.FileOffer) -> None:
        """cleanup=False: a file already there with this size and hash is not sent again."""
        comp = self._comp(session, msg.comp_id)
        try:
            path = confined_path(comp.dest_path, msg.relpath)
            have = await asyncio.to_thread(_same_file, path, msg.size, msg.sha256)
        except (StagingError, OSError):
            have = False     # the client then sends it and the usual checks apply
        if have:
            log.debug('file %r of "%s" is already here: not sent again', msg.relpath, comp.name)
        session.send(m.FileOfferReply(msg.comp_id, msg.relpath, have))

    def _on_file(self, session: ClientSession, msg: m.FileChunk) -> None:
        comp = self._comp(session, msg.comp_id)
        try:
            sink = comp.sinks.get(msg.relpath)
            if sink is None:
                sink = comp.sinks[msg.relpath] = FileSink(comp.dest_path, msg.relpath,
                                                          self.opts.max_file_size, comp.budget)
            sink.write(msg.offset, msg.data)
            if msg.final:
                del comp.sinks[msg.relpath]
                sink.finish(msg.mode)
                session.send(m.FileStored(msg.comp_id, msg.relpath, ''))
        except (StagingError, OSError) as exc:
            sink = comp.sinks.pop(msg.relpath, None)
            if sink is not None:
                sink.abort()
            log.warning('refused file %r from %s: %s', msg.relpath, session.client, exc)
            session.send(m.FileStored(msg.comp_id, msg.relpath, str(exc)))

    async def _on_start(self, session: ClientSession, msg: m.StartComputation) -> None:
        comp = self._comp(session, msg.comp_id)
        if comp.host is not None or comp.starting:
            raise ProtocolError(f'computation {comp.name!r} started twice')
        comp.starting = True
        host = ComputationHost(comp.comp_id, comp.name, comp.dest_path,
                               on_broken=partial(self._comp_broken, session, comp),
                               on_provisional=partial(self._provisional, session),
                               on_file=partial(self._job_file, session),
                               on_shutdown=self._shutdown_requested,
                               on_release=self._pump)
        node_globals = {'dispy_node_name': self.name, 'dispy_node_ip_addr': self.ip_addr,
                        'dispy_job_path': comp.dest_path,
                        '_dispy_max_file_size': self.opts.max_file_size}
        try:
            await host.start(comp.code, node_globals, msg.setup_args, spares=self.cpus,
                             in_process=self.opts.unsafe_setup)
            self.hosts.add(host)
        except ComputationError as exc:
            log.warning('computation "%s" from %s failed: %s', comp.name, session.client, exc)
            session.send(m.ComputationReady(comp.comp_id, False, str(exc), comp.dest_path))
            return
        comp.host, comp.code = host, b''
        if comp.comp_id not in session.comps:       # closed while it was starting
            await host.close(run_cleanup=True)
            self.hosts.discard(host)
            return
        session.send(m.ComputationReady(comp.comp_id, True, '', comp.dest_path, host.xfer_dir,
                                        xfer.token_of(host.xfer_dir) if host.xfer_dir else ''))

    def _on_local_results(self, session: ClientSession, msg: m.LocalResults) -> None:
        """The client is on this host and reads our transfer directory (it found the
        token there): large results go to it as paths from now on, on this connection."""
        comp = self._comp(session, msg.comp_id)
        if comp.host is None or not comp.host.xfer_dir:
            raise ProtocolError(f'LocalResults for computation {comp.name!r} without a '
                                'transfer directory')
        session.local_results = True

    def _shutdown_requested(self) -> None:
        """A cleanup function called dispynode_shutdown()."""
        if self.opts.client_shutdown:
            log.warning('dispynode_shutdown() called by a computation\'s cleanup: exiting')
            self.done.set()
        else:
            log.warning('dispynode_shutdown() ignored: the node was not started with '
                        '--client_shutdown')

    def _comp_broken(self, session: ClientSession, comp: NodeComputation, reason: str) -> None:
        """The computation's process died: this node can no longer run its jobs, so drop
        the client; it then reschedules or abandons them as for a lost node."""
        if comp.comp_id in session.comps:
            log.error('computation "%s" from %s: %s; disconnecting the client',
                      comp.name, session.client, reason)
            conn = session.conn
            session.detach()      # before its jobs' failures are reported: they are lost
            if conn is not None:
                conn.abort()
            self._end(session)

    async def _on_close(self, session: ClientSession, msg: m.CloseComputation) -> None:
        comp = session.comps.get(msg.comp_id)
        if comp is not None:
            await self._close_comp(session, comp, msg.terminate)
        session.send(m.ComputationClosed(msg.comp_id))

    async def _close_comp(self, session: ClientSession, comp: NodeComputation,
                          terminate: bool) -> None:
        if session.comps.pop(comp.comp_id, None) is None:
            return
        self.queue = deque(q for q in self.queue if q.comp is not comp)
        for sink in comp.sinks.values():
            sink.abort()
        if comp.host is not None:
            if not terminate:
                comp.host.drop_waiting()
                await comp.idle.wait()
            error = await comp.host.close(run_cleanup=True)
            self.hosts.discard(comp.host)
            if error:
                log.warning('cleanup of "%s" failed:\n%s', comp.name, error)
        if comp.remove_files:
            shutil.rmtree(comp.dest_path, ignore_errors=True)
        if not session.comps:
            session.retained.clear()
            self.clients.discard(session)
            self.owners.discard(session)
            self._client_served()
        log.info('computation "%s" from %s closed', comp.name, session.client)

    def _client_served(self) -> None:
        self.served += 1
        if self.opts.serve and self.served >= self.opts.serve:
            log.info('served %d client(s) (--serve): exiting', self.served)
            self.done.set()


def availability(path: str) -> tuple[float, int, int, float]:
    """(CPU use %, available memory, free disk under ``path``, swap use %) from psutil."""
    return (float(psutil.cpu_percent(None)), int(psutil.virtual_memory().available),
            int(psutil.disk_usage(path).free), float(psutil.swap_memory().percent))


def _same_file(path: str, size: int, sha256: bytes) -> bool:
    """True if ``path`` is a regular file (not a link) of this size and SHA-256."""
    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) != size:
        return False
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest() == sha256


def _safe_name(name: str) -> str:
    cleaned = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:40]
    return cleaned.strip('.') or 'computation'
