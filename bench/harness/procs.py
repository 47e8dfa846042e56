"""Child processes we start, and only those, with bounded waits.

Every child runs in its own session, so it leads a process group holding
itself and whatever it forks (dispynode's job processes, a pool's workers).
To kill a group safely we keep the leader *unreaped* (waitid WNOWAIT) until
the group has been killed: while the leader is a zombie its PID, and hence
the group ID, cannot be reused by an unrelated process.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

POLL_S = 0.05
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if the harness itself is killed (even
    SIGKILL, which skips our finally blocks), the kernel kills the child."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass  # best effort; the normal stop() path still applies


class Spawned:
    """A child process group with its stdout/stderr going to log files."""

    def __init__(self, cmd: Sequence[str], stdout_path: Path, stderr_path: Path,
                 env: Mapping[str, str], cwd: Path) -> None:
        self.cmd = list(cmd)
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        # Files, not pipes: nobody has to drain them, so a chatty child can
        # never block on a full pipe while we wait on it.
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=dict(env), cwd=str(cwd), start_new_session=True,
                preexec_fn=die_with_parent)
        self.pid = self.proc.pid
        self.returncode: int | None = None

    def exited(self) -> bool:
        """Has the leader exited?  Does not reap it (see module doc)."""
        if self.returncode is not None:
            return True
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _signal_group(self, sig: int) -> None:
        if self.returncode is not None:
            return  # leader reaped: the group ID is no longer ours to signal
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the group, SIGKILL what is left after `grace`, then reap."""
        if self.returncode is not None:
            return self.returncode
        if not self.exited():
            self._signal_group(signal.SIGTERM)
            self.wait_exit(grace)
        # Leftover members (e.g. a node's job processes) even if the leader
        # already exited by itself.
        self._signal_group(signal.SIGKILL)
        self.returncode = self.proc.wait(timeout=grace)
        return self.returncode

    def tail(self, lines: int = 8) -> str:
        """Last lines of stderr (else stdout), for error messages."""
        for path in (self.stderr_path, self.stdout_path):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return "\n".join(text.splitlines()[-lines:])
        return ""
