"""Jobs on the node (a mixin of NodeDaemon, run on its loop): the node's queue, lending
CPUs to computation processes, results and cancels.

::

    RunJobs ──> queue (QueuedJob) ──_pump──> ComputationHost.run(lend=CPU free?)
                                                  │ the process queues or starts it
    JobReplies <── _job_done <── outcome ─────────┘   (a freed CPU goes on to the next)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..execution import xfer
from ..execution.host import JobOutcome, failure_payload
from ..execution.staging import StagingError, check_relpath
from ..protocol import messages as m
from ..protocol.frames import DEFAULT_MESSAGE_CAP
from ..status import JobStatus
from ..transport.session import REPLY_HOLD, ClientSession

if TYPE_CHECKING:
    from .daemon import NodeComputation

log = logging.getLogger('dispylike.node')

#: A job result larger than this is refused (Terminated, with the reason): it must fit
#: one message to the client (``frames.DEFAULT_MESSAGE_CAP``) with room to spare.
MAX_RESULT_BYTES = DEFAULT_MESSAGE_CAP - 16 * 1024 * 1024
#: A job's reply may wait REPLY_HOLD for others to go with it only while the jobs of
#: its computation waiting on this node (queued here or in the computation process)
#: keep its CPUs busy this many times as long: moving average of the time between
#: job ends x jobs waiting.  Then no CPU waits for the client's next jobs meanwhile;
#: one job at a time (W2) or jobs the client sends one per reply (no prefetch: long
#: jobs, W4) are never held.  Measured (bench/profile.py --each, 3 interleaved pairs):
#: W1 1,110-1,127 -> 1,165-1,180 jobs/s (client CPU 0.13-0.14 -> 0.08-0.09 ms per job);
#: W1w (--warm --jobs 20000) 8,449-9,764 -> 8,879-9,885; W2 unchanged.  Held whenever
#: jobs were left (no cover rule), W1w lost 0-15%: its queue ran dry.
REPLY_HOLD_COVER = 2


@dataclass
class QueuedJob:
    session: ClientSession
    comp: NodeComputation
    uid: int
    attempt: int
    payload: bytes | str      # str: the path of the transfer file holding it


class JobFlow:
    """_on_run, _pump, _job_done, _on_cancel, and what jobs send meanwhile
    (_provisional, _job_file)."""

    def _provisional(self, session: ClientSession, uid: int, attempt: int,
                     payload: bytes) -> None:
        session.send(m.ProvisionalResult(uid, attempt, payload))

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
        session.send(m.JobFile(uid, attempt, relpath, data))

    def _on_run(self, session: ClientSession, msg: m.RunJobs) -> None:
        comp = self._comp(session, msg.comp_id)
        if comp.host is None:
            raise ProtocolError(f'jobs for computation {comp.name!r} before it is ready')
        for uid, attempt, payload in msg.jobs:
            if uid in comp.running or uid in comp.queued:
                raise ProtocolError(f'job {uid} sent twice')
            if isinstance(payload, str):    # a client on this host wrote the file
                try:
                    payload = xfer.adopt(comp.host.xfer_dir, payload, DEFAULT_MESSAGE_CAP)
                except ProtocolError as exc:
                    log.warning('job %s of %s: %s', uid, session.client, exc)
                    session.reply((uid, attempt, int(JobStatus.Terminated), 0.0, 0.0,
                                   failure_payload(f'its arguments did not reach the node: '
                                                   f'{exc}')))
                    continue
            comp.queued.add(uid)
            self.queue.append(QueuedJob(session, comp, uid, attempt, payload))
        self._pump()

    def _pump(self) -> None:
        """Lend free CPUs, first to jobs waiting in computation processes (the oldest),
        then with queued jobs; forward up to ``cpus`` more jobs per process to wait."""
        free = self.free
        for host in self.hosts:
            while host.waiting > 0 and free > 0 and not host.broken:
                host.lend()
                free -= 1
        queue = self.queue
        while queue:
            q = queue[0]
            closed = q.comp.comp_id not in q.session.comps
            lend = free > 0
            if not (closed or lend or q.comp.host.waiting < self.cpus):
                break
            queue.popleft()
            q.comp.queued.discard(q.uid)
            if closed:
                continue  # nobody waits for a reply
            q.comp.running[q.uid] = q.attempt
            q.comp.idle.clear()
            host = q.comp.host
            host.run(q.uid, q.attempt, q.payload, lend,
                     partial(self._job_done, q.session, q.comp, q.uid, q.attempt))
            if lend and not host.broken:
                free -= 1

    def _job_done(self, session: ClientSession, comp: NodeComputation, uid: int, attempt: int,
                  outcome: JobOutcome) -> None:
        payload = outcome.payload
        size = _size_of(payload)
        if size > MAX_RESULT_BYTES:
            if isinstance(payload, str):
                xfer.discard(payload)
            outcome = JobOutcome(JobStatus.Terminated, outcome.start_time, outcome.end_time,
                                 failure_payload(f'the result is {size} bytes; '
                                                 f'the limit is {MAX_RESULT_BYTES}: save it to '
                                                 'a file instead'))
        self.jobs_done += 1
        if comp.running.get(uid) == attempt:
            del comp.running[uid]
            if not comp.running:
                comp.idle.set()
        payload = outcome.payload
        if comp.comp_id not in session.comps:
            if isinstance(payload, str):
                xfer.discard(payload)          # nobody waits for it
        else:
            if isinstance(payload, str) and not session.local_results:
                payload = _take_result(payload)   # the client reads it from us, not the file
            session.reply((uid, attempt, int(outcome.status), outcome.start_time,
                           outcome.end_time, payload),
                          hold=self._hold(comp))
        self._pump()

    @staticmethod
    def _hold(comp: NodeComputation) -> bool:
        """A job of ``comp`` ended: may its reply wait a little for others (see
        REPLY_HOLD_COVER)?"""
        now = time.monotonic()
        if comp.last_end:
            comp.gap += (min(now - comp.last_end, 1.0) - comp.gap) / 8
        comp.last_end = now
        # (the ending job's CPU still counts as lent here if it goes back: hence max)
        waiting = len(comp.queued) + (max(0, comp.host.waiting) if comp.host is not None else 0)
        return waiting * comp.gap >= REPLY_HOLD_COVER * REPLY_HOLD

    def _on_cancel(self, session: ClientSession, msg: m.CancelJob) -> None:
        for q in self.queue:
            if q.session is session and q.uid == msg.uid and q.attempt == msg.attempt:
                self.queue.remove(q)
                q.comp.queued.discard(q.uid)
                if isinstance(q.payload, str):
                    xfer.discard(q.payload)
                session.reply((msg.uid, msg.attempt, int(JobStatus.Cancelled), 0.0, 0.0,
                               failure_payload('cancelled before it started')))
                return
        for comp in session.comps.values():
            if comp.running.get(msg.uid) == msg.attempt and comp.host is not None:
                comp.host.cancel(msg.uid, self.opts.cancel_grace)
                return


def _size_of(payload: bytes | str) -> int:
    """A reply payload's size (str: the path of the transfer file holding it)."""
    if isinstance(payload, str):
        try:
            return os.stat(payload).st_size
        except OSError:
            return 0
    return len(payload)


def _take_result(path: str) -> bytes:
    """A result the job left in a transfer file, read (and the file kept for reuse)."""
    try:
        with open(path, 'rb', buffering=0) as f:
            data = f.read()
    except OSError as exc:
        xfer.discard(path)
        return failure_payload(f'the result was lost on the node: {exc.strerror}')
    xfer.recycle(path)
    return data
