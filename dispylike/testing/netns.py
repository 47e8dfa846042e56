"""Enter a private network namespace holding only ``lo`` (Linux, root or user namespaces).

Must be called while the process is single-threaded (network namespaces are
per thread; threads started later inherit it), e.g. at pytest start-up.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MARKER = 'DISPYLIKE_PRIVATE_NETNS'


def _unshare(flags: int) -> None:
    if hasattr(os, 'unshare'):
        os.unshare(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _write_map(path: str, line: str) -> None:
    with open(path, 'w') as f:
        f.write(line)


def interfaces() -> list[str]:
    """Names of the network interfaces visible to this process."""
    out = subprocess.run(['ip', '-o', 'link', 'show'], capture_output=True, text=True,
                         check=True).stdout
    return [line.split(':')[1].strip().split('@')[0] for line in out.splitlines() if ':' in line]


def enter_private_netns() -> str:
    """Enter a fresh namespace with only loopback up.  Returns what happened (for logs).

    Raises OSError when the machine does not allow it (not root, no user namespaces).
    """
    if os.environ.get(MARKER) == str(os.getpid()):
        return 'already in a private network namespace'
    uid, gid = os.getuid(), os.getgid()
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNET)
        how = 'private network namespace (root)'
    else:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        _write_map('/proc/self/setgroups', 'deny')
        _write_map('/proc/self/uid_map', f'0 {uid} 1')
        _write_map('/proc/self/gid_map', f'0 {gid} 1')
        how = 'private network namespace (user namespace)'
    subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
    names = interfaces()
    if names != ['lo']:
        raise OSError(f'private namespace is not private: interfaces {names}')
    os.environ[MARKER] = str(os.getpid())
    return how


def netns_status() -> str:
    """A one-line description of the current network namespace, for test headers."""
    try:
        names = interfaces()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f'unknown ({exc})'
    return 'only loopback' if names == ['lo'] else f'REAL interfaces visible: {names}'
