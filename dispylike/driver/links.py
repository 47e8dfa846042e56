"""What the engine knows of its configuration and of each node it uses (plain state)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from .. import config
from ..execution.computation import Package
from ..nodes import DispyNode, NodeAllocate
from ..persistence.journal import RecoverJournal
from ..transport.connection import Connection
from ..transport.loop import set_event
from . import samehost


@dataclass
class EngineConfig:
    comp_id: str
    package: Package
    client_name: str
    secret: str = ''
    dest_path: str = ''
    remove_files: bool = True
    reentrant: bool = False
    dispy_port: int = config.DispyPort
    msg_timeout: float = config.MsgTimeout
    local_addr: str | None = None     # source address for connections to nodes
    client_addresses: list[str] = field(default_factory=list)  # for discovery
    ipv4_multicast: bool = False
    ping_interval: float | None = None
    pulse_interval: float = 0.0        # 0 = no pulses (a lost TCP link still counts)
    ssl_context: ssl.SSLContext | None = None
    tls_files: tuple[str, str, str] = ('', '', '')   # certfile, keyfile, cafile (local nodes)
    journal: RecoverJournal | None = None            # the recover file
    group: str = ''          # a dispyscheduler's id: its engines share the nodes they use


@dataclass
class NodeLink:
    key: str
    conn: Connection
    node: DispyNode
    outbox: list = field(default_factory=list)
    avg_job_time: float = 1.0        # moving average, seconds (start pessimistic)
    prefetch_per_cpu: int = 0        # jobs queued per CPU on the node (0: none)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None
    spec: NodeAllocate | None = None
    releasing: bool = False          # close_node / resetup_node in progress
    last_rx: float = 0.0             # monotonic time anything last came from the node
    idle: asyncio.Event = field(default_factory=set_event)   # no job of ours runs there
    user_paused: bool = False        # deallocate_node
    service_paused: bool = False     # the node is out of service hours
    shared: samehost.SharedDir | None = None   # the node's transfer directory, shared

    @property
    def accepting(self) -> bool:
        return not (self.user_paused or self.service_paused)
