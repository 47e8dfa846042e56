"""Process control primitives shared by the node and the computation process."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time

_PR_SET_PDEATHSIG = 1
#: What a node started with --ready_fd N writes to fd N: '<READY_LINE> <ip> <port>\n'.
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


#: Free memory a daemon keeps for reuse instead of giving it back to the system at once.
KEEP_FREED = 256 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(limit: int = KEEP_FREED) -> bool:
    """Let glibc's malloc keep up to ``limit`` bytes of freed memory for reuse (dispylike's
    own processes only: node daemon, computation process and, inherited, its job
    processes).  By default a freed buffer over 128 KiB goes straight back to the
    system (munmap, or a trim of the heap top), so the next buffer of that size is
    fresh memory and every 4 KiB page of it faults on first touch: moving a 20 MB
    argument cost the node ~44,000 faults (~150 ms of CPU) per job.  False where this
    is not glibc."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        mallopt = _libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit) and mallopt(_M_TRIM_THRESHOLD, limit))


def release_freed_memory() -> bool:
    """Give the free memory glibc's malloc keeps (see :func:`keep_freed_memory`) back to
    the system: free pages anywhere in the heap, not only at its top (``malloc_trim``).
    False where this is not glibc."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


#: Set in the computation process's environment when the node added LD_BIND_NOW to it.
BIND_NOW_ADDED = 'DISPYLIKE_BIND_NOW_ADDED'

#: The directory holding the dispylike package this process runs.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a dispylike process we start (node, computation process): it
    imports this very package, whatever else is installed."""
    env = dict(os.environ, **(extra or {}))
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in [PACKAGE_ROOT, env.get('PYTHONPATH', '')] if p)
    return env


def read_ready_line(fd: int, timeout: float) -> tuple[str, int]:
    """Wait for a node's ready line on ``fd`` (then closed); returns (address, port).

    Raises TimeoutError, or ValueError if the node exited or wrote something else.
    """
    data = b''
    deadline = time.monotonic() + timeout
    try:
        while not data.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError('the node did not start in time')
            chunk = os.read(fd, 256)
            if not chunk:
                raise ValueError(f'the node exited before it was ready ({data!r})')
            data += chunk
    finally:
        os.close(fd)
    words = data.decode(errors='replace').split()
    if len(words) != 3 or words[0] != READY_LINE or not words[2].isdigit():
        raise ValueError(f'unexpected ready line {data!r}')
    return words[1], int(words[2])


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
