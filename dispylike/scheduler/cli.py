"""Command line of dispyscheduler (dispy's options; a config file as for dispynode)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from .. import config
from ..configfile import daemon_main
from ..execution.processes import READY_LINE, keep_freed_memory
from ..scheduling.share import SharePolicy
from ..version import __version__
from .daemon import SchedulerDaemon
from .options import (
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_TOTAL_FILE_SIZE,
    DEFAULT_ZOMBIE_MINUTES,
    SchedulerOptions,
)

SECTION = 'dispyscheduler'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='dispyscheduler',
                                description='Share dispylike nodes between client programs '
                                            '(SharedJobCluster).')
    p.add_argument('-n', '--node', action='append', default=[],
                   help='node to use: host name, address or pattern with * (repeatable; '
                        'default: every node found by UDP discovery)')
    p.add_argument('-i', '--host', action='append', default=[],
                   help='address to listen on for clients (repeatable; default: all)')
    p.add_argument('--ext_host', default='', help='address to advertise (NAT)')
    p.add_argument('-p', '--dispy_port', type=int, default=config.DispyPort,
                   help='base port (default %(default)s): clients connect to base+2 (TCP), '
                        'nodes are at base+1, node announcements come to base (UDP)')
    p.add_argument('--scheduler_port', type=int, default=None,
                   help='listen for clients on exactly this TCP port (0 = any free port)')
    p.add_argument('--discovery_port', type=int, default=None,
                   help='UDP port for node announcements (default: base port)')
    p.add_argument('--ipv4_udp_multicast', action='store_true',
                   help='probe for nodes with IPv4 multicast instead of broadcast')
    p.add_argument('--node_secret', default=None,
                   help='secret shared with nodes (default: $DISPYLIKE_NODE_SECRET or empty)')
    p.add_argument('--node_certfile', default='', help='TLS certificate for nodes')
    p.add_argument('--node_keyfile', default='', help='TLS key for nodes, if not in certfile')
    p.add_argument('--node_cafile', default='',
                   help='CA that node certificates must chain to (default: the certfile)')
    p.add_argument('--cluster_secret', default=None,
                   help='secret shared with clients (default: $DISPYLIKE_CLUSTER_SECRET or '
                        'empty)')
    p.add_argument('--cluster_certfile', default='',
                   help='TLS certificate for clients (they must use TLS)')
    p.add_argument('--cluster_keyfile', default='',
                   help='TLS key for clients, if not in certfile')
    p.add_argument('--cluster_cafile', default='',
                   help='CA that client certificates must chain to (default: the certfile)')
    p.add_argument('--pulse_interval', type=float, default=0.0,
                   help='seconds between pulses with nodes; a node silent for 5 is lost and '
                        'its jobs rescheduled (reentrant) or abandoned (0 = no pulses; a '
                        'broken connection still counts)')
    p.add_argument('--ping_interval', type=float, default=0.0,
                   help='seconds between discovery probes (0 = at start only)')
    p.add_argument('--zombie_interval', type=float, default=DEFAULT_ZOMBIE_MINUTES,
                   help='minutes a client may stay disconnected before its jobs are '
                        'terminated and its files cleaned (default %(default)g)')
    p.add_argument('--msg_timeout', type=float, default=config.MsgTimeout,
                   help='seconds a peer may take to answer')
    p.add_argument('--dest_path_prefix', default='',
                   help='directory for files clients send (staged before going to nodes)')
    p.add_argument('--max_file_size', type=int, default=DEFAULT_MAX_FILE_SIZE,
                   help='largest file accepted from a client, in bytes (0 = no limit)')
    p.add_argument('--max_files', type=int, default=DEFAULT_MAX_FILES,
                   help='files one computation may stage here (0 = no limit; default '
                        '%(default)s)')
    p.add_argument('--max_total_file_size', type=int, default=DEFAULT_MAX_TOTAL_FILE_SIZE,
                   help='bytes of files one computation may stage here in all (0 = no '
                        'limit; default 1 GiB)')
    p.add_argument('--clean', action='store_true',
                   help='remove files left under dest_path_prefix at start')
    policy = p.add_mutually_exclusive_group()
    policy.add_argument('--fair_cluster_scheduler', action='store_true',
                        help='share CPUs evenly between active computations')
    policy.add_argument('--early_cluster_scheduler', action='store_true',
                        help='prefer the computation that came first')
    p.add_argument('--cooperative', action='store_true',
                   help='let clients change the CPUs they use with set_node_cpus')
    p.add_argument('--cleanup_nodes', action='store_true',
                   help='remove computations\' files on nodes even if they ask to keep them')
    p.add_argument('--daemon', action='store_true',
                   help='accepted for dispy compatibility: the scheduler has no console')
    p.add_argument('-d', '--debug', action='store_true', help='log debug messages')
    p.add_argument('--config', metavar='FILE', help='read options from FILE (INI, section '
                                                    f'[{SECTION}]); command-line options win')
    p.add_argument('--save_config', metavar='FILE',
                   help='save the options in effect to FILE and exit')
    p.add_argument('--ready_fd', type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument('--exit_with_parent', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--version', action='version', version=f'dispylike {__version__}')
    return p


def options_from_args(args: argparse.Namespace) -> SchedulerOptions:
    for name in ('zombie_interval', 'ping_interval', 'pulse_interval', 'max_file_size',
                 'max_files', 'max_total_file_size'):
        if getattr(args, name) < 0:
            raise ValueError(f'--{name} must not be negative')
    if args.zombie_interval == 0:
        raise ValueError('--zombie_interval must be more than 0 minutes')
    if args.pulse_interval and not 1 <= args.pulse_interval <= 600:
        raise ValueError('--pulse_interval must be between 1 and 600 seconds')
    policy = (SharePolicy.FAIR if args.fair_cluster_scheduler else
              SharePolicy.EARLY if args.early_cluster_scheduler else SharePolicy.FIRST_COME)

    def secret(given: str | None, env: str) -> str:
        return given if given is not None else os.environ.get(env, '')

    return SchedulerOptions(
        nodes=args.node, hosts=args.host, ext_host=args.ext_host, dispy_port=args.dispy_port,
        scheduler_port=args.scheduler_port, discovery_port=args.discovery_port,
        ipv4_udp_multicast=args.ipv4_udp_multicast,
        node_secret=secret(args.node_secret, 'DISPYLIKE_NODE_SECRET'),
        node_certfile=args.node_certfile, node_keyfile=args.node_keyfile,
        node_cafile=args.node_cafile,
        cluster_secret=secret(args.cluster_secret, 'DISPYLIKE_CLUSTER_SECRET'),
        cluster_certfile=args.cluster_certfile, cluster_keyfile=args.cluster_keyfile,
        cluster_cafile=args.cluster_cafile, pulse_interval=args.pulse_interval,
        ping_interval=args.ping_interval, zombie_interval=args.zombie_interval,
        msg_timeout=args.msg_timeout, dest_path_prefix=args.dest_path_prefix,
        max_file_size=args.max_file_size, max_files=args.max_files,
        max_total_file_size=args.max_total_file_size, clean=args.clean, policy=policy,
        cooperative=args.cooperative, cleanup_nodes=args.cleanup_nodes)


async def run_scheduler(opts: SchedulerOptions, ready_fd: int = -1) -> None:
    daemon = SchedulerDaemon(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    if ready_fd >= 0:  # whoever started us waits for this line (tests)
        os.write(ready_fd, f'{READY_LINE} {daemon.ip_addr} {daemon.port}\n'.encode())
        os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        logging.getLogger('dispylike.scheduler').info('dispyscheduler shutting down')
        await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    def run(opts: SchedulerOptions, args: argparse.Namespace):
        keep_freed_memory()   # large payloads pass through, as on a node
        return run_scheduler(opts, args.ready_fd)
    return daemon_main('dispyscheduler', SECTION, build_parser(), options_from_args, run,
                       argv)
