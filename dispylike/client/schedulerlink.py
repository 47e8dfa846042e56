"""SharedJobCluster's engine: one computation at a dispyscheduler, over one link.

::

    SharedJobCluster ──> SharedEngine (I/O loop) ══ one TCP link ══> dispyscheduler ──> nodes
      submit, cancel,       │ SubmitJobs (batched per loop turn) ──>   (an engine per
      node calls            │ <── JobsRunning, NodeEvent                computation)
                            └ <── JobReplies ──> AckReplies

The client only dials out (no inbound port: works behind NAT and in
containers).  If the link breaks, the engine dials again and re-attaches to
its computation; the scheduler kept its replies meanwhile, and jobs it never
received are sent again.  Scheduling, pulses with nodes and rescheduling are
the scheduler's; results are unpickled here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import config
from ..driver.engine import decode_reply
from ..driver.journaling import Journaling
from ..driver.management import save_job_file, stream_file
from ..errors import ComputationError, DispyError, ProtocolError
from ..execution.computation import Package
from ..job import DispyJob
from ..nodes import DispyNode, DispyNodeAvailInfo
from ..persistence.journal import RecoverJournal
from ..protocol import messages as m
from ..protocol.payload import payload_bytes
from ..status import JobStatus, NodeStatus
from ..transport.connection import Connection, connect

log = logging.getLogger('dispylike')

#: Seconds between attempts to reach a scheduler whose link broke.
REDIAL_EVERY = 2.0
#: Files a client stages for cluster.send_file go under this directory on the scheduler.
SEND_FILE_DIR = '.send_file'


@dataclass
class SharedConfig:
    comp_id: str
    package: Package
    client_name: str
    host: str
    port: int
    secret: str = ''
    dest_path: str = ''
    cleanup: bool = True
    reentrant: bool = False
    exclusive: bool = False
    nodes: tuple = ()
    msg_timeout: float = config.MsgTimeout
    local_addr: str | None = None
    ssl_context: ssl.SSLContext | None = None
    journal: RecoverJournal | None = None


class SharedEngine(Journaling):
    """The client's side of one computation at a dispyscheduler (I/O loop only)."""

    def __init__(self, cfg: SharedConfig, on_job_done: Callable[[DispyJob], None],
                 on_status: Callable[[int, DispyNode | None, DispyJob | None], None],
                 on_job_update: Callable[[DispyJob], None]) -> None:
        self.cfg = cfg
        self.key = f'{cfg.host}:{cfg.port}'
        self.jobs: dict[int, DispyJob] = {}
        self.nodes: list[DispyNode] = []
        self._by_key: dict[str, DispyNode] = {}
        self._on_job_done = on_job_done
        self._on_status = on_status
        self._on_job_update = on_job_update
        self.conn: Connection | None = None
        self._outbox: list[tuple[int, str, bytes]] = []
        self._flush_pending = False
        self._closing = False
        self._closed = asyncio.Event()
        self._requests = itertools.count(1)
        self._waiters: dict[Any, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._reattacher: asyncio.Task | None = None   # dials a lost scheduler again
        self._resubmit: tuple[set[int], int] | None = None   # after re-attaching
        self._sent_on_link: set[int] = set()
        self.journal = cfg.journal
        self._journal_jobs: list[DispyJob] = []
        self._journal_dispatches: list[tuple[int, str, int]] = []
        self._journal_ids: list[DispyJob] = []
        self._journal_task: asyncio.Task | None = None

    # --- set-up -------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        conn = await self._dial()
        try:
            conn.send(m.ShareComputation(cfg.comp_id, cfg.package.name, cfg.client_name,
                                         cfg.dest_path, cfg.package.code, cfg.cleanup, 0.0,
                                         cfg.reentrant, cfg.exclusive, cfg.nodes))
            for path, relpath, mode in cfg.package.files:
                await stream_file(conn, cfg.comp_id, path, relpath, mode)
            conn.send(m.StartComputation(cfg.comp_id, b''))
            while True:
                reply = await asyncio.wait_for(conn.recv(), cfg.msg_timeout * 3)
                if isinstance(reply, m.Refused):
                    raise ComputationError(f'the scheduler refused: {reply.reason}')
                if isinstance(reply, m.FileStored) and reply.error:
                    raise ComputationError(f'the scheduler refused file {reply.relpath!r}: '
                                           f'{reply.error}')
                if isinstance(reply, m.ComputationReady):
                    break
        except BaseException:
            conn.abort()
            raise
        if self.journal is not None:
            self.journal.node(self.key, cfg.host, cfg.port, 'dispyscheduler')
        self._use(conn)
        log.info('computation "%s" shared through the scheduler at %s', cfg.package.name,
                 self.key)

    async def _dial(self) -> Connection:
        cfg = self.cfg
        source = (cfg.local_addr, 0) if cfg.local_addr else None
        return await connect(cfg.host, cfg.port, cfg.secret, timeout=cfg.msg_timeout,
                             local_addr=source, ssl_context=cfg.ssl_context)

    def _use(self, conn: Connection) -> None:
        self.conn = conn
        self._sent_on_link = set()
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))
        self._flush()

    # --- jobs -----------------------------------------------------------------------
    def submit(self, job: DispyJob, node: Any = None) -> None:
        self.jobs[job._uid] = job
        if self.journal is not None:
            self._journal_jobs.append(job)
            self._journal_dispatches.append((job._uid, self.key, 0))
            if self._journal_task is None:
                self._journal_task = asyncio.get_running_loop().create_task(
                    self._journal_writer())
        self._outbox.append((job._uid, _node_name(node), payload_bytes(job._payload)))
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._journal_sync()
        if self._outbox and self.conn is not None and not self.conn.closed:
            batch, self._outbox = tuple(self._outbox), []
            if self._resubmit is not None:      # re-attaching: remember what this link got
                self._sent_on_link.update(uid for uid, _, _ in batch)
            try:
                self.conn.send(m.SubmitJobs(self.cfg.comp_id, batch))
            except DispyError:
                pass        # the link is gone: the jobs are sent again after re-attaching

    def cancel(self, job: DispyJob) -> None:
        self._send(m.CancelJob(job._uid, 0))

    def cancel_all(self) -> None:
        for uid in list(self.jobs):
            self._send(m.CancelJob(uid, 0))

    def _send(self, msg: Any) -> None:
        if self.conn is not None:
            try:
                self.conn.send(msg)
            except DispyError:
                pass

    # --- from the scheduler ----------------------------------------------------------
    async def _read(self, conn: Connection) -> None:
        reason = 'connection closed'
        try:
            while True:
                msg = await conn.recv()
                if isinstance(msg, m.JobReplies):
                    self._on_replies(msg.replies)
                elif isinstance(msg, m.JobsRunning):
                    self._on_running(msg.jobs)
                elif isinstance(msg, m.NodeEvent):
                    self._on_node_event(msg)
                elif isinstance(msg, m.ProvisionalResult):
                    self._on_provisional(msg)
                elif isinstance(msg, m.JobFile):
                    await asyncio.to_thread(save_job_file, msg.relpath, msg.data, 'scheduler')
                elif isinstance(msg, m.NodeRequestDone):
                    self._resolve(msg.request, msg)
                elif isinstance(msg, m.FileStored):
                    self._resolve(('file', msg.relpath), msg.error)
                elif isinstance(msg, m.ComputationClosed):
                    self._closed.set()
                elif isinstance(msg, m.Refused):
                    log.warning('the scheduler refused: %s', msg.reason)
                else:
                    raise ProtocolError(f'unexpected {type(msg).__name__}')
        except (DispyError, OSError) as exc:
            reason = str(exc)
        finally:
            conn.abort()
            if self.conn is conn:
                self.conn = None
                if not self._closing:
                    log.warning('lost the scheduler at %s: %s; dialling again', self.key,
                                reason)
                    # kept: the loop holds tasks only weakly, and shutdown stops it
                    self._reattacher = asyncio.get_running_loop().create_task(
                        self._reattach())
                else:
                    self._closed.set()

    def _resolve(self, key: Any, value: Any) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def _on_replies(self, replies: tuple) -> None:
        acks = []
        for uid, attempt, status, start, end, payload in replies:
            acks.append((uid, attempt))
            status = JobStatus(status)      # final: checked when decoded
            job = self.jobs.pop(uid, None)
            if job is None:
                continue            # a duplicate after re-attaching
            node = job._node
            if node is not None:
                node.busy = max(0, node.busy - 1)
                node.jobs_done += 1
                node.rx += len(payload)
                if end > start:
                    node.cpu_time += end - start
            result, stdout, stderr, exc = decode_reply(payload)
            job._finish(status, result, stdout, stderr, exc, time.time())
            if start:
                job.start_time, job.end_time = start, end or job.end_time
            if self.journal is not None:
                self.journal.done(uid)
            self._on_status(status, node, job)
            self._on_job_done(job)
        if self._resubmit is not None:
            self._count_kept(len(replies))
        self._send(m.AckReplies(tuple(acks)))

    def _on_running(self, entries: tuple) -> None:
        for uid, ip_addr, port in entries:
            job = self.jobs.get(uid)
            if job is None:
                continue
            node = self._by_key.get(f'{ip_addr}:{port}')
            job.status, job.ip_addr, job._node = JobStatus.Running, ip_addr, node
            if node is not None:
                node.busy += 1
                node.tx += len(job._payload or b'')
            self._on_status(JobStatus.Running, node, job)

    def _on_node_event(self, msg: m.NodeEvent) -> None:
        key = f'{msg.ip_addr}:{msg.port}'
        node = self._by_key.get(key)
        if node is None:
            node = self._by_key[key] = DispyNode(msg.ip_addr, msg.port, msg.name, msg.cpus,
                                                 msg.platform)
            self.nodes.append(node)
        node.cpus, node.avail_cpus = msg.cpus, msg.avail_cpus
        if msg.avail:
            node.avail_info = DispyNodeAvailInfo(*msg.avail)
            node.update_time = time.time()
        status = NodeStatus(msg.status) if msg.status in iter(NodeStatus) else None
        if status is NodeStatus.Closed:
            node.busy = 0
        if status is not None:
            self._on_status(status, node, None)

    def _on_provisional(self, msg: m.ProvisionalResult) -> None:
        job = self.jobs.get(msg.uid)
        if job is None:
            return
        try:
            job.result = pickle.loads(msg.payload)
        except Exception as exc:  # noqa: BLE001 - a class missing here: report, go on
            log.warning('provisional result of job %s could not be unpickled: %r', job.id, exc)
            return
        job.status = JobStatus.ProvisionalResult
        self._on_status(JobStatus.ProvisionalResult, job._node, job)
        self._on_job_update(job)

    # --- a broken link ----------------------------------------------------------------
    async def _reattach(self) -> None:
        while not self._closing:
            await asyncio.sleep(REDIAL_EVERY)
            if self._closing:
                return
            try:
                conn = await self._dial()
            except DispyError as exc:
                log.debug('scheduler %s not back yet: %s', self.key, exc)
                continue
            try:
                conn.send(m.Attach(self.cfg.comp_id))
                reply = await asyncio.wait_for(conn.recv(), self.cfg.msg_timeout)
            except (DispyError, OSError, asyncio.TimeoutError) as exc:
                conn.abort()
                log.debug('scheduler %s: attach failed: %s', self.key, exc)
                continue
            if not isinstance(reply, m.Attached) or not reply.ok:
                conn.abort()
                why = reply.reason if isinstance(reply, m.Attached) else 'a bad reply'
                self._abandon_all(f'the scheduler no longer has the computation ({why})')
                return
            log.info('attached to the scheduler %s again (%d job(s) there, %d result(s) '
                     'kept)', self.key, len(reply.running), reply.kept)
            self._resubmit = ({uid for uid, _ in reply.running}, reply.kept)
            self._use(conn)
            self._count_kept(0)
            return

    def _count_kept(self, received: int) -> None:
        """After re-attaching: once the kept replies are in, jobs the scheduler never
        got (lost with the old link) are sent again."""
        there, kept = self._resubmit
        kept -= received
        if kept > 0:
            self._resubmit = (there, kept)
            return
        self._resubmit = None
        known = there | self._sent_on_link | {uid for uid, _, _ in self._outbox}
        for uid, job in self.jobs.items():
            if uid not in known and job._payload is not None:
                self._outbox.append((uid, '', payload_bytes(job._payload)))
        self._flush()

    def _abandon_all(self, reason: str) -> None:
        for uid in list(self.jobs):
            job = self.jobs.pop(uid)
            job._finish(JobStatus.Abandoned, None, None, None, reason, time.time())
            self._on_status(JobStatus.Abandoned, job._node, job)
            self._on_job_done(job)

    # --- node management (answered by the scheduler) -----------------------------------
    async def request(self, op: str, node: Any = '', number: int = 0, text: str = ''
                      ) -> m.NodeRequestDone | None:
        if self.conn is None:
            return None
        request = next(self._requests)
        waiter = self._waiters[request] = asyncio.get_running_loop().create_future()
        self._send(m.NodeRequest(self.cfg.comp_id, request, op, _node_name(node), number, text))
        try:
            return await asyncio.wait_for(waiter, self.cfg.msg_timeout * 6)
        except asyncio.TimeoutError:
            self._waiters.pop(request, None)
            log.warning('the scheduler did not answer %s for %s', op, node)
            return None

    async def send_file(self, path: str, node: Any) -> int:
        if self.conn is None:
            return -1
        relpath = f'{SEND_FILE_DIR}/{os.path.basename(path)}'
        waiter = self._waiters[('file', relpath)] = asyncio.get_running_loop().create_future()
        try:
            await stream_file(self.conn, self.cfg.comp_id, path, relpath, 0o644)
            error = await asyncio.wait_for(waiter, self.cfg.msg_timeout * 6)
        except (DispyError, OSError, asyncio.TimeoutError) as exc:
            log.warning('send_file %s failed: %s', path, exc)
            return -1
        finally:
            self._waiters.pop(('file', relpath), None)
        if error:
            log.warning('the scheduler refused %s: %s', path, error)
            return -1
        done = await self.request('send_file', node, 0, os.path.basename(path))
        return done.result if done is not None else -1

    # --- shutdown ---------------------------------------------------------------------
    async def shutdown(self, terminate: bool, timeout: float = 30.0) -> None:
        self._closing = True
        if self._reattacher is not None and not self._reattacher.done():
            self._reattacher.cancel()   # closed while the scheduler was away: stop dialling
            with contextlib.suppress(asyncio.CancelledError):
                await self._reattacher
        if self.conn is not None:
            self._send(m.CloseComputation(self.cfg.comp_id, terminate))
            try:
                await asyncio.wait_for(self._closed.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning('the scheduler did not confirm the close')
            if self.conn is not None:
                await self.conn.close()
        if self._reader is not None:
            self._reader.cancel()
        for uid in list(self.jobs):
            job = self.jobs.pop(uid)
            job._finish(JobStatus.Abandoned, None, None, None, 'the cluster was closed',
                        time.time())
            self._on_job_done(job)
        self._close_journal()
        for _ in range(3):
            await asyncio.sleep(0)


def _node_name(node: Any) -> str:
    if node is None:
        return ''
    if isinstance(node, DispyNode):
        return f'{node.ip_addr}:{node.port}'
    return str(node)

