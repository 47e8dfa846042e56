"""Status constants of jobs and nodes, with dispy's names and values."""

from __future__ import annotations

import enum


class JobStatus(enum.IntEnum):
    """A job's status (``DispyJob.Created`` ... ``DispyJob.Finished``)."""

    Created = 5
    Running = 6
    ProvisionalResult = 7
    Cancelled = 8
    Terminated = 9
    Abandoned = 10
    Finished = 11

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.Cancelled, JobStatus.Terminated,
                            JobStatus.Abandoned, JobStatus.Finished})


class NodeStatus(enum.IntEnum):
    """A node's status as reported to ``cluster_status`` (``DispyNode.Initialized`` ...)."""

    Initialized = JobStatus.Created - 1
    Closed = Initialized - 1
    AvailInfo = Closed - 1
