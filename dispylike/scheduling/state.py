"""The job/node state machine.  Pure: events in, actions out; no I/O, no clock.

::

    submit ──> Created ──dispatch──> Running ──reply──> Finished | Terminated
                  │                   │  │
                  │ cancel            │  └─cancel──> (cancel sent) ──reply──> Cancelled
                  v                   │
              Cancelled               └─node lost──> Created again (reentrant, attempt+1)
                                                     or Abandoned (not reentrant / too many losses)

Every dispatch gets a fresh attempt id.  A reply is accepted only if it names
the job's current attempt on the node that runs it; anything else (a late
reply from an abandoned attempt, a duplicate) is reported as stale and
changes nothing, so no job is ever counted twice.  Finished jobs leave the
table, so memory is bounded by jobs in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from ..status import JobStatus
from .policy import MostFreeCpus

NodeKey = Hashable


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send job ``uid`` to ``node`` as attempt ``attempt``."""
    uid: int
    node: NodeKey
    attempt: int


@dataclass(frozen=True, slots=True)
class SendCancel:
    """Ask ``node`` to terminate the running attempt of ``uid``."""
    uid: int
    node: NodeKey
    attempt: int


@dataclass(frozen=True, slots=True)
class Requeued:
    """Job ``uid`` lost its node and waits to run again (status back to Created)."""
    uid: int


@dataclass(frozen=True, slots=True)
class Finalize:
    """Job ``uid`` ended without a node reply (cancelled in queue, abandoned)."""
    uid: int
    status: JobStatus
    reason: str


Action = Dispatch | SendCancel | Finalize | Requeued


@dataclass(slots=True)
class _Job:
    uid: int
    pinned: NodeKey | None
    state: JobStatus = JobStatus.Created
    node: NodeKey | None = None
    attempt: int = 0
    losses: int = 0
    cancelling: bool = False


@dataclass(slots=True)
class _Node:
    key: NodeKey
    cpus: int
    running: set = field(default_factory=set)
    accepting: bool = True
    pinned: deque = field(default_factory=deque)
    prefetch: int = 0       # jobs queued on the node beyond its CPUs
    refill: int = 0         # with every CPU busy, refill its queue only this many at once
    open: bool = True       # may get jobs in this scheduling pass (see Scheduler.schedule)

    @property
    def slots(self) -> int:
        """Jobs it may hold beyond those it has: one per CPU plus its prefetch."""
        if not self.accepting or self.cpus <= 0:
            return 0      # a node given no CPUs holds no prefetched jobs either
        return self.cpus + self.prefetch - len(self.running)

    @property
    def free(self) -> int:
        return self.slots if self.open else 0


