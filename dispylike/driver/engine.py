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
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..discovery.beacon import ClientBeacon
from ..errors import DispyError, ProtocolError
from ..job import DispyJob
from ..nodes import DispyNode, DispyNodeAvailInfo, LocalNode, NodeAllocate
from ..protocol import messages as m
from ..protocol.payload import payload_bytes
from ..scheduling.state import Dispatch, Finalize, Requeued, Scheduler, SendCancel
from ..status import JobStatus, NodeStatus
from . import samehost
from .finder import NodeFinder
from .joining import NodeJoining
from .journaling import Journaling
from .links import EngineConfig, NodeLink
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


class Engine(NodeFinder, NodeJoining, NodeManagement, Journaling):
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
