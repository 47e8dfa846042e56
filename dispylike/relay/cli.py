"""Command line of dispynetrelay (``dispynetrelay``, ``python -m dispylike.relay``).

Without ``--daemon`` the relay reads commands on standard input: ``status``
(the counters), ``quit`` (or ``exit``), ``help``.  SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading

from .. import config
from ..errors import DispyError
from ..execution.processes import READY_LINE, set_parent_death_signal
from ..log import setup_logging
from ..security.tls import server_context
from ..transport.loop import new_event_loop
from ..version import __version__
from .daemon import RelayDaemon, RelayOptions

log = logging.getLogger('dispylike.relay')

HELP = """commands:
  status     what the relay serves and has relayed
  quit       stop the relay (also: exit)
  help       this text"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='dispynetrelay',
        description='Relay node discovery to clients on other subnets: run it on a host of '
                    'the nodes\' subnet and list that host and a wildcard for the subnet in '
                    'the client\'s nodes.')
    p.add_argument('-i', '--ip_addr', action='append', default=[],
                   help='address of an interface whose subnet the relay serves (repeatable; '
                        'default: every non-loopback interface)')
    p.add_argument('--scheduler_node', default='',
                   help='host of a dispyscheduler (or client) to tell about every node found '
                        'at start and every node that starts later')
    p.add_argument('-p', '--dispy_port', type=int, default=config.DispyPort,
                   help='base port (default %(default)s): nodes are probed on base+1 and heard '
                        'on base')
    p.add_argument('--relay_port', type=int, default=None,
                   help='UDP port for clients\' probes (default: base+3, where clients send them)')
    p.add_argument('--scheduler_port', type=int, default=None,
                   help='UDP port of the scheduler where nodes are relayed (default: base)')
    p.add_argument('-s', '--secret', default=None,
                   help='shared secret of the clients and nodes (default: $DISPYLIKE_SECRET '
                        'or empty); datagrams signed with another one are not relayed')
    p.add_argument('--certfile', default='',
                   help='accepted as dispy\'s relay does, checked and otherwise unused: the '
                        'relay makes no TCP connection (datagrams carry a MAC instead)')
    p.add_argument('--keyfile', default='', help='TLS private key, if not in --certfile')
    p.add_argument('--ipv4_udp_multicast', action='store_true',
                   help='probe the subnets by IPv4 multicast instead of broadcast')
    p.add_argument('--daemon', action='store_true',
                   help='run without the console (status, quit) on standard input')
    p.add_argument('-d', '--debug', action='store_true', help='log debug messages')
    p.add_argument('--ready_fd', type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument('--exit_with_parent', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--version', action='version', version=f'dispylike {__version__}')
    return p


def options_from_args(args: argparse.Namespace) -> RelayOptions:
    """RelayOptions, or ValueError with a message for the user."""
    for name in ('dispy_port', 'relay_port', 'scheduler_port'):
        value = getattr(args, name)
        if value is not None and not 0 < value < 65536:
            raise ValueError(f'--{name} must be a port number (1-65535)')
    if args.keyfile and not args.certfile:
        raise ValueError('--keyfile needs --certfile')
    if args.certfile:
        try:
            server_context(args.certfile, args.keyfile or None)
        except (DispyError, OSError) as exc:   # OSError: unreadable as a CA file
            raise ValueError(f'cannot load certificate {args.certfile!r}: {exc}') from None
    secret = args.secret if args.secret is not None else os.environ.get('DISPYLIKE_SECRET', '')
    return RelayOptions(addresses=list(args.ip_addr), scheduler_node=args.scheduler_node,
                        dispy_port=args.dispy_port, relay_port=args.relay_port,
                        scheduler_port=args.scheduler_port, secret=secret,
                        certfile=args.certfile, keyfile=args.keyfile,
                        ipv4_udp_multicast=args.ipv4_udp_multicast)


def status_text(relay: RelayDaemon) -> str:
    ifaces = ', '.join(f'{i.address} ({i.name})' for i in relay.sockets.ifaces) or 'nothing'
    return (f'relay on UDP port {relay.opts.relay_port_in_effect()} serving {ifaces}\n'
            f'  clients heard recently: {len(relay.state.clients)}\n'
            f'  {relay.stats.describe()}')


def handle_command(relay: RelayDaemon, line: str, quit_event: asyncio.Event) -> str:
    """Run one console command; returns what to print."""
    words = line.split()
    if not words:
        return ''
    if words[0] == 'status':
        return status_text(relay)
    if words[0] in ('quit', 'exit'):
        quit_event.set()
        return 'quitting'
    if words[0] == 'help':
        return HELP
    return f'unknown command {words[0]!r}; try "help"'


def start_console(relay: RelayDaemon, quit_event: asyncio.Event) -> None:
    """Read commands from standard input on a daemon thread (end of input ends the console)."""
    stream = sys.stdin
    try:
        usable = stream is not None and not stream.closed and not (
            os.isatty(stream.fileno()) and os.tcgetpgrp(stream.fileno()) != os.getpgrp())
    except (OSError, ValueError):
        usable = False
    if not usable:
        log.info('no console (standard input is not available); use --daemon to say so')
        return
    loop = asyncio.get_running_loop()

    def run(line: str) -> None:
        reply = handle_command(relay, line, quit_event)
        if reply:
            print(reply, flush=True)

    def read() -> None:
        print('dispynetrelay console: type "help" for commands', flush=True)
        for line in stream:
            if loop.is_closed():
                return
            loop.call_soon_threadsafe(run, line)

    threading.Thread(target=read, name='dispynetrelay-console', daemon=True).start()


async def run_relay(opts: RelayOptions, ready_fd: int = -1, console: bool = False) -> None:
    relay = RelayDaemon(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await relay.start()
    try:
        if ready_fd >= 0:  # whoever started us waits for this line (tests)
            os.write(ready_fd, f'{READY_LINE} relay {opts.relay_port_in_effect()}\n'.encode())
            os.close(ready_fd)
        if console:
            start_console(relay, stop)
        await stop.wait()
    finally:
        await relay.stop()


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
    loop = new_event_loop()
    try:
        loop.run_until_complete(run_relay(opts, args.ready_fd, console=not args.daemon))
    except OSError as exc:
        print(f'dispynetrelay: {exc}', file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0
