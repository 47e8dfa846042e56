"""Assertions for tests of programs that use dispylike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..job import DispyJob
from ..nodes import DispyNode
from ..status import JobStatus

T = TypeVar('T')


def submit_unserved(cluster: Any, *args: Any, wait: float = 2.0) -> DispyJob:
    """Submit a job that no node may run (wrong secret, refused TLS, skipped node...):
    assert it has not ended after ``wait`` seconds, then close the cluster with
    terminate and check the job was cancelled or abandoned, never run.  Returns it."""
    job = cluster.submit(*args)
    assert cluster.wait(timeout=wait) is False, f'job ran: {job!r} {job.exception}'
    cluster.close(timeout=0, terminate=True)
    assert job.status in (JobStatus.Cancelled, JobStatus.Abandoned), job
    return job


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):   # gone between the open and the read
        return False


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns a true value (returned), for at most ``timeout``
    seconds; then fail with ``what`` in the message.  Tests wait for an event they can
    observe with this instead of sleeping and hoping it has happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'{what}: not so after {timeout:g} s')
        time.sleep(0.05)


def wait_for_nodes(cluster: Any, nodes: Iterable[str], timeout: float = 30.0) -> list[DispyNode]:
    """Wait until ``cluster.status()`` lists every node of ``nodes`` (each ``'ip'`` or
    ``'ip:port'``), i.e. until each is set up and takes jobs; returns the status.  Before
    submitting jobs that must spread: the first node set up may otherwise run them all."""
    want = set(nodes)

    def seen() -> set[str]:
        return {key for n in cluster.status() for key in (n.ip_addr, f'{n.ip_addr}:{n.port}')}

    def ready() -> list[DispyNode] | None:
        return cluster.status() if want <= seen() else None

    try:
        return wait_until(ready, timeout, f'nodes {sorted(want)} set up')
    except AssertionError as exc:
        raise AssertionError(f'{exc}; the cluster has {sorted(n for n in seen() if ":" in n)}'
                             ) from None
