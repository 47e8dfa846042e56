"""Node records and node selection: DispyNode, DispyNodeAvailInfo, NodeAllocate, LocalNode."""

from __future__ import annotations

import fnmatch
import socket
import time
from dataclasses import dataclass
from typing import Any

from .status import NodeStatus


@dataclass(frozen=True)
class DispyNodeAvailInfo:
    """A node's availability: CPU use %, free memory and disk (bytes), swap use %."""
    cpu: float
    memory: int
    disk: int
    swap: float


class DispyNode:
    """What the client knows about a node (passed to ``cluster_status``)."""

    Initialized = NodeStatus.Initialized
    Closed = NodeStatus.Closed
    AvailInfo = NodeStatus.AvailInfo

    def __init__(self, ip_addr: str, port: int, name: str, cpus: int, platform: str = '') -> None:
        self.ip_addr = ip_addr
        self.port = port
        self.name = name
        self.cpus = cpus
        self.avail_cpus = cpus
        self.busy = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        self.tx = 0
        self.rx = 0
        self.avail_info: DispyNodeAvailInfo | None = None
        self.platform = platform
        self.update_time = time.time()

    def __repr__(self) -> str:
        return f'<DispyNode {self.name} {self.ip_addr}:{self.port} cpus={self.cpus}>'


class NodeAllocate:
    """Which nodes to use and how many CPUs on each (subclass and override :meth:`allocate`).

    ``host`` is a host name, an IP address or an IP pattern with ``*``
    wildcards; ``port`` the node's TCP port (default: the NodePort of the
    cluster's ``dispy_port``); ``cpus`` the most CPUs to use (0 = all, negative
    = all but that many); ``depends`` per-node files; ``setup_args`` arguments
    for ``setup`` and ``cleanup`` on matching nodes.
    """

    def __init__(self, host: str, port: int | None = None, cpus: int = 0,
                 depends: list | None = None, setup_args: tuple = ()) -> None:
        self.host = host
        self.ip_addr = _resolve(host)
        self.port = port
        self.cpus = cpus
        self.depends = list(depends or [])
        self.setup_args = tuple(setup_args)

    @property
    def is_pattern(self) -> bool:
        return '*' in self.host

    def matches(self, ip_addr: str, name: str = '') -> bool:
        if self.is_pattern:
            return fnmatch.fnmatchcase(ip_addr, self.host)
        return ip_addr == self.ip_addr or (bool(name) and name == self.host)

    def allocate(self, cluster: Any, ip_addr: str, name: str, cpus: int,
                 avail_info: DispyNodeAvailInfo | None = None, platform: str = '') -> int:
        """How many CPUs of this node the cluster uses (0 = skip the node)."""
        if self.cpus > 0:
            return min(self.cpus, cpus)
        if self.cpus < 0:
            return max(0, cpus + self.cpus)
        return cpus

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.host!r}, port={self.port}, cpus={self.cpus})'


class LocalNode(NodeAllocate):
    """An embedded node: the cluster starts a real dispynode on 127.0.0.1 and stops it at close.

    ``JobCluster(compute, nodes=[LocalNode()])`` runs jobs on this machine with no
    daemon started by hand.  ``cpus`` as for dispynode's ``-c`` (0 = all).
    """

    def __init__(self, cpus: int = 0, depends: list | None = None, setup_args: tuple = (),
                 debug: bool = False) -> None:
        super().__init__('127.0.0.1', None, 0, depends, setup_args)
        self.node_cpus = cpus
        self.debug = debug


def _resolve(host: str) -> str:
    if '*' in host:
        return host
    try:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except (OSError, IndexError):
        return host


def node_spec(entry: Any) -> NodeAllocate:
    """Turn a ``nodes`` entry (str, (host, port) tuple, NodeAllocate) into a NodeAllocate."""
    if isinstance(entry, NodeAllocate):
        return entry
    if isinstance(entry, str):
        return NodeAllocate(entry)
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
        return NodeAllocate(entry[0], int(entry[1]))
    raise TypeError(f'nodes entry {entry!r}: expected a host, (host, port) or NodeAllocate')
