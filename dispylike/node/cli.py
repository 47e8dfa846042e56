"""Command line of dispynode.

Options may also come from a config file (``--config FILE``, INI format, one
``[dispynode]`` section whose keys are the long option names); options given on
the command line win.  ``--save_config FILE`` writes the options in effect and
exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from .. import config
from ..configfile import daemon_main
from ..execution.processes import READY_LINE, keep_freed_memory
from ..version import __version__
from .console import start_console
from .daemon import NodeDaemon
from .options import (
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_TOTAL_FILE_SIZE,
    DEFAULT_ZOMBIE_MINUTES,
    NodeOptions,
    resolve_cpus,
)
from .service import ServiceHours

SECTION = 'dispynode'


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
    p.add_argument('--max_files', type=int, default=DEFAULT_MAX_FILES,
                   help='files one computation may store (0 = no limit; default %(default)s)')
    p.add_argument('--max_total_file_size', type=int, default=DEFAULT_MAX_TOTAL_FILE_SIZE,
                   help='bytes of files one computation may store in all (0 = no limit; '
                        'default 1 GiB)')
    p.add_argument('--msg_timeout', type=float, default=config.MsgTimeout,
                   help='seconds a peer may take to complete a handshake')
    p.add_argument('--zombie_interval', type=float, default=DEFAULT_ZOMBIE_MINUTES,
                   help='minutes a client may stay disconnected before its jobs are '
                        'terminated and its files cleaned (default %(default)g); until then '
                        'its jobs run on and their results are kept for it')
    p.add_argument('--ping_interval', type=float, default=0.0,
                   help='seconds between re-announcements while no client uses the node '
                        '(0 = announce at start only)')
    p.add_argument('--service_start', default='', metavar='HH:MM',
                   help='time of day the node starts taking jobs')
    p.add_argument('--service_stop', default='', metavar='HH:MM',
                   help='time of day the node stops taking new jobs (running jobs go on)')
    p.add_argument('--service_end', default='', metavar='HH:MM',
                   help='time of day the node terminates running jobs')
    p.add_argument('--serve', type=int, default=0, metavar='N',
                   help='exit after serving N clients (0 = serve forever)')
    p.add_argument('--client_shutdown', action='store_true',
                   help='let a computation\'s cleanup call dispynode_shutdown() to stop the node')
    p.add_argument('--force_cleanup', action='store_true',
                   help='remove clients\' files at the end even if they ask to keep them')
    p.add_argument('--unsafe_setup', action='store_true',
                   help='run setup and cleanup in the node\'s own process (default: in the '
                        'computation\'s process, so one computation cannot disturb the node)')
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
                   help='remove files left under dest_path_prefix at start and at exit')
    p.add_argument('--daemon', action='store_true',
                   help='run without the interactive console (status, cpus N, quit)')
    p.add_argument('-d', '--debug', action='store_true', help='log debug messages')
    p.add_argument('--config', metavar='FILE', help='read options from FILE (INI, section '
                                                    f'[{SECTION}]); command-line options win')
    p.add_argument('--save_config', metavar='FILE',
                   help='save the options in effect to FILE and exit')
    p.add_argument('--ready_fd', type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument('--exit_with_parent', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--version', action='version', version=f'dispylike {__version__}')
    return p


def options_from_args(args: argparse.Namespace) -> NodeOptions:
    resolve_cpus(args.cpus, os.cpu_count() or 1)  # validate early, clear message
    ServiceHours.parse(args.service_start, args.service_stop, args.service_end)
    for name in ('zombie_interval', 'ping_interval', 'max_file_size', 'max_files',
                 'max_total_file_size', 'serve'):
        if getattr(args, name) < 0:
            raise ValueError(f'--{name} must not be negative')
    if args.zombie_interval == 0:
        raise ValueError('--zombie_interval must be more than 0 minutes')
    secret = args.secret if args.secret is not None else os.environ.get('DISPYLIKE_SECRET', '')
    return NodeOptions(hosts=args.host, ext_host=args.ext_host, dispy_port=args.dispy_port,
                       node_port=args.node_port, cpus=args.cpus, name=args.name,
                       dest_path_prefix=args.dest_path_prefix, secret=secret, clean=args.clean,
                       max_file_size=args.max_file_size, max_files=args.max_files,
                       max_total_file_size=args.max_total_file_size,
                       msg_timeout=args.msg_timeout,
                       certfile=args.certfile, keyfile=args.keyfile, cafile=args.cafile,
                       ipv4_udp_multicast=args.ipv4_udp_multicast,
                       scheduler_hosts=args.scheduler_host,
                       zombie_interval=args.zombie_interval, ping_interval=args.ping_interval,
                       service_start=args.service_start, service_stop=args.service_stop,
                       service_end=args.service_end, serve=args.serve,
                       client_shutdown=args.client_shutdown, force_cleanup=args.force_cleanup,
                       unsafe_setup=args.unsafe_setup)


async def run_node(opts: NodeOptions, ready_fd: int = -1, console: bool = False) -> None:
    node = NodeDaemon(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    if ready_fd >= 0:  # whoever started us waits for this line (embedded node, tests)
        os.write(ready_fd, f'{READY_LINE} {node.ip_addr} {node.port}\n'.encode())
        os.close(ready_fd)
    if console:
        start_console(node, stop)
    try:
        waits = [loop.create_task(stop.wait()), loop.create_task(node.done.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
    finally:
        logging.getLogger('dispylike.node').info('dispynode shutting down')
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    def run(opts: NodeOptions, args: argparse.Namespace):
        keep_freed_memory()
        return run_node(opts, args.ready_fd, console=not args.daemon)
    return daemon_main('dispynode', SECTION, build_parser(), options_from_args, run, argv)
