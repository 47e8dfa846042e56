"""The dispyscheduler daemon: many client programs share one set of nodes.

::

    SharedJobCluster ──TLS/secret──> SchedulerDaemon ── ClientSession (outlives its link)
       (dials out only)                │ handler table        └─ SharedComputation per comp_id
                                       │ Admission (exclusive)        └─ ForwardingEngine ──> nodes
                                       │ share_cpus (policy) ──set_node_cpus──┘   (one link per
                                       └─ ClientBeacon: nodes found / listed         node, group id)

Every computation gets the JobCluster engine (one implementation of job and
node state) and its own connection to each node it uses; the nodes let all
connections of this scheduler (its ``group`` id) share them.  The scheduler
decides only how many CPUs of each node each computation may use, after every
change (jobs submitted or done, nodes joining or lost, computations admitted or
closed), at most once per event-loop turn.  A client whose connection is lost
keeps its computation for ``zombie_interval`` minutes (jobs go on, replies are
kept); then its jobs are terminated and its files cleaned on every node.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..discovery.addresses import is_loopback, is_routable_ip, primary_address
from ..discovery.beacon import ClientBeacon
from ..errors import DispyError, ProtocolError
from ..execution.staging import StagingError, check_relpath
from ..nodes import NodeAllocate
from ..protocol import messages as m
from ..protocol.discovery import Announce
from ..scheduling.share import Admission, Demand, share_cpus
from ..security.tls import maybe_client_context, maybe_server_context
from ..transport.connection import Connection, Server
from ..transport.session import ClientSession
from ..version import __version__
from .computation import SEND_FILE_DIR, SharedComputation
from .options import SchedulerOptions

log = logging.getLogger('dispylike.scheduler')

#: Seconds between housekeeping rounds (zombie clients, discovery probes).
TICK = 1.0
#: Seconds between attempts to set computations up on known nodes they do not use yet.
REOFFER_EVERY = 5.0
#: File under dest_path_prefix holding the scheduler's id (its group on nodes).
GROUP_FILE = '.scheduler-id'


class SchedulerDaemon:
    """``await start()``; ``await stop()`` closes every computation (idempotent)."""

    def __init__(self, opts: SchedulerOptions) -> None:
        self.opts = opts
        self.prefix = os.path.abspath(opts.dest_path_prefix or os.path.join(
            tempfile.gettempdir(), 'dispylike', 'scheduler'))
        self.group = ''      # set at start: the same after a restart (see _load_group)
        self.node_ssl = maybe_client_context(opts.node_certfile or None,
                                             opts.node_keyfile or None, opts.node_cafile or None)
        self.ip_addr = ''
        self.port = 0
        self.known_nodes: dict[str, tuple[str, int]] = {}   # key -> (host, port)
        self.comps: dict[str, SharedComputation] = {}
        self.sessions: set[ClientSession] = set()
        self.admission = Admission()
        self.beacon: ClientBeacon | None = None
        self._specs = [_node_spec(n) for n in opts.nodes] or [NodeAllocate('*')]
        self._arrivals = 0
        self._submissions = 0
        self._reshare_pending = False
        self._tasks: set[asyncio.Task] = set()
        self._connections: set[asyncio.Task] = set()
        self._housekeeper: asyncio.Task | None = None
        self._server = Server(opts.cluster_secret, self._serve_client, name='dispyscheduler',
                              handshake_timeout=opts.msg_timeout,
                              ssl_context=maybe_server_context(opts.cluster_certfile or None,
                                                               opts.cluster_keyfile or None,
                                                               opts.cluster_cafile or None))
        self._handlers: dict[type, Callable[[ClientSession, Any], Any]] = {
            m.ShareComputation: self._on_share,
            m.FileChunk: self._on_file,
            m.StartComputation: self._on_start,
            m.SubmitJobs: self._on_submit,
            m.CancelJob: self._on_cancel,
            m.AckReplies: lambda s, msg: s.ack(msg.keys),
            m.CloseComputation: self._on_close,
            m.NodeRequest: self._on_node_request,
            m.Heartbeat: lambda s, msg: None,
        }

    # --- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self.group = self._load_group()
        if self.opts.clean and os.path.isdir(self.prefix):  # noqa: ASYNC240 - start-up only
            shutil.rmtree(self.prefix, ignore_errors=True)
        os.makedirs(self.prefix, mode=0o700, exist_ok=True)
        self._save_group()
        port = self.opts.scheduler_port
        if port is None:
            port = config.port_of('SharedSchedulerPort', self.opts.dispy_port)
        hosts = self.opts.hosts or ['']
        for host in hosts:
            self.port = await self._server.listen(host or None, port)
            port = self.port
        self.ip_addr = self.opts.ext_host or hosts[0] or primary_address()
        node_port = config.port_of('NodePort', self.opts.dispy_port)
        for spec in self._specs:
            if not spec.is_pattern:
                self._add_node(spec.ip_addr, spec.port or node_port, spec.host)
        if any(spec.is_pattern for spec in self._specs):
            await self._start_discovery([h for h in hosts if h])
        log.info('dispylike scheduler %s at %s:%d for clients%s; nodes: %s; %s scheduling%s',
                 __version__, self.ip_addr, self.port,
                 ', TLS' if self.opts.cluster_certfile else '',
                 ', '.join(self.opts.nodes) or 'all found', self.opts.policy.value,
                 ', cooperative' if self.opts.cooperative else '')
        self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())

    def _load_group(self) -> str:
        """The id nodes know this scheduler by.  Kept in ``dest_path_prefix`` so that a
        restarted scheduler may use nodes that still hold its old computations' jobs
        (until their zombie_interval ends them) instead of being refused."""
        try:
            with open(os.path.join(self.prefix, GROUP_FILE)) as f:
                group = f.read().strip()
            if group.startswith('dispyscheduler-') and len(group) < 64:
                return group
        except OSError:
            pass
        return 'dispyscheduler-' + os.urandom(8).hex()

    def _save_group(self) -> None:
        path = os.path.join(self.prefix, GROUP_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, 'w') as f:
                f.write(self.group)
        except OSError as exc:
            log.warning('cannot keep the scheduler id in %s: %s', path, exc)

    async def _start_discovery(self, addresses: list[str]) -> None:
        self.beacon = ClientBeacon(self.opts.node_secret, self._on_announce)
        port = self.opts.discovery_port
        if port is None:
            port = config.port_of('ClientPort', self.opts.dispy_port)
        try:
            await self.beacon.start(port, addresses)
        except OSError as exc:
            log.warning('node discovery disabled: cannot listen on UDP port %d: %s', port, exc)
            self.beacon = None
            return
        self._probe()

    def _probe(self) -> None:
        if self.beacon is None:
            return
        port = self.opts.dispy_port
        self.beacon.probe(config.port_of('NodePort', port), self.opts.ipv4_udp_multicast)
        # a dispynetrelay on a listed host probes its subnet(s) for us (as for JobCluster)
        relays = [spec.ip_addr for spec in self._specs
                  if not spec.is_pattern and is_routable_ip(spec.ip_addr)]
        if relays:
            self.beacon.probe_relays(relays, config.port_of('RelayPort', port))

    def _on_announce(self, ann: Announce, source: str) -> None:
        address = ann.ip_addr
        if is_loopback(address) and not is_loopback(source):
            address = source
        if any(spec.matches(address, ann.name) and spec.port in (None, ann.port)
               for spec in self._specs):
            self._add_node(address, ann.port, ann.name)

    def _add_node(self, host: str, port: int, name: str) -> None:
        key = f'{host}:{port}'
        if key not in self.known_nodes:
            log.info('node %s at %s', name, key)
            self.known_nodes[key] = (host, port)
        for comp in self.comps.values():  # new, or back: engines skip nodes they hold
            comp.offer_node(key, host, port)

    async def stop(self) -> None:
        """Close every computation (jobs terminated, nodes cleaned), then the server."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        if self.beacon is not None:
            self.beacon.close()
        await self._server.close()
        for comp in list(self.comps.values()):
            await self._close_comp(comp, terminate=True)
        for session in list(self.sessions):
            if session.conn is not None:
                session.conn.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=10)

    async def _housekeeping(self) -> None:
        last_probe = last_offer = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for session in list(self.sessions):
                gone = session.detached_at and now - session.detached_at > \
                    self.opts.zombie_interval * 60
                if gone:
                    log.warning('client %s gone for %g min (zombie_interval): terminating '
                                'its jobs', session.client, self.opts.zombie_interval)
                    self._spawn(self._end_session(session))
            if self.opts.ping_interval and now - last_probe >= self.opts.ping_interval:
                last_probe = now
                self._probe()
            if now - last_offer >= REOFFER_EVERY:
                last_offer = now      # a node that was down or busy may be usable now
                for comp in list(self.comps.values()):
                    for key, (host, port) in self.known_nodes.items():
                        if key not in comp.engine.links:
                            comp.offer_node(key, host, port, quiet=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('scheduler task failed: %r', task.exception())

    # --- per connection ---------------------------------------------------------
    async def _serve_client(self, conn: Connection) -> None:
        session = ClientSession(conn, os.path.join(self.prefix, '.replies',
                                                   os.urandom(8).hex()))
        me = asyncio.current_task()
        self._connections.add(me)
        violation = False
        try:
            while True:
                msg = await conn.recv()
                if session.conn is not conn:
                    return    # the client attached on a new connection: this one is over
                if type(msg) is m.Attach:
                    session = self._on_attach(session, conn, msg)
                    continue
                session.last_rx = time.monotonic()
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise ProtocolError(f'unexpected message {type(msg).__name__}')
                result = handler(session, msg)
                if asyncio.iscoroutine(result):
                    self._spawn(result)
        except ProtocolError:
            violation = True     # logged by the server; the violator loses its computations
            raise
        finally:
            self._connections.discard(me)
            if session.conn is conn:
                started = any(comp.started for comp in session.comps.values())
                if violation or not started:    # nothing to keep for a client that left
                    self._spawn(self._end_session(session))   # before its jobs could run
                else:
                    session.detach()
                    log.warning('client %s disconnected; its computation(s) go on for %g min '
                                '(zombie_interval)', session.client, self.opts.zombie_interval)

    def _on_attach(self, session: ClientSession, conn: Connection,
                   msg: m.Attach) -> ClientSession:
        comp = self.comps.get(msg.comp_id)
        if comp is None or session.comps:
            reason = 'unknown computation' if comp is None else 'this connection has its own'
            conn.send(m.Attached(msg.comp_id, False, reason, (), 0))
            return session
        target = comp.session
        if target.conn is not None and target.conn is not conn:
            target.conn.abort()
        pending = tuple((uid, 0) for uid in comp.engine.jobs)
        conn.send(m.Attached(msg.comp_id, True, '', pending, len(target.retained)))
        target.attach(conn)
        log.info('client %s attached again (%d job(s) pending, %d kept replies)',
                 target.client, len(pending), len(target.retained))
        return target

    async def _end_session(self, session: ClientSession) -> None:
        for comp in list(session.comps.values()):
            await self._close_comp(comp, terminate=True)
        session.retained.clear()
        self.sessions.discard(session)
        if session.conn is not None:
            session.conn.abort()

    # --- handlers ---------------------------------------------------------------
    def _comp(self, session: ClientSession, comp_id: str) -> SharedComputation:
        comp = session.comps.get(comp_id)
        if comp is None:
            raise ProtocolError(f'unknown computation {comp_id!r}')
        return comp

    def _on_cancel(self, session: ClientSession, msg: m.CancelJob) -> None:
        for comp in session.comps.values():
            comp.cancel(msg.uid)      # a job that already ended: nothing to do

    def _on_share(self, session: ClientSession, msg: m.ShareComputation) -> None:
        if msg.comp_id in self.comps:
            raise ProtocolError(f'computation {msg.comp_id!r} shared twice')
        try:
            if msg.dest_path:
                check_relpath(msg.dest_path)
            for host, _port, _cpus, _blob in msg.nodes:
                if '*' not in host and not _is_ip(host):
                    raise StagingError(f'nodes entry {host!r}: an IP address or a pattern '
                                       '(the client resolves host names)')
        except StagingError as exc:
            session.send(m.Refused(msg.comp_id, str(exc)))
            return
        self._arrivals += 1
        comp = SharedComputation(self, session, msg, self._arrivals)
        session.client = msg.client or session.client
        session.comps[msg.comp_id] = comp
        self.sessions.add(session)
        self.comps[msg.comp_id] = comp
        log.info('computation "%s" from %s%s', msg.name, session.client,
                 ' (exclusive)' if msg.exclusive else '')

    def _on_file(self, session: ClientSession, msg: m.FileChunk) -> None:
        error = self._comp(session, msg.comp_id).store_file(msg)
        if msg.final or error:
            session.send(m.FileStored(msg.comp_id, msg.relpath, error))

    def _on_start(self, session: ClientSession, msg: m.StartComputation) -> None:
        comp = self._comp(session, msg.comp_id)
        if comp.started:
            raise ProtocolError(f'computation {comp.name!r} started twice')
        if comp.refused:
            session.send(m.Refused(comp.comp_id, comp.refused))
            self._spawn(self._close_comp(comp, terminate=True))
            return
        comp.started = True
        session.send(m.ComputationReady(comp.comp_id, True, '', ''))
        admitted = self.admission.arrive(comp.comp_id, comp.exclusive)
        if comp.comp_id not in admitted:
            log.info('computation "%s" of %s waits for %s', comp.name, comp.client,
                     'the others to close (exclusive)' if comp.exclusive
                     else 'an exclusive computation')
        self._admitted(admitted)

    def _admitted(self, comp_ids: list[str]) -> None:
        for comp_id in comp_ids:
            comp = self.comps.get(comp_id)
            if comp is not None:
                log.info('computation "%s" of %s runs now', comp.name, comp.client)
                comp.start()
        self.reshare()

    def _on_submit(self, session: ClientSession, msg: m.SubmitJobs) -> None:
        comp = self._comp(session, msg.comp_id)
        for uid, node, payload in msg.jobs:
            self._submissions += 1
            comp.submit(uid, node, payload, self._submissions)
        self.reshare()

    async def _on_close(self, session: ClientSession, msg: m.CloseComputation) -> None:
        comp = session.comps.get(msg.comp_id)
        if comp is not None:
            await self._close_comp(comp, msg.terminate)
        session.send(m.ComputationClosed(msg.comp_id))

    async def _close_comp(self, comp: SharedComputation, terminate: bool) -> None:
        if self.comps.pop(comp.comp_id, None) is None:
            return
        self._admitted(self.admission.leave(comp.comp_id))
        await comp.close(terminate)
        comp.session.comps.pop(comp.comp_id, None)
        if not comp.session.comps and not comp.session.attached:
            self.sessions.discard(comp.session)
            comp.session.retained.clear()
        self.reshare()

    async def _on_node_request(self, session: ClientSession, msg: m.NodeRequest) -> None:
        comp = self._comp(session, msg.comp_id)
        engine = comp.engine
        uids: tuple = ()
        try:
            if msg.op == 'allocate':
                result = self._allocate(comp, msg.node)
            elif msg.op == 'deallocate':
                result = engine.set_accepting(msg.node, False)
            elif msg.op == 'close':
                result = engine.release_node(msg.node, bool(msg.number), False)
            elif msg.op == 'cpus':
                result = self._set_cpus(comp, msg.node, msg.number)
            elif msg.op == 'jobs':
                key = engine.find_node(msg.node)
                uids = tuple(engine.sched.running_on(key)) if key else ()
                result = 0
            elif msg.op == 'discover':
                self._probe()
                result = 0
            elif msg.op == 'send_file':
                result = await engine.send_file(os.path.join(comp.staging, SEND_FILE_DIR,
                                                             os.path.basename(msg.text)),
                                                msg.node)
            else:
                raise ProtocolError(f'unknown node request {msg.op!r}')
            self.reshare()
        except DispyError as exc:
            if isinstance(exc, ProtocolError):
                raise
            log.warning('%s %s for "%s": %s', msg.op, msg.node, comp.name, exc)
            result = -1
        session.send(m.NodeRequestDone(msg.request, int(result), uids))

    def _allocate(self, comp: SharedComputation, node: str) -> int:
        """allocate_node: a node of this scheduler only (its -n list or found by it)."""
        if comp.engine.find_node(node) is not None:
            return comp.engine.set_accepting(node, True)
        for key, (host, port) in self.known_nodes.items():
            if node in (key, host):
                comp.offer_node(key, host, port, force=True)
                return 0
        return -1

    def _set_cpus(self, comp: SharedComputation, node: str, cpus: int) -> int:
        """set_node_cpus: only with --cooperative (else -1, as dispy)."""
        key = comp.engine.find_node(node)
        if not self.opts.cooperative or key is None:
            return -1
        total = comp.engine.links[key].node.avail_cpus
        cpus = total + cpus if cpus < 0 else min(cpus, total)
        if cpus < 0:
            return -1
        comp.limits[key] = cpus
        self.reshare()
        return cpus

    # --- sharing ----------------------------------------------------------------
    def reshare(self) -> None:
        """Recompute every computation's CPUs per node, once per loop turn."""
        if not self._reshare_pending:
            self._reshare_pending = True
            asyncio.get_running_loop().call_soon(self._reshare)

    def _reshare(self) -> None:
        self._reshare_pending = False
        nodes: dict[str, int] = {}
        demands = []
        for comp in self.comps.values():
            if not comp.running or comp.closing:
                continue
            links = comp.engine.links
            for key, link in links.items():
                nodes[key] = max(nodes.get(key, 0), link.node.avail_cpus)
            usable = {key: cpus for key, cpus in comp.limits.items()   # not deallocated,
                      if key in links and links[key].accepting         # closing or out of
                      and not links[key].releasing}                    # service hours
            pending, oldest = comp.demand()
            demands.append(Demand(comp.comp_id, pending, self.admission.order.get(
                comp.comp_id, comp.number), oldest, usable))
        shares = share_cpus(nodes, demands, self.opts.policy)
        for comp_id, per_node in shares.items():
            comp = self.comps[comp_id]
            for key, cpus in per_node.items():
                comp.set_share(key, cpus)


def _node_spec(entry: str) -> NodeAllocate:
    """A ``-n`` entry: host, address, pattern, or 'host:port' (IPv6: '[addr]:port')."""
    host, sep, port = entry.rpartition(':')
    if sep and port.isdigit() and (host.count(':') == 0 or host.startswith('[')):
        return NodeAllocate(host.strip('[]'), int(port))
    return NodeAllocate(entry)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
