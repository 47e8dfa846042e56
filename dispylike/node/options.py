"""dispynode's settings, shared by the command line, the config file and the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
#: Files, and bytes in all, one computation may store on the node (0 = no limit).
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_TOTAL_FILE_SIZE = 1024 * 1024 * 1024
#: Minutes a client may stay silent (no connection) before its computations are
#: terminated and its files cleaned (dispy's default).
DEFAULT_ZOMBIE_MINUTES = 60.0


@dataclass
class NodeOptions:
    hosts: list[str] = field(default_factory=list)
    ext_host: str = ''
    dispy_port: int = config.DispyPort
    node_port: int | None = None      # explicit TCP port (0 = any free); default NodePort
    cpus: int = 0                     # 0 = all; negative = all but that many
    name: str = ''
    dest_path_prefix: str = ''
    secret: str = ''
    clean: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_files: int = DEFAULT_MAX_FILES
    max_total_file_size: int = DEFAULT_MAX_TOTAL_FILE_SIZE
    msg_timeout: float = config.MsgTimeout
    cancel_grace: float = 5.0
    certfile: str = ''
    keyfile: str = ''
    cafile: str = ''
    ipv4_udp_multicast: bool = False
    discovery: bool = True            # answer UDP probes and announce at start-up
    scheduler_hosts: list[str] = field(default_factory=list)   # also announced to, unicast
    zombie_interval: float = DEFAULT_ZOMBIE_MINUTES   # minutes
    ping_interval: float = 0.0        # seconds between re-announcements while free; 0 = never
    service_start: str = ''           # HH:MM
    service_stop: str = ''
    service_end: str = ''
    serve: int = 0                    # exit after this many clients (0 = forever)
    client_shutdown: bool = False     # cleanup may call dispynode_shutdown()
    force_cleanup: bool = False       # remove clients' files even with cleanup=False
    unsafe_setup: bool = False        # setup/cleanup in the daemon's own process


def resolve_cpus(requested: int, available: int) -> int:
    """dispy's rule: 0 = all, negative = all but that many, else at most the machine's."""
    if requested == 0:
        return available
    if requested < 0:
        if available + requested < 1:
            raise ValueError(f'cpus {requested} leaves no CPU of {available}')
        return available + requested
    if requested > available:
        raise ValueError(f'cpus {requested} is more than the {available} this machine has')
    return requested