class Scheduler:
    """Tracks jobs in flight and nodes, decides dispatches.

    ``max_losses``: a job whose node is lost this many times fails instead of
    being rescheduled again (a poison pill must not take down every node).
    """

    def __init__(self, reentrant: bool = False, max_losses: int = 3) -> None:
        self.reentrant = reentrant
        self.max_losses = max_losses
        self._jobs: dict[int, _Job] = {}
        self._nodes: dict[NodeKey, _Node] = {}
        self._queue: deque[int] = deque()
        self._attempts = 0
        self._policy = MostFreeCpus()

    # --- queries ------------------------------------------------------------------
    def pending(self) -> int:
        """Jobs not yet final."""
        return len(self._jobs)

    def status(self, uid: int) -> JobStatus | None:
        job = self._jobs.get(uid)
        return job.state if job else None

    def running_on(self, node: NodeKey) -> list[int]:
        n = self._nodes.get(node)
        return sorted(n.running) if n else []

    # --- node events --------------------------------------------------------------
    def add_node(self, node: NodeKey, cpus: int) -> list[Action]:
        if cpus < 0:
            raise ValueError('a node cannot have fewer than 0 CPUs')
        entry = self._nodes.get(node)
        if entry is None:
            self._nodes[node] = _Node(node, cpus)
        else:
            entry.cpus, entry.accepting = cpus, True
        return self.schedule()

    def set_cpus(self, node: NodeKey, cpus: int) -> list[Action]:
        self._nodes[node].cpus = max(0, cpus)
        return self.schedule()

    def set_prefetch(self, node: NodeKey, jobs: int, refill: int = 0) -> list[Action]:
        """Let ``node`` hold ``jobs`` dispatched jobs beyond its CPUs in its own queue, so
        a CPU that finishes a short job starts the next without waiting for the client.
        ``refill``: while every CPU of the node has a job, send it more only once this
        many can go at once (fewer, larger messages)."""
        entry = self._nodes[node]
        entry.prefetch = max(0, jobs)
        entry.refill = max(0, min(refill, entry.prefetch))
        return self.schedule()

    def set_accepting(self, node: NodeKey, accepting: bool) -> list[Action]:
        self._nodes[node].accepting = accepting
        return self.schedule()

    def remove_node(self, node: NodeKey, reason: str = 'node lost') -> list[Action]:
        """The node is gone: its jobs are rescheduled (reentrant) or abandoned."""
        entry = self._nodes.pop(node, None)
        if entry is None:
            return []
        out: list[Action] = []
        for uid in sorted(entry.running):
            job = self._jobs[uid]
            job.losses += 1
            job.node = None
            if job.cancelling:
                out.append(self._finish(uid, JobStatus.Cancelled, f'cancelled; {reason}'))
            elif not self.reentrant or job.pinned is not None:
                out.append(self._finish(uid, JobStatus.Abandoned,
                                        f'{reason} while running this job'))
            elif job.losses >= self.max_losses:
                out.append(self._finish(uid, JobStatus.Abandoned,
                                        f'node lost while running this job {job.losses} times'))
            else:
                job.state = JobStatus.Created
                self._queue.appendleft(uid)
                out.append(Requeued(uid))
        for uid in entry.pinned:
            if uid in self._jobs:
                out.append(self._finish(uid, JobStatus.Abandoned, f'{reason}; job was bound to it'))
        return out + self.schedule()

    # --- job events ---------------------------------------------------------------
    def submit(self, uid: int, node: NodeKey | None = None) -> list[Action]:
        if uid in self._jobs:
            raise ValueError(f'job {uid} already submitted')
        self._jobs[uid] = _Job(uid, node)
        if node is None:
            self._queue.append(uid)
        else:
            entry = self._nodes.get(node)
            if entry is None:
                return [self._finish(uid, JobStatus.Abandoned,
                                     f'node {node} is not in the cluster')]
            entry.pinned.append(uid)
        return self.schedule()

    def reply(self, uid: int, attempt: int, node: NodeKey,
              status: JobStatus) -> tuple[JobStatus | None, list[Action]]:
        """A node reports a final status.  Returns (status to record, actions).

        The status is None when the reply is stale or a duplicate: ignore it.
        A status that is not final is a caller error (ValueError): validate first.
        """
        job = self._jobs.get(uid)
        if (job is None or job.node != node or job.attempt != attempt
                or job.state is not JobStatus.Running):
            return None, []
        final = JobStatus.Cancelled if job.cancelling else status
        if not final.is_final:
            raise ValueError(f'reply status {status!r} is not final')
        self._finish(uid, final, '')
        return final, self.schedule()

    def is_current(self, uid: int, attempt: int, node: NodeKey) -> bool:
        """True if (uid, attempt) is running on ``node`` now (for provisional results)."""
        job = self._jobs.get(uid)
        return (job is not None and job.node == node and job.attempt == attempt
                and job.state is JobStatus.Running)

    def cancel(self, uid: int) -> list[Action]:
        job = self._jobs.get(uid)
        if job is None or job.cancelling:
            return []
        if job.state is JobStatus.Created:
            return [self._finish(uid, JobStatus.Cancelled, 'cancelled before it ran')]
        job.cancelling = True
        return [SendCancel(uid, job.node, job.attempt)]

    # --- internals ----------------------------------------------------------------
    def _finish(self, uid: int, status: JobStatus, reason: str) -> Finalize:
        job = self._jobs.pop(uid)
        job.state = status
        if job.node is not None:
            entry = self._nodes.get(job.node)
            if entry is not None:
                entry.running.discard(uid)
        return Finalize(uid, status, reason)

    def _start(self, job: _Job, node: _Node) -> Dispatch:
        self._attempts += 1
        job.state, job.node, job.attempt = JobStatus.Running, node.key, self._attempts
        node.running.add(job.uid)
        return Dispatch(job.uid, node.key, job.attempt)

    def schedule(self) -> list[Action]:
        """Dispatch queued jobs while some node has a free CPU (work-conserving).  A node
        whose CPUs all have a job and whose queue is not down by ``refill`` gets none
        in this pass; one that does is filled up: its queue is refilled in batches."""
        out: list[Action] = []
        for node in self._nodes.values():
            node.open = len(node.running) < node.cpus or node.slots >= max(1, node.refill)
            while node.pinned and node.free > 0:
                job = self._jobs.get(node.pinned.popleft())
                if job is not None and job.state is JobStatus.Created:
                    out.append(self._start(job, node))
        while self._queue:
            node = self._policy.pick(self._nodes.values())
            if node is None:
                break
            job = self._jobs.get(self._queue.popleft())
            if job is not None and job.state is JobStatus.Created:
                out.append(self._start(job, node))
        return out
