"""W1 (throughput, fork per job), W1w (the same with warm workers), W2 and W2w
(round-trip latency, fork per job and warm), plus the local ProcessPoolExecutor floor."""
from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from .common import Progress, job_outcome, open_cluster, warm_up


def compute(n):
    """W1/W2 job body: trivially cheap, so the run measures per-job overhead."""
    return n * n


def run_w1_throughput(system: str, port: int, params: dict[str, Any],
                      progress: Progress) -> None:
    """Submit all jobs, then wait for all of them; time first submit to last
    result.  A warm-up job first so that node discovery and computation
    setup are not counted (the PPE floor likewise excludes pool start-up)."""
    throughput(system, port, params, progress, warm=False)


def run_w1w_throughput(system: str, port: int, params: dict[str, Any],
                       progress: Progress) -> None:
    """W1 with JobCluster(warm_workers=True); dispy has no such mode, so its column
    is its W1 (fork per job), measured in the same invocation."""
    throughput(system, port, params, progress, warm=system == "dispylike")


def throughput(system: str, port: int, params: dict[str, Any], progress: Progress,
               warm: bool, **kw: Any) -> None:
    jobs = int(params["jobs"])
    if system == "ppe":
        run_ppe_throughput(jobs, progress)
        return
    if warm:
        kw["warm_workers"] = True
    with open_cluster(system, port, progress, compute, **kw) as cluster:
        warm_up(cluster, progress)
        progress.touch("submitting")
        start = time.perf_counter()
        submitted = []
        for i in range(jobs):
            submitted.append(cluster.submit(i))
            progress.touch()  # a slow but moving submit loop is not a hang
        progress.touch("waiting")
        for i, job in enumerate(submitted):
            progress.record(*job_outcome(job, i * i))
        elapsed = time.perf_counter() - start
        progress.update(elapsed_s=elapsed, jobs_per_s=jobs / elapsed)


def run_ppe_throughput(jobs: int, progress: Progress) -> None:
    """Floor: the same jobs through a local 2-worker process pool."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        progress.touch("warm-up")
        # Two concurrent warm-up jobs so both workers exist before timing.
        for fut in [pool.submit(compute, 1), pool.submit(compute, 1)]:
            fut.result()
        progress.touch("submitting")
        start = time.perf_counter()
        futures = [pool.submit(compute, i) for i in range(jobs)]
        progress.touch("waiting")
        for i, fut in enumerate(futures):
            try:
                ok = fut.result() == i * i
                progress.record(ok, None if ok else "wrong result")
            except Exception as exc:  # report, don't crash the run
                progress.record(False, repr(exc))
        elapsed = time.perf_counter() - start
        progress.update(elapsed_s=elapsed, jobs_per_s=jobs / elapsed)
        progress.touch("closing")


def run_w2_latency(system: str, port: int, params: dict[str, Any],
                   progress: Progress) -> None:
    """Sequential submit + job() round trips; one latency sample each."""
    latency(system, port, params, progress)


def run_w2w_latency(system: str, port: int, params: dict[str, Any],
                    progress: Progress) -> None:
    """W2 with JobCluster(warm_workers=True); dispy's column is its W2."""
    latency(system, port, params, progress, warm_workers=system == "dispylike")


def latency(system: str, port: int, params: dict[str, Any], progress: Progress,
            **kw: Any) -> None:
    samples = int(params["jobs"])
    progress.update(latencies_ms=[])
    if not kw.get("warm_workers"):
        kw.pop("warm_workers", None)
    with open_cluster(system, port, progress, compute, **kw) as cluster:
        warm_up(cluster, progress)
        progress.touch("waiting")
        for i in range(samples):
            start = time.perf_counter()
            ok, reason = job_outcome(cluster.submit(i), i * i)
            progress.add_sample("latencies_ms", (time.perf_counter() - start) * 1000.0)
            progress.record(ok, reason)
