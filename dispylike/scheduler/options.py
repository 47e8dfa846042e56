"""dispyscheduler's settings, shared by the command line, the config file and the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config
from ..scheduling.share import SharePolicy

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_TOTAL_FILE_SIZE = 1024 * 1024 * 1024
#: Minutes a client may stay disconnected before its computations are closed
#: (jobs terminated on the nodes, files cleaned), as dispy's default.
DEFAULT_ZOMBIE_MINUTES = 60.0


@dataclass
class SchedulerOptions:
    nodes: list[str] = field(default_factory=list)     # hosts / patterns; [] = every node found
    hosts: list[str] = field(default_factory=list)     # addresses to listen on; [] = all
    ext_host: str = ''
    dispy_port: int = config.DispyPort
    scheduler_port: int | None = None  # TCP port for clients; default SharedSchedulerPort
    discovery_port: int | None = None  # UDP port for node announcements; default ClientPort
    ipv4_udp_multicast: bool = False
    node_secret: str = ''
    node_certfile: str = ''
    node_keyfile: str = ''
    node_cafile: str = ''
    cluster_secret: str = ''
    cluster_certfile: str = ''
    cluster_keyfile: str = ''
    cluster_cafile: str = ''
    pulse_interval: float = 0.0        # seconds; scheduler <-> nodes; 0 = no pulses
    ping_interval: float = 0.0         # seconds between discovery probes; 0 = at start only
    zombie_interval: float = DEFAULT_ZOMBIE_MINUTES   # minutes
    msg_timeout: float = config.MsgTimeout
    dest_path_prefix: str = ''
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_files: int = DEFAULT_MAX_FILES                    # per computation staged here
    max_total_file_size: int = DEFAULT_MAX_TOTAL_FILE_SIZE
    clean: bool = False
    policy: SharePolicy = SharePolicy.FIRST_COME
    cooperative: bool = False          # clients may change CPUs with set_node_cpus
    cleanup_nodes: bool = False        # remove computations' files on nodes even if kept
