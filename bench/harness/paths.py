"""Filesystem locations shared by the harness modules."""
from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
CLIENT_SCRIPT = BENCH_DIR / "client.py"
RUN_SCRIPT = BENCH_DIR / "run.py"
