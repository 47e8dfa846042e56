"""One client computation on the scheduler: its staged files, its jobs, its engine.

::

    client ── ShareComputation, FileChunk*, StartComputation ──> SharedComputation
           ── SubmitJobs / CancelJob ──> ForwardingEngine (the client's engine, unchanged
                                          scheduling core) ──> nodes it is allowed
    client <── JobsRunning, JobReplies (payload unopened), NodeEvent ──┘

The engine is the very one JobCluster uses (dispylike.driver), with its own
connection to each node; the scheduler only decides how many CPUs of each
node it may use (``set_node_cpus``), and passes results on without
unpickling them.  Replies are kept in the client's session until it
acknowledges them, so a client that reconnects (or ``recover_jobs``) gets
them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

from ..driver.engine import Engine, EngineConfig, NodeLink
from ..execution.computation import Package
from ..execution.host import failure_payload
from ..execution.staging import FileBudget, FileSink, StagingError, check_relpath
from ..job import DispyJob
from ..nodes import DispyNode, NodeAllocate
from ..protocol import messages as m
from ..scheduling.share import SharePolicy
from ..status import JobStatus, NodeStatus
from ..transport.session import ClientSession

if TYPE_CHECKING:
    from .daemon import SchedulerDaemon

log = logging.getLogger('dispylike.scheduler')

#: cluster.send_file: the client stages the file under this directory, then asks for it
#: to be sent to a node.
SEND_FILE_DIR = '.send_file'


class ForwardingEngine(Engine):
    """An engine whose results, provisional results and job files go to the client's
    session as they came from the node: the scheduler never unpickles user data."""

    comp: SharedComputation
    LOCAL_RESULTS = False     # results go on to the client as they came, bytes

    def _deliver(self, job: DispyJob, status: JobStatus, start: float, end: float,
                 payload: bytes) -> None:
        self.comp.replies[job._uid] = (start, end, payload)
        self._finish(job, status, None, None, None, None)

    def _deliver_provisional(self, link: NodeLink, job: DispyJob, payload: bytes) -> None:
        self.comp.session.send(m.ProvisionalResult(job._uid, 0, payload))

    def _on_job_file(self, link: NodeLink, msg: m.JobFile) -> None:
        if self.sched.is_current(msg.uid, msg.attempt, link.key):
            link.node.rx += len(msg.data)
            self.comp.session.send(m.JobFile(msg.uid, 0, msg.relpath, msg.data))

    def _prefetch(self, link: NodeLink) -> None:
        # jobs queued on a node beyond a computation's CPUs run before other computations'
        # jobs get there: with fair shares, none are queued
        if self.comp.daemon.opts.policy is not SharePolicy.FAIR:
            super()._prefetch(link)

    def _cpus_at_join(self, link: NodeLink) -> int:
        link.node.cpus = 0        # until the scheduler gives this computation its share
        return 0

    def _setup_args(self, spec: NodeAllocate) -> bytes:
        return self.comp.setup_blobs.get(id(spec), b'')


class SharedComputation:
    """A client's computation, from ShareComputation until it is closed."""

    def __init__(self, daemon: SchedulerDaemon, session: ClientSession,
                 msg: m.ShareComputation, number: int) -> None:
        opts = daemon.opts
        self.daemon = daemon
        self.session = session
        self.comp_id = msg.comp_id
        self.name = msg.name
        self.client = msg.client
        self.exclusive = msg.exclusive
        self.number = number                      # arrival order at the scheduler
        self.staging = os.path.join(daemon.prefix, 'staging', msg.comp_id)
        self.sinks: dict[str, FileSink] = {}
        self.budget = FileBudget(opts.max_files, opts.max_total_file_size)
        self.files: list[tuple[str, str, int]] = []
        self.started = False                      # StartComputation received
        self.refused = ''                         # why it cannot start (a refused file)
        self.running = False                      # admitted: joining nodes
        self.closing = False
        self.replies: dict[int, tuple[float, float, bytes]] = {}
        self.limits: dict[str, int] = {}          # node key -> CPUs set up with (or cooperative)
        self.given: dict[str, int] = {}           # node key -> CPUs the share gives now
        self.seq: dict[int, int] = {}             # uid -> submission number (first come)
        self.setup_blobs: dict[int, bytes] = {}
        self.specs: list[NodeAllocate] = []
        for host, port, cpus, blob in msg.nodes:
            spec = NodeAllocate(host, port or None, cpus)
            self.setup_blobs[id(spec)] = blob
            self.specs.append(spec)
        self._lock = threading.Lock()             # DispyJob wants one; only the loop uses it
        self._running_out: list[tuple[int, str, int]] = []
        self._keys: dict[int, str] = {}           # id(DispyNode) -> node key, while joined
        cfg = EngineConfig(
            comp_id=msg.comp_id, package=Package(msg.name, msg.code, self.files),
            client_name=f'{msg.client} via dispyscheduler', secret=opts.node_secret,
            dest_path=msg.dest_path, remove_files=msg.cleanup or opts.cleanup_nodes,
            reentrant=msg.reentrant, dispy_port=opts.dispy_port, msg_timeout=opts.msg_timeout,
            pulse_interval=opts.pulse_interval, ssl_context=daemon.node_ssl,
            group=daemon.group)
        self.engine = ForwardingEngine(cfg, self, self._job_done, self._status)
        self.engine.comp = self

    # --- set-up -------------------------------------------------------------------
    def store_file(self, msg: m.FileChunk) -> str:
        """Stage a file of the computation here; '' or the reason it was refused."""
        try:
            sink = self.sinks.get(msg.relpath)
            for_node = msg.relpath.startswith(SEND_FILE_DIR + '/')   # cluster.send_file
            if sink is None:
                if self.started and not for_node:
                    raise StagingError('files come before StartComputation')
                check_relpath(msg.relpath)
                os.makedirs(self.staging, mode=0o700, exist_ok=True)
                sink = self.sinks[msg.relpath] = FileSink(self.staging, msg.relpath,
                                                          self.daemon.opts.max_file_size,
                                                          self.budget)
            sink.write(msg.offset, msg.data)
            if msg.final:
                del self.sinks[msg.relpath]
                sink.finish(msg.mode)
                if not for_node:
                    self.files.append((os.path.join(self.staging, msg.relpath), msg.relpath,
                                       msg.mode))
        except (StagingError, OSError) as exc:
            sink = self.sinks.pop(msg.relpath, None)
            if sink is not None:
                sink.abort()
            log.warning('refused file %r of "%s" from %s: %s', msg.relpath, self.name,
                        self.client, exc)
            if not self.started:
                self.refused = f'file {msg.relpath!r}: {exc}'   # it cannot start
            return str(exc)
        return ''

    def start(self) -> None:
        """Admitted: use every node the scheduler knows that the computation allows."""
        self.running = True
        for key, (host, port) in self.daemon.known_nodes.items():
            self.offer_node(key, host, port)

    def offer_node(self, key: str, host: str, port: int, quiet: bool = False,
                   force: bool = False) -> None:
        """A node the scheduler may use: join it if the computation's ``nodes`` allow
        (``force``: allocate_node asked for it)."""
        if not self.running or self.closing or key in self.engine.links:
            return
        for spec in self.specs:
            if spec.matches(host) and spec.port in (None, port):
                self.engine.join_node(spec, host, port, quiet)
                return
        if force:
            self.engine.join_node(NodeAllocate(host, port), host, port, quiet)

    # --- jobs -----------------------------------------------------------------------
    def submit(self, uid: int, node: str, payload: bytes, seq: int) -> None:
        if uid in self.engine.jobs or uid in self.seq:
            # sent again by a client that re-attached: it runs once
            log.debug('job %d of "%s" submitted again: ignored', uid, self.name)
            return
        self.seq[uid] = seq
        job = DispyJob(uid, (), {}, payload, self._lock)
        self.engine.submit(job, node or None)

    def cancel(self, uid: int) -> None:
        job = self.engine.jobs.get(uid)
        if job is not None:
            self.engine.cancel(job)

    def demand(self) -> tuple[int, int]:
        """(jobs pending, submission number of the oldest of them)."""
        jobs = self.engine.jobs
        oldest = self.seq.get(next(iter(jobs)), 0) if jobs else 0
        return len(jobs), oldest

    def _job_done(self, job: DispyJob) -> None:
        self.seq.pop(job._uid, None)
        start, end, payload = self.replies.pop(job._uid, (0.0, 0.0, b''))
        if not payload:
            payload = failure_payload(job.exception or str(job.status.name))
        self.session.reply((job._uid, 0, int(job.status), start, end, payload))
        self.daemon.reshare()

    def _status(self, status: Any, node: DispyNode | None, job: DispyJob | None) -> None:
        if status is JobStatus.Running and job is not None and node is not None:
            if not self._running_out:
                asyncio.get_running_loop().call_soon(self._flush_running)
            self._running_out.append((job._uid, node.ip_addr, node.port))
        elif isinstance(status, NodeStatus) and node is not None:
            if status is NodeStatus.Initialized:
                key = self.engine.find_node(node)
                if key is not None:
                    self._keys[id(node)] = key
                    self.limits[key], self.given[key] = node.cpus, 0
            elif status is NodeStatus.Closed:
                key = self._keys.pop(id(node), '')
                self.limits.pop(key, None)
                self.given.pop(key, None)
            avail = dataclasses.astuple(node.avail_info) if node.avail_info else ()
            cpus = self.limits.get(self._keys.get(id(node), ''), node.cpus)
            self.session.send(m.NodeEvent(int(status), node.ip_addr, node.port, node.name,
                                          cpus, node.avail_cpus, node.platform, avail))
            if status is not NodeStatus.AvailInfo:
                self.daemon.reshare()

    def _flush_running(self) -> None:
        batch, self._running_out = tuple(self._running_out), []
        if batch:
            self.session.send(m.JobsRunning(batch))

    def set_share(self, key: str, cpus: int) -> None:
        if self.given.get(key) != cpus and key in self.engine.links:
            self.given[key] = cpus
            self.engine.set_node_cpus(key, cpus)

    # --- end ------------------------------------------------------------------------
    async def close(self, terminate: bool) -> None:
        """Release every node (cleanup runs there), drop staged files.  Idempotent."""
        if self.closing:
            return
        self.closing = True
        if terminate:
            self.engine.cancel_all()
        await self.engine.shutdown(terminate=terminate)
        for sink in self.sinks.values():
            sink.abort()
        await asyncio.to_thread(shutil.rmtree, self.staging, True)
        log.info('computation "%s" of %s closed', self.name, self.client)
