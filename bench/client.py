"""One benchmark client run: executes a single workload against one system.

Started by bench/run.py as a separate process, once per (workload, system,
run), so that a hang or crash in the system under test cannot take the
harness down with it.  It must run under two interpreters (the dispy venv's
Python 3.11 and the repo's Python), so it uses only the standard library plus
the system under test.

Protocol: the last stdout line starting with RESULT_MARKER carries a JSON
object:
  status         "ok" | "hung" | "error"
  jobs           jobs the workload meant to run (warm-up excluded)
  completed      results received
  failed         results that were missing, wrong or raised
  failure_reasons {short reason: count}
  plus workload-specific measurements (elapsed_s, latencies_ms, ...).

The compute functions are defined at module level here because dispy (and a
faithful reimplementation) ships them to the node as source text.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

RESULT_MARKER = "BENCH_RESULT "


def compute(n):
    """W1/W2 job body: trivially cheap, so the run measures per-job overhead."""
    return n * n


# --------------------------------------------------------------------------
# Progress tracking and the stall watchdog
# --------------------------------------------------------------------------
class Progress:
    """Shared state between the workload (main thread) and the watchdog.

    dispy occasionally stops delivering results; when it does, job() blocks
    forever.  Instead of relying only on the harness' hard timeout, the
    watchdog notices "no progress for N seconds", emits what was measured so
    far with status "hung" and exits the process, which gives a more useful
    report (how far it got) and a quicker turnaround.
    """

    def __init__(self, jobs: int) -> None:
        self.lock = threading.Lock()
        self.last_progress = time.monotonic()
        self.phase = "setup"
        self.result: dict[str, Any] = {
            "status": "running", "jobs": jobs, "completed": 0, "failed": 0,
            "failure_reasons": {},
        }

    def touch(self, phase: str | None = None) -> None:
        with self.lock:
            self.last_progress = time.monotonic()
            if phase is not None:
                self.phase = phase

    def record(self, ok: bool, reason: str | None = None) -> None:
        with self.lock:
            self.last_progress = time.monotonic()
            self.result["completed"] += 1
            if not ok:
                self.result["failed"] += 1
                reasons = self.result["failure_reasons"]
                key = (reason or "unknown")[:160]
                reasons[key] = reasons.get(key, 0) + 1

    def update(self, **fields: Any) -> None:
        with self.lock:
            self.result.update(fields)

    def add_sample(self, key: str, value: float) -> None:
        with self.lock:
            self.result.setdefault(key, []).append(value)

    def fail(self, exc: BaseException) -> None:
        self.update(error=f"{type(exc).__name__}: {exc}"[:500])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self.result))


_emit_lock = threading.Lock()
_emitted = False


def emit(result: dict[str, Any]) -> bool:
    """Write the result line once; the watchdog and the main thread may race
    near the deadline, and the harness must see exactly one verdict."""
    global _emitted
    with _emit_lock:
        if _emitted:
            return False
        _emitted = True
        sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
        sys.stdout.flush()
        return True


def start_watchdog(progress: Progress, stall_timeout: float) -> None:
    def watch() -> None:
        while True:
            time.sleep(0.25)
            with progress.lock:
                idle = time.monotonic() - progress.last_progress
                phase = progress.phase
            if idle < stall_timeout:
                continue
            result = progress.snapshot()
            if phase == "closing":
                # Measurements are complete (or already failed); only the
                # cluster shutdown stalled.
                result["status"] = "error" if "error" in result else "ok"
                result["close_hung"] = True
            else:
                result["status"] = "hung"
                result["hung_phase"] = phase
            if emit(result):
                # os._exit: the system's own threads may be wedged, so a
                # normal interpreter shutdown (joining threads) could hang.
                os._exit(3 if result["status"] == "hung" else 0)
            return

    threading.Thread(target=watch, name="stall-watchdog", daemon=True).start()


# --------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------
def import_system(system: str):
    """Import the module providing the dispy API for `system`."""
    if system == "dispy":
        import dispy  # type: ignore[import-not-found]
        return dispy
    if system == "dispylike":
        import dispylike  # type: ignore[import-not-found]
        return dispylike
    raise ValueError(f"no dispy-like API for system {system!r}")


def make_cluster(api, port: int):
    return api.JobCluster(compute, nodes=["127.0.0.1"], host="127.0.0.1",
                          dispy_port=port)


def job_outcome(job, expected) -> tuple[bool, str | None]:
    """Wait for `job` and judge its result; returns (ok, failure reason)."""
    result = job()
    if result == expected:
        return True, None
    exc = getattr(job, "exception", None)
    if exc:
        # Tracebacks: the last non-empty line names the error compactly.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return False, lines[-1] if lines else "exception"
    return False, f"wrong result (status={getattr(job, 'status', '?')})"


@contextlib.contextmanager
def open_cluster(system: str, port: int, progress: Progress) -> Iterator[Any]:
    """JobCluster for `system`, closed afterwards under the watchdog.

    A failure is recorded before closing so that, should close() then hang,
    the watchdog still reports the run as an error and not as a success.
    """
    api = import_system(system)
    cluster = make_cluster(api, port)
    try:
        yield cluster
    except BaseException as exc:
        progress.fail(exc)
        progress.touch("closing")
        cluster.close()
        raise
    progress.touch("closing")
    cluster.close()


def warm_up(cluster, progress: Progress) -> None:
    """One job end to end, so node discovery and computation setup are not
    part of the measurement."""
    progress.touch("warm-up")
    job = cluster.submit(1)
    if job() != 1:
        raise RuntimeError(f"warm-up job failed: {getattr(job, 'exception', None)!r}")


# --------------------------------------------------------------------------
# Workloads.  Each takes (system, port, params, progress) and fills
# progress.result; the caller emits it.
# --------------------------------------------------------------------------
def run_w1_throughput(system: str, port: int, params: dict[str, Any],
                      progress: Progress) -> None:
    """Submit all jobs, then wait for all of them; time first submit to last
    result.  A warm-up job first so that node discovery and computation
    setup are not counted (the PPE floor likewise excludes pool start-up)."""
    jobs = int(params["jobs"])
    if system == "ppe":
        run_w1_ppe(jobs, progress)
        return
    with open_cluster(system, port, progress) as cluster:
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


def run_w1_ppe(jobs: int, progress: Progress) -> None:
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
    samples = int(params["jobs"])
    progress.update(latencies_ms=[])
    with open_cluster(system, port, progress) as cluster:
        warm_up(cluster, progress)
        progress.touch("waiting")
        for i in range(samples):
            start = time.perf_counter()
            ok, reason = job_outcome(cluster.submit(i), i * i)
            progress.add_sample("latencies_ms", (time.perf_counter() - start) * 1000.0)
            progress.record(ok, reason)


WORKLOADS: dict[str, Callable[[str, int, dict[str, Any], Progress], None]] = {
    "W1": run_w1_throughput,
    "W2": run_w2_latency,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", required=True,
                        choices=["dispy", "dispylike", "ppe"])
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--port", type=int, default=0,
                        help="client dispy_port (the node listens on port+1)")
    parser.add_argument("--params", default="{}",
                        help="JSON object of workload parameters")
    parser.add_argument("--stall-timeout", type=float, default=10.0,
                        help="seconds without progress before reporting 'hung'")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    params = json.loads(args.params)
    progress = Progress(int(params.get("jobs", 0)))
    start_watchdog(progress, args.stall_timeout)
    try:
        WORKLOADS[args.workload](args.system, args.port, params, progress)
    except BaseException as exc:  # report any failure as data, not a crash
        progress.fail(exc)
        result = progress.snapshot()
        result["status"] = "error"
        emit(result)
        return 2
    result = progress.snapshot()
    result["status"] = "ok"
    emit(result)
    return 0


if __name__ == "__main__":
    # Exit hard: a wedged system thread must not keep the process alive after
    # the result has been written.
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
