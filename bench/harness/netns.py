"""Confine the whole benchmark to a private network namespace.

dispynode announces itself (and says goodbye on shutdown) with UDP
broadcasts out of every real interface.  Benchmark traffic must never leave
the machine, so run.py re-executes itself under `unshare --net`: the new
namespace holds only `lo`, which we bring up, and there is physically nowhere
else for a packet to go.  Every daemon and client is a descendant of that
process and so inherits the namespace.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .paths import RUN_SCRIPT

# Set by the outer invocation for the re-executed one.  It is only a hint:
# the inner process still verifies that it really sees nothing but `lo`.
ENV_FLAG = "DISPYBENCH_IN_NETNS"


class NetnsError(RuntimeError):
    pass


def inside_requested() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def interface_names() -> list[str]:
    # if_nameindex asks the kernel about the *current* namespace (unlike
    # /sys/class/net, which reflects the namespace sysfs was mounted in).
    return sorted(name for _, name in socket.if_nameindex())


def reexec_in_private_netns(argv: Sequence[str]) -> NoReturn:
    """Replace this process with itself running in a fresh network namespace."""
    if os.geteuid() != 0:
        raise NetnsError("creating a network namespace needs root (unshare --net)")
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NetnsError("`unshare` (util-linux) not found")
    env = dict(os.environ, **{ENV_FLAG: "1"})
    cmd = [unshare, "--net", "--", sys.executable, str(RUN_SCRIPT), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (Ctrl-C) and the exit code pass straight
    # through, and no outer process is left outside the namespace.
    os.execve(unshare, cmd, env)


def prepare_private_netns(fixed_ports: tuple[int, int]) -> None:
    """Bring `lo` up and refuse to go on unless `lo` is all there is."""
    names = interface_names()
    if names != ["lo"]:
        raise NetnsError(
            f"refusing to run: expected only 'lo' in the network namespace, found {names}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    check_loopback()
    keep_ephemeral_ports_away(fixed_ports)


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def keep_ephemeral_ports_away(fixed_ports: tuple[int, int]) -> None:
    """Make sure no outgoing connection can take one of our fixed ports.

    The setting is per network namespace, so narrowing it here (only if it
    overlaps) touches nothing outside the benchmark.
    """
    low, high = (int(x) for x in EPHEMERAL_RANGE.read_text().split())
    first, last = fixed_ports
    if high < first or low > last:
        return
    new_low = max(last + 1, 32768)
    EPHEMERAL_RANGE.write_text(f"{new_low} {max(high, new_low + 1000)}\n")


def check_loopback() -> None:
    """A listening socket on 127.0.0.1 must be reachable, or nothing works."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
