"""Assertions for tests of programs that use dispylike."""

from __future__ import annotations

from typing import Any

from ..job import DispyJob
from ..status import JobStatus


def submit_unserved(cluster: Any, *args: Any, wait: float = 2.0) -> DispyJob:
    """Submit a job that no node may run (wrong secret, refused TLS, skipped node...):
    assert it has not ended after ``wait`` seconds, then close the cluster with
    terminate and check the job was cancelled or abandoned, never run.  Returns it."""
    job = cluster.submit(*args)
    assert cluster.wait(timeout=wait) is False, f'job ran: {job!r} {job.exception}'
    cluster.close(timeout=0, terminate=True)
    assert job.status in (JobStatus.Cancelled, JobStatus.Abandoned), job
    return job
