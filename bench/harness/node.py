"""Start a system's node daemon and wait until it accepts TCP connections."""
from __future__ import annotations

import socket
import time
from pathlib import Path

from .procs import Spawned
from .systems import HOST, System

READY_TIMEOUT_S = 20.0


class NodeError(RuntimeError):
    pass


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_node(system: System, client_port: int, node_port: int, workdir: Path) -> Spawned:
    """Spawn the node in `workdir` and return once its TCP port accepts.

    The caller owns the returned process and must stop() it (try/finally).
    """
    assert system.node_command is not None
    if port_accepts(node_port):
        # Inside our fresh namespace only a node of ours could be there, and
        # a leftover node would silently serve the wrong system.
        raise NodeError(f"port {node_port} already in use before starting {system.name} node")
    dest = workdir / "node-dest"
    dest.mkdir(parents=True, exist_ok=True)
    node = Spawned(system.node_command(client_port, dest),
                   workdir / "node.out", workdir / "node.err", system.env, workdir)
    try:
        wait_until_ready(node, node_port)
    except BaseException:
        node.stop()
        raise
    return node


def wait_until_ready(node: Spawned, node_port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.exited():
            raise NodeError(f"node exited during start-up:\n{node.tail()}")
        if port_accepts(node_port, timeout=0.2):
            return
        time.sleep(0.1)
    raise NodeError(f"node port {node_port} not accepting after {READY_TIMEOUT_S:.0f}s:\n"
                    f"{node.tail()}")
