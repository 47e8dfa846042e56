"""What every workload of the client process uses: progress and the stall
watchdog, the result line, clusters of the system under test, memory and CPU
readings.  Standard library only (it runs under dispy's venv too)."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

RESULT_MARKER = "BENCH_RESULT "


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


def by_value(*modules: Any) -> None:
    """dispylike ships functions of importable modules by reference; the node cannot
    import the benchmark's modules, so their functions travel by value."""
    import cloudpickle  # type: ignore[import-not-found]
    for module in modules:
        cloudpickle.register_pickle_by_value(module)


def job_outcome(job, expected: Any = None, check: Callable[[Any], bool] | None = None
                ) -> tuple[bool, str | None]:
    """Wait for `job` and judge its result; returns (ok, failure reason)."""
    result = job()
    if (check(result) if check is not None else result == expected):
        return True, None
    exc = getattr(job, "exception", None)
    if exc:
        # Tracebacks: the last non-empty line names the error compactly.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return False, lines[-1] if lines else "exception"
    return False, f"wrong result (status={getattr(job, 'status', '?')})"


@contextlib.contextmanager
def open_cluster(system: str, port: int, progress: Progress, compute: Callable,
                 nodes: list | None = None, **kw: Any) -> Iterator[Any]:
    """JobCluster for `system`, closed afterwards under the watchdog.

    A failure is recorded before closing so that, should close() then hang,
    the watchdog still reports the run as an error and not as a success.
    """
    api = import_system(system)
    if nodes is None:
        cluster = api.JobCluster(compute, nodes=["127.0.0.1"], host="127.0.0.1",
                                 dispy_port=port, **kw)
    else:
        cluster = api.JobCluster(compute, nodes=nodes, host="127.0.0.1", **kw)
    try:
        yield cluster
    except BaseException as exc:
        progress.fail(exc)
        progress.touch("closing")
        cluster.close()
        raise
    progress.touch("closing")
    cluster.close()


def warm_up(cluster, progress: Progress, *args: Any, expect: Any = 1) -> None:
    """One job end to end, so node discovery and computation setup are not
    part of the measurement."""
    progress.touch("warm-up")
    job = cluster.submit(*(args or (1,)))
    if job() != expect:
        raise RuntimeError(f"warm-up job failed: {getattr(job, 'exception', None)!r}")


# --------------------------------------------------------------------------
# Readings
# --------------------------------------------------------------------------
def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """CPU time of this process, every thread (getrusage: microsecond resolution,
    where os.times counts clock ticks of 10 ms)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
