"""dispynetrelay's daemon: verifies datagrams, asks relay.state what to do, does it.

::

    RelaySockets ──datagram──> RelayDaemon.datagram ──decode (MAC)──> RelayState
         ^                                                              │
         └──────── probe_subnets / send (the node's datagram as is) <───┘

Every datagram is handled here and nowhere else: anything that does not verify
is counted and dropped (logged the first few times, then every thousandth), and
nothing raises out of the handler, so garbage on the relay's ports costs a MAC
computation at most.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import config
from ..discovery.relaying import DatagramHandler, RelaySockets
from ..errors import AuthenticationError, ProtocolError
from ..protocol import discovery as d
from .state import RelayLimits, RelayState, RelayStats, Target

log = logging.getLogger('dispylike.relay')

#: Seconds after start at which the relay probes its subnets for the scheduler
#: (more than once: datagrams get lost).
SCHEDULER_PROBES = (0.0, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class RelayOptions:
    addresses: list[str] = field(default_factory=list)   # interfaces served (all if empty)
    scheduler_node: str = ''
    dispy_port: int = config.DispyPort
    relay_port: int | None = None          # None: RelayPort of dispy_port
    scheduler_port: int | None = None      # None: ClientPort of dispy_port
    secret: str = ''
    certfile: str = ''
    keyfile: str = ''
    ipv4_udp_multicast: bool = False
    limits: RelayLimits = RelayLimits()

    def relay_port_in_effect(self) -> int:
        if self.relay_port is not None:
            return self.relay_port
        return config.port_of('RelayPort', self.dispy_port)

    def scheduler_port_in_effect(self) -> int:
        """Where the scheduler hears nodes: the client port of its dispy_port."""
        if self.scheduler_port is not None:
            return self.scheduler_port
        return config.port_of('ClientPort', self.dispy_port)


class RelayDaemon:
    """``await start()``, then it relays until ``await stop()``."""

    def __init__(self, opts: RelayOptions, clock: Callable[[], float] = time.monotonic,
                 sockets: Callable[[DatagramHandler], RelaySockets] = RelaySockets) -> None:
        self.opts = opts
        self.clock = clock
        self.sockets = sockets(self.datagram)    # tests pass a fake
        self.state = RelayState(lambda: os.urandom(d.NONCE_SIZE), None, opts.limits)
        self.node_port = config.port_of('NodePort', opts.dispy_port)
        self._tasks: set[asyncio.Task] = set()

    @property
    def stats(self) -> RelayStats:
        return self.state.stats

    async def start(self) -> None:
        relay_port = self.opts.relay_port_in_effect()
        if self.opts.scheduler_node:
            self.state.scheduler = await _resolve(self.opts.scheduler_node,
                                                  self.opts.scheduler_port_in_effect())
        await self.sockets.start(relay_port, config.port_of('ClientPort', self.opts.dispy_port),
                                 self.opts.addresses)
        log.info('dispynetrelay: probes taken on UDP port %d; serving %s; nodes that start '
                 'are heard on %s; relaying to %s', relay_port,
                 ', '.join(f'{i.address} ({i.name})' for i in self.sockets.ifaces) or 'nothing',
                 ', '.join(self.sockets.listening) or 'nothing',
                 'clients that probe' + (f' and the scheduler {_show(self.state.scheduler)}'
                                         if self.state.scheduler else ''))
        if self.state.scheduler is not None:
            self._spawn(self._probe_for_scheduler())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.sockets.close()
        log.info('dispynetrelay: %s', self.stats.describe())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_for_scheduler(self) -> None:
        started = self.clock()
        for at in SCHEDULER_PROBES:
            await asyncio.sleep(max(0.0, at - (self.clock() - started)))
            self._send_probe(self.state.probe_for_scheduler(self.clock()))

    # --- the datagram handler -------------------------------------------------------
    def datagram(self, data: bytes, addr: tuple, on_client_port: bool) -> None:
        """Handle one datagram from ``addr``; never raises for what a peer can send."""
        try:
            msg = d.decode(data, self.opts.secret)
        except (ProtocolError, AuthenticationError) as exc:
            self._refused(addr, exc)
            return
        source: Target = (addr[0], addr[1])
        if isinstance(msg, d.Probe):
            if on_client_port:   # clients probe the relay port; this is someone's broadcast
                self.stats.unexpected += 1
                return
            log.debug('probe from %s', _show(source))
            self._send_probe(self.state.on_probe(source, msg.nonce, self.clock()))
            return
        targets = self.state.on_announce(data, msg, self.clock())
        for target in targets:
            self.sockets.send(data, target)
        if targets:
            log.debug('node %s at %s:%d relayed to %s', msg.name, msg.ip_addr, msg.port,
                      ', '.join(map(_show, targets)))

    def _send_probe(self, probe: d.Probe | None) -> None:
        if probe is not None:
            where = self.sockets.probe_subnets(d.encode(probe, self.opts.secret),
                                               self.node_port, self.opts.ipv4_udp_multicast)
            log.debug('probed %s', ', '.join(where) or 'nothing (no interface with broadcast)')

    def _refused(self, addr: tuple, exc: Exception) -> None:
        self.stats.refused += 1
        count = self.stats.refused
        if count <= 5 or count % 1000 == 0:
            log.info('ignored datagram from %s: %s (%d so far)', addr[0], exc, count)


def _show(target: Target | None) -> str:
    if target is None:
        return '-'
    host, port = target
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


async def _resolve(host: str, port: int) -> Target:
    """(address, port) of ``host``; OSError if it does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f'cannot resolve {host!r}')
    address = infos[0][4]
    return address[0], address[1]
