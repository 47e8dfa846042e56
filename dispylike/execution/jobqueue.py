"""Jobs waiting in a computation process for a CPU the node lent it (pure: no I/O).

The node decides how many jobs run at once.  Each job it sends to the
computation process either comes with a CPU lent to the process (it starts at
once) or waits here.  A CPU stays with the process while jobs wait: when a job
ends, the oldest waiting job starts on its CPU there and then, without a round
trip through the node.  The CPU goes back to the node when nothing waits, or
when the node asked for CPUs back (``dispynode`` now serves fewer).  So the
jobs running in the process never outnumber the CPUs lent to it, and each
waiting job leaves the queue once: started, cancelled or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class WaitingJob:
    uid: int
    attempt: int
    payload: bytes | str     # the arguments, or the transfer file holding them


class JobQueue:
    def __init__(self) -> None:
        self.waiting: dict[int, WaitingJob] = {}   # uid -> job, oldest first
        self.running = 0                           # CPUs lent, each running a job here
        self.owed = 0                              # CPUs to give back as jobs end

    def add(self, job: WaitingJob) -> None:
        self.waiting[job.uid] = job

    def lend(self) -> WaitingJob | None:
        """The node lent a CPU: the job to start on it, or None (the CPU goes back)."""
        self.running += 1
        return self.ended()

    def ended(self) -> WaitingJob | None:
        """A job running on a lent CPU ended (or could not start): the job to start on
        that CPU next, or None: the CPU goes back to the node."""
        if self.owed > 0 or not self.waiting:
            self.owed = max(0, self.owed - 1)
            self.running -= 1
            return None
        return self.waiting.pop(next(iter(self.waiting)))

    def take_next(self, largest: int) -> WaitingJob | None:
        """The oldest waiting job, to run on a CPU already lent once the job running
        there ends (written ahead to a warm worker), if its arguments are inline and at
        most ``largest`` bytes; None if not, if nothing waits or if CPUs are owed back."""
        if self.owed > 0 or not self.waiting:
            return None
        uid = next(iter(self.waiting))
        payload = self.waiting[uid].payload
        if not isinstance(payload, bytes) or len(payload) > largest:
            return None
        return self.waiting.pop(uid)

    def put_back(self, job: WaitingJob) -> None:
        """A job taken with :meth:`take_next` that did not start: first in line again."""
        self.waiting = {job.uid: job, **self.waiting}

    def give_back(self, count: int) -> None:
        """The node serves fewer CPUs: return ``count`` CPUs as jobs end."""
        self.owed += max(0, count)

    def cancel(self, uid: int) -> WaitingJob | None:
        """Remove a waiting job (None if it is not waiting here)."""
        return self.waiting.pop(uid, None)

    def drop(self) -> list[WaitingJob]:
        """Remove every waiting job (the computation closes)."""
        jobs = list(self.waiting.values())
        self.waiting.clear()
        return jobs
