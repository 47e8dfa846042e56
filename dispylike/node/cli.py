"""Command line of dispynode."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .. import config
from ..execution.processes import READY_LINE, set_parent_death_signal
from ..log import setup_logging
from ..transport.loop import new_event_loop
from ..version import __version__
from .daemon import DEFAULT_MAX_FILE_SIZE, NodeDaemon, NodeOptions, resolve_cpus


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='dispynode', description='Run jobs for dispylike clients.')
    p.add_argument('-c', '--cpus', type=int, default=0,
                   help='CPUs to serve: 0 = all (default), negative N = all but N')
    p.add_argument('-i', '--host', action='append', default=[],
                   help='address to listen on (repeatable; default: all addresses)')
    p.add_argument('--ext_host', default='', help='address to advertise to clients (NAT)')
    p.add_argument('-p', '--dispy_port', type=int, default=config.DispyPort,
                   help='base port (default %(default)s); the node listens on base+1')
    p.add_argument('--node_port', type=int, default=None,
                   help='listen on exactly this TCP port (0 = any free port)')
    p.add_argument('-n', '--name', default='', help='node name (default: host name)')
    p.add_argument('--dest_path_prefix', default='',
                   help='directory under which computations get their files')
    p.add_argument('-s', '--secret', default=None,
                   help='shared secret (default: $DISPYLIKE_SECRET or empty)')
    p.add_argument('--max_file_size', type=int, default=DEFAULT_MAX_FILE_SIZE,
                   help='largest file accepted, in bytes (0 = no limit; default 10 MB)')
    p.add_argument('--msg_timeout', type=float, default=config.MsgTimeout,
                   help='seconds a peer may take to complete a handshake')
    p.add_argument('--certfile', default='',
                   help='TLS certificate (may hold the key too); clients must use TLS')
    p.add_argument('--keyfile', default='', help='TLS private key, if not in --certfile')
    p.add_argument('--cafile', default='',
                   help='CA certificates that client certificates must chain to '
                        '(default: the --certfile itself, for a shared self-signed one)')
    p.add_argument('--scheduler_host', action='append', default=[],
                   help='also announce this node, by unicast, to this host at start '
                        '(repeatable; a client or scheduler on another subnet)')
    p.add_argument('--ipv4_udp_multicast', action='store_true',
                   help='announce with IPv4 multicast instead of broadcast')
    p.add_argument('--clean', action='store_true',
                   help='remove files left under dest_path_prefix before starting')
    p.add_argument('--daemon', action='store_true',
                   help='run without interactive console (the console is not available yet)')
    p.add_argument('-d', '--debug', action='store_true', help='log debug messages')
    p.add_argument('--ready_fd', type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument('--exit_with_parent', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--version', action='version', version=f'dispylike {__version__}')
    return p


def options_from_args(args: argparse.Namespace) -> NodeOptions:
    resolve_cpus(args.cpus, os.cpu_count() or 1)  # validate early, clear message
    secret = args.secret if args.secret is not None else os.environ.get('DISPYLIKE_SECRET', '')
    return NodeOptions(hosts=args.host, ext_host=args.ext_host, dispy_port=args.dispy_port,
                       node_port=args.node_port, cpus=args.cpus, name=args.name,
                       dest_path_prefix=args.dest_path_prefix, secret=secret, clean=args.clean,
                       max_file_size=args.max_file_size, msg_timeout=args.msg_timeout,
                       certfile=args.certfile, keyfile=args.keyfile, cafile=args.cafile,
                       ipv4_udp_multicast=args.ipv4_udp_multicast,
                       scheduler_hosts=args.scheduler_host)


async def run_node(opts: NodeOptions, ready_fd: int = -1) -> None:
    node = NodeDaemon(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    if ready_fd >= 0:  # whoever started us waits for this line (embedded node, tests)
        os.write(ready_fd, f'{READY_LINE} {node.ip_addr} {node.port}\n'.encode())
        os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        logging.getLogger('dispylike.node').info('dispynode shutting down')
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.exit_with_parent:
        set_parent_death_signal(signal.SIGTERM)
    setup_logging(logging.DEBUG if args.debug else logging.INFO)
    try:
        loop = new_event_loop()
        loop.run_until_complete(run_node(opts, args.ready_fd))
    except OSError as exc:
        print(f'dispynode: {exc}', file=sys.stderr)
        return 1
    return 0
