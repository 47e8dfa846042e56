"""W3: bulk data each way.  20 jobs with a 20 MB bytes argument (each returns its
length), then 20 jobs that each return 20 MB; MB/s each way (MB = 10**6 bytes),
the client's peak memory above its level before the workload, and the node's
(the daemon and every process under it, sampled) - both against the data the
program held at once (20 x 20 MB)."""
from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any

from .common import Progress, job_outcome, open_cluster, peak_rss_bytes, rss_bytes, warm_up


def take_bytes(data):
    return len(data)


def make_bytes(size):
    return b'r' * size


def data_job(kind, arg):
    """One computation for both directions (one cluster, one warm-up)."""
    return len(arg) if kind == 'in' else b'r' * arg


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, RSS of ``pid`` and every process under it), bytes."""
    page = os.sysconf('SC_PAGE_SIZE')
    own = total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f'/proc/{p}/statm') as f:
                rss = int(f.read().split()[1]) * page
            kids = []
            for tid in os.listdir(f'/proc/{p}/task'):
                with open(f'/proc/{p}/task/{tid}/children') as f:
                    kids += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        total += rss
        own = own or rss
        todo += kids
    return own, total


class NodeMemory:
    """Samples a node's memory (its own and its process tree's) every 20 ms."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.base = tree_rss(pid) if pid else (0, 0)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='node-rss')
        if pid:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            own, total = tree_rss(self.pid)
            self.peak = (max(self.peak[0], own), max(self.peak[1], total))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self.pid is None:
            return {}
        self._thread.join(1)
        return {'node_peak_mb': (self.peak[0] - self.base[0]) / 1e6,
                'node_tree_peak_mb': (self.peak[1] - self.base[1]) / 1e6}


def measure(cluster, progress: Progress, jobs: int, size: int) -> dict[str, float]:
    """MB/s in (arguments) and out (results) through ``cluster`` (running data_job)."""
    data = os.urandom(1024) * (size // 1024) + b'x' * (size % 1024)
    progress.touch("in")
    start = time.perf_counter()
    submitted = [cluster.submit('in', data) for _ in range(jobs)]
    for job in submitted:
        progress.record(*job_outcome(job, size))
    mbps_in = jobs * size / 1e6 / (time.perf_counter() - start)
    del submitted, data
    progress.touch("out")
    start = time.perf_counter()
    submitted = [cluster.submit('out', size) for _ in range(jobs)]
    for job in submitted:
        progress.record(*job_outcome(job, check=lambda r: isinstance(r, bytes)
                                     and len(r) == size))
    mbps_out = jobs * size / 1e6 / (time.perf_counter() - start)
    del submitted
    return {'mbps_in': mbps_in, 'mbps_out': mbps_out}


def run_w3_data(system: str, port: int, params: dict[str, Any], progress: Progress) -> None:
    jobs, size = int(params['jobs']), int(params['size'])
    if system == 'ppe':
        run_ppe_data(jobs, size, progress)
        return
    with open_cluster(system, port, progress, data_job) as cluster:
        warm_up(cluster, progress, 'in', b'abc', expect=3)
        base = rss_bytes()
        node = NodeMemory(params.get('node_pid'))
        progress.update(**measure(cluster, progress, jobs, size))
        progress.update(client_peak_mb=(peak_rss_bytes() - base) / 1e6,
                        in_flight_mb=jobs * size / 1e6, **node.stop())


def run_ppe_data(jobs: int, size: int, progress: Progress) -> None:
    """Floor: the same transfers to and from a local 2-worker process pool."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        progress.touch("warm-up")
        for fut in [pool.submit(data_job, 'in', b'x'), pool.submit(data_job, 'in', b'x')]:
            fut.result()
        base = rss_bytes()
        progress.update(**measure(_PoolAsCluster(pool), progress, jobs, size))
        progress.update(client_peak_mb=(peak_rss_bytes() - base) / 1e6,
                        in_flight_mb=jobs * size / 1e6)
        progress.touch("closing")


class _PoolAsCluster:
    """Just enough of JobCluster for measure(): submit() returning a callable job."""

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        self.pool = pool

    def submit(self, *args: Any):
        fut = self.pool.submit(data_job, *args)
        return _PoolJob(fut)


class _PoolJob:
    def __init__(self, fut: concurrent.futures.Future) -> None:
        self.fut = fut
        self.exception = None

    def __call__(self):
        try:
            return self.fut.result()
        except Exception as exc:  # reported as a failed job
            self.exception = repr(exc)
            return None
