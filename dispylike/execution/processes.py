"""Process control primitives shared by the node and the computation process."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
#: First stdout line of a node started with --announce: '<READY_LINE> <ip> <port>'.
READY_LINE = 'DISPYLIKE-NODE-READY'
_libc = None


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    This is what guarantees that killing a node (even with SIGKILL) leaves no
    job process running unobserved.
    """
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def describe_wait_status(status: int) -> str:
    """'exit status N' or 'killed by SIGxxx' for a raw wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f'signal {sig}'
        return f'killed by {name}'
    if os.WIFEXITED(status):
        return f'exit status {os.WEXITSTATUS(status)}'
    return f'wait status {status:#x}'
