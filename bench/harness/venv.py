"""A cached virtualenv holding the real dispy 4.15.2 (the reference system).

dispy 4.15.2 does not run on Python 3.12+, so the venv is built with a 3.11
interpreter regardless of which Python runs the harness.  It must be created
*before* entering the private network namespace, where PyPI is unreachable.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import BENCH_DIR

DISPY_VERSION = "4.15.2"
VENV_DIR = BENCH_DIR / ".venv-dispy"
# Candidates for the venv's interpreter, first match wins; DISPYBENCH_PY311
# lets another machine point at its own 3.11.
PY311_CANDIDATES = [
    os.environ.get("DISPYBENCH_PY311", ""),
    "/root/.pyenv/versions/3.11.7/bin/python",
    shutil.which("python3.11") or "",
]


def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def dispynode_script() -> Path:
    return VENV_DIR / "bin" / "dispynode.py"


def installed_dispy_version() -> str | None:
    """dispy version importable from the venv, or None if it is not usable."""
    if not venv_python().exists() or not dispynode_script().exists():
        return None
    try:
        proc = subprocess.run(
            [str(venv_python()), "-c", "import dispy; print(dispy.__version__)"],
            capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def venv_ready() -> bool:
    return installed_dispy_version() == DISPY_VERSION


def find_python311() -> str:
    for candidate in PY311_CANDIDATES:
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("no Python 3.11 found for the dispy venv; set DISPYBENCH_PY311")


def ensure_dispy_venv() -> None:
    """Create the venv and install dispy unless a correct one is cached."""
    if venv_ready():
        return
    print(f"[bench] creating {VENV_DIR} with dispy=={DISPY_VERSION} ...",
          file=sys.stderr, flush=True)
    subprocess.run([find_python311(), "-m", "venv", "--clear", str(VENV_DIR)],
                   check=True, timeout=300)
    subprocess.run([str(venv_python()), "-m", "pip", "install", "--quiet",
                    f"dispy=={DISPY_VERSION}"], check=True, timeout=600)
    if not venv_ready():
        raise RuntimeError(f"dispy=={DISPY_VERSION} still not importable from {VENV_DIR}")
