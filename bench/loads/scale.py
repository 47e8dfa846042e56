"""W6: scale.  Many trivial jobs over many dispynode daemons (loopback ports, 1 CPU
each, warm workers), dispylike only: the client starts the nodes itself.

Measures the client's CPU per job (every thread of the client process: the
program, the I/O loop, the scheduler) for a small and a large run on all nodes
and a large run on 2 of them; with no O(n) work per job in jobs or nodes each
pair is within 1.5x.  Also the client's peak memory."""
from __future__ import annotations

import contextlib
import time
from typing import Any

from .common import Progress, cpu_seconds, job_outcome, open_cluster, peak_rss_bytes, rss_bytes


def square(n):
    return n * n


def run_w6_scale(system: str, port: int, params: dict[str, Any], progress: Progress) -> None:
    from dispylike.testing import NodeProcess  # type: ignore[import-not-found]

    nodes, small, large = int(params['nodes']), int(params['small']), int(params['large'])
    progress.touch("starting nodes")
    base_rss = rss_bytes()
    with contextlib.ExitStack() as stack:
        procs = []
        for _ in range(nodes):
            procs.append(stack.enter_context(NodeProcess(cpus=1)))
            progress.touch()
        addresses = [p.address for p in procs]
        out: dict[str, Any] = {'nodes': nodes}
        out['cpu_us_small'], _ = run_jobs(addresses, small, progress, 'small')
        out['cpu_us_large'], out['jobs_per_s_large'] = run_jobs(addresses, large, progress,
                                                                'large')
        out['cpu_us_two_nodes'], _ = run_jobs(addresses[:2], large, progress, 'two nodes')
        out['jobs_ratio'] = out['cpu_us_large'] / out['cpu_us_small']
        out['nodes_ratio'] = out['cpu_us_large'] / out['cpu_us_two_nodes']
        out['client_peak_mb'] = (peak_rss_bytes() - base_rss) / 1e6
        progress.update(**out)
        progress.touch("closing")


def run_jobs(addresses: list, jobs: int, progress: Progress, phase: str) -> tuple[float, float]:
    """(client CPU microseconds per job, jobs/s) for ``jobs`` jobs on these nodes."""
    with open_cluster('dispylike', 0, progress, square, nodes=addresses,
                      warm_workers=True) as cluster:
        progress.touch(f"{phase}: joining")
        deadline = time.monotonic() + 120
        while len(cluster.status()) < len(addresses) and time.monotonic() < deadline:
            time.sleep(0.05)
            progress.touch()
        if len(cluster.status()) < len(addresses):
            raise RuntimeError(f'only {len(cluster.status())} of {len(addresses)} nodes joined')
        for job in [cluster.submit(1) for _ in range(2 * len(addresses))]:
            job()   # every node has run a job: its worker is up
        progress.touch(phase)
        cpu, start = cpu_seconds(), time.perf_counter()
        submitted = []
        for i in range(jobs):
            submitted.append(cluster.submit(i))
            if i % 1000 == 0:
                progress.touch()
        for i, job in enumerate(submitted):
            progress.record(*job_outcome(job, i * i))
        elapsed = time.perf_counter() - start
        used = cpu_seconds() - cpu
        del submitted
    return used / jobs * 1e6, jobs / elapsed
