"""W5: the client's memory per finished job that the program still holds (its
DispyJob objects): RSS after N finished jobs minus RSS before, per job, with free
heap returned to the system first (malloc_trim) so that only what is held counts.
``beyond`` subtracts the job's own arguments and result (a 1-tuple of an int, an
int)."""
from __future__ import annotations

import ctypes
import gc
import sys
import time
from typing import Any

from .common import Progress, job_outcome, open_cluster, rss_bytes, warm_up

WAVE = 250


def square(n):
    return n * n


def _settled_rss() -> int:
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    time.sleep(0.2)
    return rss_bytes()


def run_w5_memory(system: str, port: int, params: dict[str, Any],
                  progress: Progress) -> None:
    jobs = int(params['jobs'])
    if system == 'dispy':   # its node hangs for good somewhere in 20,000 jobs, waves or not
        jobs = min(jobs, int(params.get('dispy_jobs', jobs)))
        progress.update(jobs=jobs)
    with open_cluster(system, port, progress, square) as cluster:
        warm_up(cluster, progress)
        before = _settled_rss()
        progress.touch("submitting")
        held = []
        for first in range(0, jobs, WAVE):   # waves: dispy's node tends to hang under a flood
            wave = [cluster.submit(i) for i in range(first, min(jobs, first + WAVE))]
            for i, job in enumerate(wave, first):
                progress.record(*job_outcome(job, i * i))
            held += wave
        cluster.wait()
        after = _settled_rss()
        per_job = (after - before) / jobs
        own = sum(sys.getsizeof((i,)) + (sys.getsizeof(i * i) if i * i > 256 else 0)
                  for i in range(jobs)) / jobs
        progress.update(bytes_per_job=per_job, beyond_bytes_per_job=per_job - own)
        del held
