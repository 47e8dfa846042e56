"""The client engine: runs on the I/O loop, talks to nodes, drives the scheduler.

::

    JobCluster (any thread) ──call_soon_threadsafe──> Engine (I/O loop thread)
         submit / cancel                                 │ Scheduler (pure) decides
                                                         v
                             NodeLink ── RunJobs (batched per loop turn) ──> node
                                 ^                                           │
                                 └────────── JobReplies ── AckReplies ───────┘

Every dispatch carries an attempt id; the scheduler accepts exactly one final
reply per job and drops stale or duplicate ones.  A lost connection is a lost
node: its jobs are rescheduled (reentrant) or abandoned.  Results are
unpickled here; user callbacks are handed to the callback thread.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import pickle
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .. import config
from ..discovery.beacon import ClientBeacon
from ..errors import ComputationError, DispyError, ProtocolError
from ..execution.computation import Package, classify_depends
from ..job import DispyJob
from ..nodes import DispyNode, DispyNodeAvailInfo, LocalNode, NodeAllocate
from ..persistence.journal import RecoverJournal
from ..protocol import messages as m
from ..protocol.payload import payload_bytes
from ..scheduling.state import Dispatch, Finalize, Requeued, Scheduler, SendCancel
from ..status import JobStatus, NodeStatus
from ..transport.connection import Connection, connect
from ..transport.loop import set_event
from . import samehost
from .finder import NodeFinder
from .journaling import Journaling
from .local import LocalNodeProcess
from .management import NodeManagement

log = logging.getLogger('dispylike')

#: A node silent for this many pulse intervals is a zombie (dispy's rule).
ZOMBIE_PULSES = 5
#: Jobs shorter than this (seconds, moving average per node) are prefetched: the node
#: holds PREFETCH_PER_CPU queued jobs per CPU, so a CPU never waits for a round trip to
#: the client (the node hands one job per CPU to the computation process, where the
#: next job starts as one ends; the others refill it without the client).  Longer
#: jobs are not, so work stays free to go to nodes that become idle.
PREFETCH_BELOW = 0.05
PREFETCH_PER_CPU = 2
#: Jobs shorter than a round trip to the node (seconds) get a deeper queue: with
#: warm workers a trivial job takes ~0.1 ms and a round trip client -> node ->
#: worker and back ~1 ms, so 2 per CPU left a fifth of the CPUs idle (W1w with 8 per
#: CPU: +21% and +9% in two A/Bs; 16 or 32 no better).  At most 8 x 2 ms of work
#: waits per CPU.
PREFETCH_DEEP_BELOW = 0.002
PREFETCH_DEEP_PER_CPU = 8
#: A node whose CPUs all have a job gets more only once this fraction of its prefetch
#: depth can go at once, so queues are refilled in batches instead of one job per
#: reply: W1 (fork per job, bench/profile.py --each, 2 pairs) 2.6 -> 8.0 jobs per
#: message, client CPU 0.157 -> 0.137-0.143 ms per job, node 0.130-0.133 -> 0.123-0.127,
#: 1,050-1,056 -> 1,061-1,086 jobs/s; W1w (latency-bound) unchanged.
REFILL_FRACTION = 0.5


def prefetch_per_cpu(avg_job_time: float) -> int:
    """Jobs to keep queued on a node per CPU for jobs that take this long on average."""
    if avg_job_time >= PREFETCH_BELOW:
        return 0
    return PREFETCH_DEEP_PER_CPU if avg_job_time < PREFETCH_DEEP_BELOW else PREFETCH_PER_CPU


@dataclass
class EngineConfig:
    comp_id: str
    package: Package
    client_name: str
    secret: str = ''
    dest_path: str = ''
    remove_files: bool = True
    reentrant: bool = False
    dispy_port: int = config.DispyPort
    msg_timeout: float = config.MsgTimeout
    local_addr: str | None = None     # source address for connections to nodes
    client_addresses: list[str] = field(default_factory=list)  # for discovery
    ipv4_multicast: bool = False
    ping_interval: float | None = None
    pulse_interval: float = 0.0        # 0 = no pulses (a lost TCP link still counts)
    ssl_context: ssl.SSLContext | None = None
    tls_files: tuple[str, str, str] = ('', '', '')   # certfile, keyfile, cafile (local nodes)
    journal: RecoverJournal | None = None            # the recover file
    group: str = ''          # a dispyscheduler's id: its engines share the nodes they use


@dataclass
class NodeLink:
    key: str
    conn: Connection
    node: DispyNode
    outbox: list = field(default_factory=list)
    avg_job_time: float = 1.0        # moving average, seconds (start pessimistic)
    prefetch_per_cpu: int = 0        # jobs queued per CPU on the node (0: none)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None
    spec: NodeAllocate | None = None
    releasing: bool = False          # close_node / resetup_node in progress
    last_rx: float = 0.0             # monotonic time anything last came from the node
    idle: asyncio.Event = field(default_factory=set_event)   # no job of ours runs there
    user_paused: bool = False        # deallocate_node
    service_paused: bool = False     # the node is out of service hours
    shared: samehost.SharedDir | None = None   # the node's transfer directory, shared

    @property
    def accepting(self) -> bool:
        return not (self.user_paused or self.service_paused)


class Engine(NodeFinder, NodeManagement, Journaling):
    """All mutable cluster state lives here and is touched only on the I/O loop."""

    #: Large results from a node on this host are read from its files (see samehost).
    LOCAL_RESULTS = True

    def __init__(self, cfg: EngineConfig, cluster: Any,
                 on_job_done: Callable[[DispyJob], None],
                 on_status: Callable[[int, DispyNode | None, DispyJob | None], None],
                 on_job_update: Callable[[DispyJob], None] | None = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.sched = Scheduler(reentrant=cfg.reentrant, max_losses=config.MaxJobLosses)
        self.links: dict[str, NodeLink] = {}
        self.nodes: list[DispyNode] = []      # every node ever used, for print_status
        self.jobs: dict[int, DispyJob] = {}
        self._on_job_done = on_job_done
        self._on_status = on_status
        self._on_job_update = on_job_update     # provisional results: job_status only
        self._locals: list[LocalNodeProcess] = []
        self._joins: set[asyncio.Task] = set()
        self._flush_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None   # kept: see stream._loop
        self._closing = False
        self.specs: list[NodeAllocate] = []
        self._known: set[str] = set()            # host:port joined or joining
        self._closing_links: set[str] = set()    # released on purpose: not 'lost'
        self._tasks: set[asyncio.Task] = set()   # pulses and rejoin attempts
        self._file_saves: set[asyncio.Task] = set()   # files sent by jobs, being saved
        self._file_waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.beacon: ClientBeacon | None = None
        self._discovery: asyncio.Task | None = None
        self._former: dict[str, DispyNode] = {}  # lost nodes that may still hold our jobs
        # recover file: records are written ahead of each RunJobs and every JOURNAL_EVERY s
        self.journal = cfg.journal
        self._journal_jobs: list[DispyJob] = []
        self._journal_dispatches: list[tuple[int, str, int]] = []
        self._journal_ids: list[DispyJob] = []
        self._journal_task: asyncio.Task | None = None

    # --- nodes ------------------------------------------------------------------
    async def add_nodes(self, specs: list[NodeAllocate]) -> None:
        """Dial listed nodes; if any entry is a pattern, discover the rest by UDP."""
        self.specs += specs
        for spec in specs:
            if not spec.is_pattern:
                self._start_join(spec, None, None)
        if any(spec.is_pattern for spec in self.specs) and self.beacon is None:
            await self._start_discovery()

    def join_node(self, spec: NodeAllocate, host: str, port: int, quiet: bool = False) -> None:
        """Dial this node (found by someone else, e.g. a dispyscheduler) and set it up;
        ``quiet``: a failure is logged at debug level (a retry)."""
        self._start_join(spec, host, port, quiet)

    def _start_join(self, spec: NodeAllocate, host: str | None, port: int | None,
                    quiet: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._join(spec, host, port, quiet))
        self._joins.add(task)
        task.add_done_callback(self._join_done)

    def _join_done(self, task: asyncio.Task) -> None:
        self._joins.discard(task)
        if not self._joins and not self.links and not self._closing and self.beacon is None:
            log.warning('no node could be used for "%s"; %d job(s) wait for one',
                        self.cfg.package.name, len(self.jobs))

    async def _join(self, spec: NodeAllocate, host: str | None, port: int | None,
                    quiet: bool = False) -> None:
        host = host or spec.ip_addr
        port = port or spec.port or config.port_of('NodePort', self.cfg.dispy_port)
        # an embedded node gets its port when it starts: it is its own key until then
        key = f'local-{id(spec)}' if isinstance(spec, LocalNode) else f'{host}:{port}'
        if key in self._known:
            return
        self._known.add(key)
        try:
            await self._connect_and_setup(spec, host, port, quiet)
        finally:
            if key not in self.links or isinstance(spec, LocalNode):
                self._known.discard(key)

    async def _connect_and_setup(self, spec: NodeAllocate, host: str, port: int,
                                 quiet: bool = False) -> None:
        warn = log.debug if quiet else log.warning
        try:
            if isinstance(spec, LocalNode):
                local = await LocalNodeProcess.launch(spec.node_cpus, self.cfg.secret, spec.debug,
                                                      tls_files=self.cfg.tls_files)
                self._locals.append(local)
                host, port = local.host, local.port
            source = None
            if self.cfg.local_addr and (':' in self.cfg.local_addr) == (':' in host):
                source = (self.cfg.local_addr, 0)
            conn = await connect(host, port, self.cfg.secret, timeout=self.cfg.msg_timeout,
                                 local_addr=source, ssl_context=self.cfg.ssl_context)
        except DispyError as exc:
            warn('node %s:%s is not used: %s', host, port, exc)
            return
        try:
            link = await self._attach(conn, spec, f'{host}:{port}')
            if link is None:
                link = await self._setup(conn, spec, f'{host}:{port}')
        except (DispyError, OSError, asyncio.TimeoutError) as exc:
            warn('node %s:%s is not used: %s', host, port, exc)
            conn.abort()
            return
        except asyncio.CancelledError:
            conn.abort()
            raise
        if link is None:
            await conn.close()
            return
        # joined even if the cluster is closing: shutdown then releases the node
        # properly (CloseComputation), so the next client finds it free at once
        self.links[link.key] = link
        self.nodes.append(link.node)
        link.last_rx = time.monotonic()
        link.reader = asyncio.get_running_loop().create_task(self._read(link))
        if self.cfg.pulse_interval:
            self._tasks.add(asyncio.get_running_loop().create_task(self._pulse(link)))
        self._on_status(NodeStatus.Initialized, link.node, None)
        if self.journal is not None:
            self.journal.node(link.key, host, port, link.node.name)
        log.info('node %s (%s) joined with %d CPU(s)', link.node.name, link.key, link.node.cpus)
        self._apply(self.sched.add_node(link.key, self._cpus_at_join(link)))

    def _cpus_at_join(self, link: NodeLink) -> int:
        """CPUs a node that just joined is given (a dispyscheduler gives 0 and then its
        share)."""
        return link.node.cpus

    async def _attach(self, conn: Connection, spec: NodeAllocate, key: str) -> NodeLink | None:
        """A node we lost may still hold our computation (its link broke, then healed):
        take it over again.  The jobs it ran for us were rescheduled or abandoned when
        it was lost, so what still runs there is cancelled and late replies dropped."""
        node = self._former.get(key)
        if node is None or isinstance(spec, LocalNode):
            return None
        conn.send(m.Attach(self.cfg.comp_id))
        reply = await asyncio.wait_for(conn.recv(), self.cfg.msg_timeout)
        if not isinstance(reply, m.Attached):
            raise ProtocolError(f'expected Attached, got {type(reply).__name__}')
        if not reply.ok:
            log.debug('node %s no longer has our computation (%s): setting it up again',
                      key, reply.reason)
            del self._former[key]
            return None
        del self._former[key]
        for uid, attempt in reply.running:
            if not self.sched.is_current(uid, attempt, key):
                conn.send(m.CancelJob(uid, attempt))
        node.busy = 0
        log.info('node %s (%s) is back with our computation: %d stale job(s) cancelled there',
                 node.name, key, len(reply.running))
        return NodeLink(key, conn, node, spec=spec)

    async def _setup(self, conn: Connection, spec: NodeAllocate, key: str) -> NodeLink | None:
        timeout = self.cfg.msg_timeout
        conn.send(m.NodeInfoRequest(self.cfg.group))
        info = await asyncio.wait_for(conn.recv(), timeout)
        if not isinstance(info, m.NodeInfo):
            raise ProtocolError(f'expected NodeInfo, got {type(info).__name__}')
        if info.busy_with:
            raise ComputationError(f'node {info.name} is in use by {info.busy_with}')
        avail = DispyNodeAvailInfo(*info.avail)
        cpus = spec.allocate(self.cluster, info.ip_addr, info.name, info.cpus, avail,
                             info.platform)
        if not isinstance(cpus, int) or cpus <= 0:
            log.info('node %s (%s) skipped: allocate() returned %r', info.name, key, cpus)
            return None
        cpus = min(cpus, info.cpus)
        cfg = self.cfg
        conn.send(m.SetupComputation(cfg.comp_id, cfg.package.name, cfg.client_name,
                                     cfg.dest_path, cfg.package.code, cfg.remove_files,
                                     float(cfg.pulse_interval or 0.0)))
        node = DispyNode(info.ip_addr, info.port, info.name, cpus, info.platform)
        node.avail_cpus, node.avail_info = info.cpus, avail
        files = list(cfg.package.files) + classify_depends(spec.depends)[2]
        for path, relpath, mode in files:
            if not cfg.remove_files and await self._node_has(conn, path, relpath, mode):
                continue
            node.tx += await self._send_file(conn, path, relpath, mode)
        conn.send(m.StartComputation(cfg.comp_id, self._setup_args(spec)))
        while True:
            reply = await conn.recv()
            if isinstance(reply, m.Refused):
                raise ComputationError(f'node {info.name} refused: {reply.reason}')
            if isinstance(reply, m.FileStored):
                if reply.error:
                    raise ComputationError(f'node {info.name} refused file '
                                           f'{reply.relpath!r}: {reply.error}')
                continue
            if isinstance(reply, m.ComputationReady):
                break
            raise ProtocolError(f'unexpected {type(reply).__name__} during setup')
        if not reply.ok:
            self._on_status(NodeStatus.Closed, node, None)   # the node failed: say so
            raise ComputationError(f'on {info.name}: {reply.error}')
        shared = samehost.shared_dir(reply.xfer_dir, reply.xfer_token)
        if shared is not None and self.LOCAL_RESULTS:
            conn.send(m.LocalResults(cfg.comp_id))
        return NodeLink(key, conn, node, spec=spec, shared=shared)

    def _setup_args(self, spec: NodeAllocate) -> bytes:
        return cloudpickle.dumps(spec.setup_args, protocol=5) if spec.setup_args else b''

    async def _read(self, link: NodeLink) -> None:
        reason = 'connection closed'
        try:
            while True:
                msg = await link.conn.recv()
                link.last_rx = time.monotonic()
                if isinstance(msg, m.JobReplies):
                    self._on_replies(link, msg.replies)
                elif isinstance(msg, m.ProvisionalResult):
                    self._on_provisional(link, msg)
                elif isinstance(msg, m.JobFile):
                    self._on_job_file(link, msg)
                elif isinstance(msg, m.FileStored):
                    waiter = self._file_waiters.pop((link.key, msg.relpath), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(msg.error)
                elif isinstance(msg, m.Pulse):
                    link.node.avail_info = DispyNodeAvailInfo(*msg.avail)
                    link.node.update_time = time.time()
                    self._on_status(NodeStatus.AvailInfo, link.node, None)
                elif isinstance(msg, m.ComputationClosed):
                    link.closed.set()
                elif isinstance(msg, m.Refused):
                    log.warning('node %s refused: %s', link.node.name, msg.reason)
                elif isinstance(msg, m.ServiceChange):
                    self._on_service_change(link, msg)
                else:
                    raise ProtocolError(f'unexpected {type(msg).__name__}')
        except (DispyError, OSError) as exc:
            reason = str(exc)
        finally:
            link.closed.set()
            self._node_lost(link, reason)

    def _on_service_change(self, link: NodeLink, msg: m.ServiceChange) -> None:
        """The node stops or resumes taking jobs (service hours, shutdown).  When it
        ends service it closes the link itself: its jobs are then treated as lost."""
        log.warning('node %s (%s): %s', link.node.name, link.key, msg.reason)
        if msg.ending:
            self._former.pop(link.key, None)
        link.service_paused = not msg.serving
        self._apply(self.sched.set_accepting(link.key, link.accepting))

    def _on_provisional(self, link: NodeLink, msg: m.ProvisionalResult) -> None:
        job = self.jobs.get(msg.uid)
        if job is None or not self.sched.is_current(msg.uid, msg.attempt, link.key):
            return  # from an attempt that no longer counts
        self._deliver_provisional(link, job, msg.payload)

    def _deliver_provisional(self, link: NodeLink, job: DispyJob, payload: bytes) -> None:
        try:
            job.result = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - a class missing here: report, go on
            log.warning('provisional result of job %s could not be unpickled: %r', job.id, exc)
            return
        job.status = JobStatus.ProvisionalResult
        self._on_status(JobStatus.ProvisionalResult, link.node, job)
        if self._on_job_update is not None:
            self._on_job_update(job)

    async def _pulse(self, link: NodeLink) -> None:
        """Heartbeat the node; a node silent for 5 pulse intervals is a zombie: drop it
        (its jobs are rescheduled or abandoned) and keep trying to get it back."""
        interval = self.cfg.pulse_interval
        try:
            while link.key in self.links and self.links[link.key] is link:
                await asyncio.sleep(interval)
                silent = time.monotonic() - link.last_rx
                if silent > ZOMBIE_PULSES * interval:
                    log.warning('node %s (%s) silent for %.1f s: zombie', link.node.name,
                                link.key, silent)
                    link.conn.abort()
                    return
                link.conn.send(m.Heartbeat())
        except DispyError:
            return
        finally:
            self._tasks.discard(asyncio.current_task())

    async def _rejoin(self, spec: NodeAllocate, key: str) -> None:
        """Dial a lost node again until it is back (or the cluster closes)."""
        host, port = key.rsplit(':', 1)
        try:
            while not self._closing and key not in self.links:
                await asyncio.sleep(max(1.0, self.cfg.pulse_interval or 2.0))
                if key not in self._known:
                    await self._join(spec, host, int(port), quiet=True)
        finally:
            self._tasks.discard(asyncio.current_task())

    def _node_lost(self, link: NodeLink, reason: str) -> None:
        if self.links.pop(link.key, None) is None:
            return
        self._known.discard(link.key)
        if (not self._closing and link.key not in self._closing_links and link.spec is not None
                and not isinstance(link.spec, LocalNode)):
            if not link.service_paused:    # a node that ended service dropped our work
                self._former[link.key] = link.node
            self._tasks.add(asyncio.get_running_loop().create_task(
                self._rejoin(link.spec, link.key)))
        if not self._closing and link.key not in self._closing_links:
            log.warning('lost node %s (%s): %s', link.node.name, link.key, reason)
        link.conn.abort()
        link.node.busy = 0
        link.idle.set()
        self._on_status(NodeStatus.Closed, link.node, None)
        self._apply(self.sched.remove_node(link.key, f'node {link.node.name} lost'))
        if not self.links and self.jobs and not self._closing:
            log.warning('no node left for "%s"; %d job(s) wait for one',
                        self.cfg.package.name, len(self.jobs))

    def find_node(self, node: Any) -> str | None:
        """The link key for a DispyNode, IP address or host name (None if unknown)."""
        for link in self.links.values():
            n = link.node
            same = isinstance(node, DispyNode) and (node.ip_addr, node.port) == (n.ip_addr, n.port)
            if node is n or same or node in (n.ip_addr, n.name, link.key):
                return link.key
        return None

    # --- jobs -------------------------------------------------------------------
    def submit(self, job: DispyJob, node: Any = None) -> None:
        self.jobs[job._uid] = job
        if self.journal is not None:
            self._journal_jobs.append(job)
            if self._journal_task is None:
                self._journal_task = asyncio.get_running_loop().create_task(
                    self._journal_writer())
        if node is None:
            self._apply(self.sched.submit(job._uid))
            return
        key = self.find_node(node)
        if key is None:
            self._apply(self.sched.submit(job._uid, node=('unknown', repr(node))))
        else:
            self._apply(self.sched.submit(job._uid, node=key))

    def cancel(self, job: DispyJob) -> None:
        self._apply(self.sched.cancel(job._uid))

    def _apply(self, actions: list) -> None:
        for action in actions:
            if type(action) is Dispatch:
                self._dispatch(action)
            elif type(action) is SendCancel:
                link = self.links.get(action.node)
                if link is not None:
                    link.conn.send(m.CancelJob(action.uid, action.attempt))
            elif type(action) is Finalize:
                job = self.jobs.pop(action.uid, None)
                if job is not None:
                    self._finish(job, action.status, None, None, None, action.reason)
            elif type(action) is Requeued:
                job = self.jobs.get(action.uid)
                if job is not None:
                    job.status, job.ip_addr, job._node = JobStatus.Created, None, None

    def _dispatch(self, action: Dispatch) -> None:
        link = self.links[action.node]
        job = self.jobs[action.uid]
        payload = job._payload
        if link.shared is not None:
            payload = link.shared.arguments(action.uid, action.attempt, payload)
        link.outbox.append((action.uid, action.attempt, payload_bytes(payload)))
        node = link.node
        node.busy += 1
        link.idle.clear()
        node.tx += len(job._payload)
        job.status, job.ip_addr, job.start_time, job._node = (JobStatus.Running, node.ip_addr,
                                                              time.time(), node)
        if self.journal is not None:
            self._journal_dispatches.append((action.uid, action.node, action.attempt))
        self._on_status(JobStatus.Running, node, job)
        if not self._flush_pending:
            self._flush_pending = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._journal_sync()    # write-ahead: the recover file knows before the node does
        for link in self.links.values():
            if link.outbox:
                batch, link.outbox = tuple(link.outbox), []
                link.conn.send(m.RunJobs(self.cfg.comp_id, batch))

    def _on_replies(self, link: NodeLink, replies: tuple) -> None:
        acks = []
        shared = link.shared
        for uid, attempt, status, start, end, payload in replies:
            acks.append((uid, attempt))
            if shared is not None:
                shared.replied(uid, attempt)
            status = JobStatus(status)      # final: checked when decoded
            final, actions = self.sched.reply(uid, attempt, link.key, status)
            if final is None:
                log.debug('dropped stale reply for job %s attempt %s from %s', uid, attempt,
                          link.key)
                continue
            node = link.node
            node.busy -= 1
            if node.busy == 0:
                link.idle.set()
            node.jobs_done += 1
            try:
                payload = samehost.result(shared if self.LOCAL_RESULTS else None, payload)
            except ProtocolError as exc:
                log.error('job %s: bad reply from %s: %s', uid, link.key, exc)
                payload = pickle.dumps((None, None, None, f'its result was lost: {exc}'))
            node.rx += len(payload)
            if end > start:
                node.cpu_time += end - start
                self._note_job_time(link, end - start)
            self._deliver(self.jobs.pop(uid), final, start, end, payload)
            if type(payload) is mmap.mmap:
                payload.close()
            self._apply(actions)
        link.conn.send(m.AckReplies(tuple(acks)))

    def _deliver(self, job: DispyJob, status: JobStatus, start: float, end: float,
                 payload: bytes) -> None:
        """A job's final reply: unpickle it and finish the job (a dispyscheduler
        overrides this to pass the payload on unopened)."""
        result, stdout, stderr, exc = decode_reply(payload)
        if status is JobStatus.Cancelled:
            exc = exc or 'cancelled'
        self._finish(job, status, result, stdout, stderr, exc)

    def _note_job_time(self, link: NodeLink, seconds: float) -> None:
        link.avg_job_time += (seconds - link.avg_job_time) / 8
        depth = prefetch_per_cpu(link.avg_job_time)
        if depth != link.prefetch_per_cpu:
            link.prefetch_per_cpu = depth
            self._prefetch(link)

    def _prefetch(self, link: NodeLink) -> None:
        jobs = link.prefetch_per_cpu * link.node.cpus
        self._apply(self.sched.set_prefetch(link.key, jobs, int(jobs * REFILL_FRACTION)))

    def _finish(self, job: DispyJob, status: JobStatus, result: Any, stdout: str | None,
                stderr: str | None, exception: str | None) -> None:
        job._finish(status, result, stdout, stderr, exception, time.time())
        if self.journal is not None:
            self.journal.done(job._uid)
        self._on_status(status, job._node, job)
        self._on_job_done(job)

    # --- shutdown ---------------------------------------------------------------
    def cancel_all(self) -> None:
        for uid in list(self.jobs):
            self._apply(self.sched.cancel(uid))

    async def shutdown(self, terminate: bool, timeout: float = 30.0) -> None:
        """Close the computation on every node, stop embedded nodes (idempotent)."""
        self._closing = True
        if self._discovery is not None:
            self._discovery.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.beacon is not None:
            self.beacon.close()
        joins = list(self._joins)
        if joins:
            # a join about to finish is let finish: cancelling a connection attempt at
            # the wrong instant can leak its socket (asyncio before 3.12)
            await asyncio.wait(joins, timeout=2)
            for task in joins:
                task.cancel()
            await asyncio.wait(joins, timeout=10)
        links = list(self.links.values())
        for link in links:
            try:
                link.conn.send(m.CloseComputation(self.cfg.comp_id, terminate))
            except DispyError:
                link.closed.set()
        if links:
            waits = [asyncio.ensure_future(link.closed.wait()) for link in links]
            await asyncio.wait(waits, timeout=timeout)
            for wait in waits:
                wait.cancel()
        for link in links:
            await link.conn.close()
            if link.reader is not None:
                link.reader.cancel()
        await self._wait_file_saves()          # no more can start: the readers are gone
        for local in self._locals:
            await local.stop()
        self._locals.clear()
        for uid in list(self.jobs):
            self._apply([Finalize(uid, JobStatus.Abandoned, 'the cluster was closed')])
        self._close_journal()
        for _ in range(3):  # aborted transports close their sockets on the next turns
            await asyncio.sleep(0)


def decode_reply(payload: bytes) -> tuple[Any, str | None, str | None, str | None]:
    try:
        result, stdout, stderr, exc = pickle.loads(payload)
        return result, stdout, stderr, exc
    except Exception as err:  # user classes may be missing here: report, don't crash
        return None, None, None, f'the result could not be unpickled on the client: {err!r}'
