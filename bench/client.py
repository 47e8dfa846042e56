"""One benchmark client run: executes a single workload against one system.

Started by bench/run.py as a separate process, once per (workload, system,
run), so that a hang or crash in the system under test cannot take the
harness down with it.  It must run under two interpreters (the dispy venv's
Python 3.11 and the repo's Python), so it uses only the standard library plus
the system under test.  The workloads live in bench/loads/.

Protocol: the last stdout line starting with RESULT_MARKER carries a JSON
object:
  status         "ok" | "hung" | "error"
  jobs           jobs the workload meant to run (warm-up excluded)
  completed      results received
  failed         results that were missing, wrong or raised
  failure_reasons {short reason: count}
  plus workload-specific measurements (elapsed_s, latencies_ms, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from loads import basic, data, memory, scale, security, sleep
from loads.common import RESULT_MARKER, Progress, by_value, emit, start_watchdog

WORKLOADS: dict[str, Callable[[str, int, dict[str, Any], Progress], None]] = {
    "W1": basic.run_w1_throughput,
    "W1w": basic.run_w1w_throughput,
    "W2": basic.run_w2_latency,
    "W2w": basic.run_w2w_latency,
    "W3": data.run_w3_data,
    "W4": sleep.run_w4_sleep,
    "W5": memory.run_w5_memory,
    "W6": scale.run_w6_scale,
    "W7": security.run_w7_security,
}
__all__ = ["RESULT_MARKER", "WORKLOADS"]


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
    if args.system == "dispylike":
        by_value(basic, data, memory, scale, security, sleep)
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
