"""W4: 40 x sleep(0.25) on 2 CPUs: how close to the ideal 5.0 s (work-conserving
dispatch: a CPU must never idle while jobs wait)."""
from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from .common import Progress, job_outcome, open_cluster, warm_up


def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds


def run_w4_sleep(system: str, port: int, params: dict[str, Any], progress: Progress) -> None:
    jobs, seconds, cpus = int(params['jobs']), float(params['seconds']), int(params['cpus'])
    ideal = jobs * seconds / cpus
    if system == 'ppe':
        with concurrent.futures.ProcessPoolExecutor(cpus) as pool:
            for fut in [pool.submit(nap, 0) for _ in range(cpus)]:
                fut.result()
            start = time.perf_counter()
            futures = [pool.submit(nap, seconds) for _ in range(jobs)]
            for fut in futures:
                progress.record(fut.result() == seconds)
            elapsed = time.perf_counter() - start
            progress.touch("closing")
    else:
        elapsed = naps(system, port, progress, jobs, seconds)
        if system == 'dispylike':   # and with warm workers (dispy has no such mode)
            warm = naps(system, port, progress, jobs, seconds, warm_workers=True)
            progress.update(efficiency_warm=ideal / warm)
    progress.update(elapsed_s=elapsed, efficiency=ideal / elapsed)


def naps(system: str, port: int, progress: Progress, jobs: int, seconds: float,
         **kw: Any) -> float:
    with open_cluster(system, port, progress, nap, **kw) as cluster:
        warm_up(cluster, progress, 0, expect=0)
        progress.touch("waiting")
        start = time.perf_counter()
        submitted = [cluster.submit(seconds) for _ in range(jobs)]
        for job in submitted:
            progress.record(*job_outcome(job, seconds))
        return time.perf_counter() - start
