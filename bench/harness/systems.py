"""The systems under comparison and how to start their nodes and clients.

  dispy      real dispy 4.15.2 from the cached venv (Python 3.11)
  dispylike  this repo's package, run with the harness' own interpreter
  ppe        local concurrent.futures.ProcessPoolExecutor(2): the floor

Each networked system gets its own range of base ports so that two systems
(or two runs) can never talk to each other's node: run k of a system uses
client port base+2k and node port base+2k+1.  A fresh pair per run also
sidesteps TIME_WAIT leftovers from the previous run's node.

The ranges lie below Linux's ephemeral port range (default 32768-60999):
ports inside it get picked as source ports of outgoing connections, and a
TIME_WAIT socket left on, say, 51302 made the next dispy client fail with
"Could not bind TCP server" and hang.  netns.prepare_private_netns() checks
the range.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import venv
from .paths import REPO_DIR

NODE_CPUS = 2
HOST = "127.0.0.1"
DISPY_BASE_PORT = 21300
DISPYLIKE_BASE_PORT = 23300
MAX_RUNS_PER_SYSTEM = 500   # keeps each system's ports inside its own range
PORT_RANGE = (DISPY_BASE_PORT, DISPYLIKE_BASE_PORT + 2 * MAX_RUNS_PER_SYSTEM)

NodeCommand = Callable[[int, Path], list[str]]


@dataclass(frozen=True)
class System:
    name: str
    python: str                      # interpreter for client.py
    env: dict[str, str]              # environment for node and client
    base_port: int                   # 0: no network (ppe)
    node_command: NodeCommand | None

    def ports(self, run_index: int) -> tuple[int, int]:
        """(client dispy_port, node port) for the run_index-th run."""
        if run_index >= MAX_RUNS_PER_SYSTEM:
            raise ValueError("too many runs for this system's port range")
        client_port = self.base_port + 2 * run_index
        return client_port, client_port + 1


def node_args(port: int, dest: Path) -> list[str]:
    """The CLI both node daemons accept (dispynode.py's option names)."""
    return ["-i", HOST, "-c", str(NODE_CPUS), "-p", str(port),
            "--dest_path_prefix", str(dest), "--daemon"]


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # keep the venv and repo interpreters apart
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dispy_system() -> System:
    def command(port: int, dest: Path) -> list[str]:
        return [str(venv.venv_python()), str(venv.dispynode_script()), *node_args(port, dest)]
    return System("dispy", str(venv.venv_python()), base_env(), DISPY_BASE_PORT, command)


def byte_compile(source: str) -> bool:
    """Compile the dispylike package at ``source`` to ``__pycache__``, as ``pip install``
    does for an installed package (dispy's venv has its bytecode too).  A checkout
    run in place otherwise has none wherever PYTHONDONTWRITEBYTECODE is set (this
    VM sets it): every process then compiles the source at start, and a computation
    process that did holds ~1.6 MB more, which each job process it forks copies
    (W1 -2 to -3%, docs/PERFORMANCE.md).  False if some module did not compile."""
    import compileall
    package = Path(source) / "dispylike"
    return not package.is_dir() or bool(compileall.compile_dir(str(package), quiet=1))


def dispylike_system() -> System:
    # DISPYBENCH_DISPYLIKE_PATH: benchmark another checkout (or a stand-in
    # package when testing the harness itself) instead of this repo.
    source = os.environ.get("DISPYBENCH_DISPYLIKE_PATH") or str(REPO_DIR)
    env = dict(base_env(), PYTHONPATH=source)

    def command(port: int, dest: Path) -> list[str]:
        return [sys.executable, "-m", "dispylike.node", *node_args(port, dest)]
    return System("dispylike", sys.executable, env, DISPYLIKE_BASE_PORT, command)


def ppe_system() -> System:
    return System("ppe", sys.executable, base_env(), 0, None)


SYSTEMS: dict[str, Callable[[], System]] = {
    "dispy": dispy_system,
    "dispylike": dispylike_system,
    "ppe": ppe_system,
}

# Checks that the package and its node module can be found, without running
# the node's code: `python -m dispylike.node` needs a module, or a package
# with a __main__.
_DISPYLIKE_PROBE = (
    "import importlib.util as u, dispylike\n"
    "spec = u.find_spec('dispylike.node')\n"
    "if spec is None:\n"
    "    raise SystemExit('dispylike.node not found')\n"
    "if spec.submodule_search_locations is not None and "
    "u.find_spec('dispylike.node.__main__') is None:\n"
    "    raise SystemExit('dispylike.node is a package without __main__')\n"
)


def unavailable_reason(system: System) -> str | None:
    """Why `system` cannot be benchmarked here, or None if it can."""
    if system.name == "dispy":
        if venv.venv_ready():
            return None
        return f"dispy=={venv.DISPY_VERSION} venv missing ({venv.VENV_DIR})"
    if system.name == "dispylike":
        return probe(system, _DISPYLIKE_PROBE)
    return None


def probe(system: System, code: str) -> str | None:
    # Run from an empty directory so only PYTHONPATH decides what is found.
    with tempfile.TemporaryDirectory(prefix="dispybench-probe-") as cwd:
        try:
            proc = subprocess.run([system.python, "-c", code], env=system.env, cwd=cwd,
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "import timed out"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return "not runnable: " + (lines[-1] if lines else f"exit {proc.returncode}")
