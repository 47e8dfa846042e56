"""Run one workload once on one system: fresh node, one client process."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .node import NodeError, start_node
from .paths import CLIENT_SCRIPT
from .procs import Spawned
from .systems import System
from .workloads import RunResult, Workload

RESULT_MARKER = "BENCH_RESULT "  # must match client.RESULT_MARKER


def run_once(workload: Workload, system: System, run_index: int,
             params: dict[str, Any], workdir: Path) -> RunResult:
    """A fresh node per run: a hung dispy run leaves its node in an unknown
    state, and that must not leak into the next measurement."""
    workdir.mkdir(parents=True, exist_ok=True)
    client_port, node_port = system.ports(run_index)
    started = time.monotonic()
    node: Spawned | None = None
    try:
        if system.node_command is not None and not workload.own_nodes:
            node = start_node(system, client_port, node_port, workdir)
            params = dict(params, node_pid=node.pid)   # for memory readings
        result = run_client(workload, system, client_port, params, workdir)
    except NodeError as exc:
        result = {"status": "error", "error": str(exc)}
    finally:
        if node is not None:
            node.stop()
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


def run_client(workload: Workload, system: System, client_port: int,
               params: dict[str, Any], workdir: Path) -> RunResult:
    cmd = [system.python, str(CLIENT_SCRIPT), "--system", system.name,
           "--workload", workload.name, "--port", str(client_port),
           "--params", json.dumps(params),
           "--stall-timeout", str(workload.stall_timeout_s)]
    # cwd=workdir: dispy drops its recovery files (_dispy_*) in the cwd.
    client = Spawned(cmd, workdir / "client.out", workdir / "client.err",
                     system.env, workdir)
    try:
        finished = client.wait_exit(workload.hard_timeout_s)
    finally:
        returncode = client.stop(grace=2.0)
    result = parse_result(client.stdout_path)
    if result is not None:
        return result
    if not finished:
        return {"status": "hung",
                "error": f"killed after {workload.hard_timeout_s:.0f}s without a result"}
    return {"status": "error",
            "error": f"client exited with {returncode} without a result:\n{client.tail()}"}


def parse_result(stdout_path: Path) -> RunResult | None:
    """The client's verdict: the last RESULT_MARKER line of its stdout."""
    try:
        lines = stdout_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER):])
            except ValueError:
                return None
    return None
