"""dispynode's interactive console (when started without ``--daemon``).

Lines are read from standard input on a thread of their own and handled on the
node's event loop.  Commands: ``status``, ``cpus N``, ``quit`` (or ``exit``),
``help``.  End of input ends the console, not the node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import TextIO

from .daemon import NodeDaemon

log = logging.getLogger('dispylike.node')

HELP = """commands:
  status     what the node serves and runs
  cpus N     serve N CPUs (0 = all, negative = all but N)
  quit       terminate running jobs and exit (also: exit)
  help       this text"""


def status_text(node: NodeDaemon) -> str:
    running = node.cpus - node.free
    owner = ', '.join(o.client + ('' if o.attached else ' (disconnected)')
                      for o in node.owners) or '-'
    lines = [f'node "{node.name}" at {node.ip_addr}:{node.port}',
             f'  CPUs served: {node.cpus}   running jobs: {running}   queued: {len(node.queue)}'
             f'   jobs done: {node.jobs_done}',
             f'  client: {owner}   clients served: {node.served}',
             f'  service: {node.service.value}'
             + ('' if node.hours.always else f' ({node.hours.describe()})')]
    return '\n'.join(lines)


def handle_command(node: NodeDaemon, line: str, quit_event: asyncio.Event) -> str:
    """Run one console command; returns what to print."""
    words = line.split()
    if not words:
        return ''
    cmd, args = words[0].lower(), words[1:]
    if cmd == 'status':
        return status_text(node)
    if cmd == 'cpus':
        if len(args) != 1:
            return 'usage: cpus N'
        try:
            cpus = node.set_cpus(int(args[0]))
        except ValueError as exc:
            return f'cpus: {exc}'
        return f'serving {cpus} CPU(s)'
    if cmd in ('quit', 'exit'):
        quit_event.set()
        return 'quitting'
    if cmd == 'help':
        return HELP
    return f'unknown command {cmd!r}; try "help"'


def in_background(stream: TextIO) -> bool:
    """True if reading ``stream`` would stop this process (a background job on a tty)."""
    try:
        fd = stream.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except (OSError, ValueError):
        return False


def start_console(node: NodeDaemon, quit_event: asyncio.Event,
                  stream: TextIO = sys.stdin, out: TextIO = sys.stdout) -> threading.Thread | None:
    """Read commands from ``stream`` on a daemon thread; None if there is no console."""
    if stream is None or stream.closed or in_background(stream):
        log.info('no console (standard input is not available); use --daemon to say so')
        return None
    loop = asyncio.get_running_loop()

    def run(line: str) -> None:
        reply = handle_command(node, line, quit_event)
        if reply:
            print(reply, file=out, flush=True)

    def read() -> None:
        print('dispynode console: type "help" for commands', file=out, flush=True)
        for line in stream:
            if loop.is_closed():
                return
            loop.call_soon_threadsafe(run, line)
        log.debug('console input ended')

    thread = threading.Thread(target=read, name='dispynode-console', daemon=True)
    thread.start()
    return thread


__all__ = ['handle_command', 'start_console', 'status_text']
