"""UDP beacons: nodes answer probes and announce themselves; clients probe and listen.

::

    client ──PROBE──> broadcast / multicast / unicast, UDP NodePort ──> node
    client <──ANNOUNCE── unicast to the probe's source ───────────────── node
    client <──ANNOUNCE── broadcast / multicast, UDP ClientPort ── node at start-up
    client ──PROBE──> unicast, UDP RelayPort ──> dispynetrelay (relay.state: it probes
                      its subnets and sends the nodes' ANNOUNCEs on, as they are)

Every datagram is authenticated (protocol.discovery) and at most
``protocol.discovery.MAX_DATAGRAM`` bytes; anything else is counted and
dropped.  Answers are rate-limited per source address and overall
(:class:`~.ratelimit.RateLimit`), so a node cannot be used to amplify a flood
and one flooding host cannot starve the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable

from .. import config
from ..errors import AuthenticationError, ProtocolError
from ..protocol import discovery as d
from .addresses import Interface, interfaces, is_loopback
from .ratelimit import RateLimit

log = logging.getLogger('dispylike.discovery')

#: Answers a node sends per second at most, in all and to one source address (the rest
#: of the probes are dropped; a client sends four in its first seconds).
MAX_REPLIES_PER_SECOND = 200
MAX_REPLIES_PER_SOURCE = 10


class _Beacon(asyncio.DatagramProtocol):
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.transports: list[asyncio.DatagramTransport] = []
        self.refused = 0

    def _decode(self, data: bytes, addr: tuple) -> d.Probe | d.Announce | None:
        try:
            return d.decode(data, self.secret)
        except (ProtocolError, AuthenticationError) as exc:
            self.refused += 1
            if self.refused <= 5 or self.refused % 1000 == 0:
                log.info('ignored datagram from %s: %s (%d so far)', addr[0], exc, self.refused)
            return None

    def send(self, data: bytes, target: tuple) -> None:
        family = socket.AF_INET6 if ':' in target[0] else socket.AF_INET
        for transport in self.transports:
            if transport.get_extra_info('socket').family == family:
                try:
                    transport.sendto(data, target)
                except OSError as exc:
                    log.debug('cannot send to %s: %s', target, exc)
                return

    def set_multicast_interface(self, address: str) -> None:
        for transport in self.transports:
            sock = transport.get_extra_info('socket')
            if sock.family == socket.AF_INET:
                try:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                    socket.inet_aton(address))
                except OSError as exc:
                    log.debug('multicast interface %s: %s', address, exc)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()


def _udp_socket(family: int, port: int, reuse_port: bool = False, bind_to: str = '',
                reuse_addr: bool = True) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind_to`` (all addresses if empty) and
    ``port``, with broadcast allowed (IPv4) or IPv6 only; closed again if binding fails."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, 'SO_REUSEPORT'):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind((bind_to, port))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((bind_to or '::', port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _join_groups(sock: socket.socket, ifaces: list[Interface]) -> None:
    for iface in ifaces:
        try:
            if sock.family == socket.AF_INET and ':' not in iface.address:
                mreq = socket.inet_aton(config.IPv4MulticastGroup) + \
                    socket.inet_aton(iface.address)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            elif sock.family == socket.AF_INET6 and ':' in iface.address:
                mreq = socket.inet_pton(socket.AF_INET6, config.IPv6MulticastGroup) + \
                    struct.pack('@I', iface.index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except OSError as exc:  # joined already (several addresses) or no multicast there
            log.debug('multicast join on %s: %s', iface.name, exc)


async def _open(protocol: _Beacon, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    protocol.transports.append(transport)


def _selected(addresses: list[str]) -> list[Interface]:
    """The interfaces to use: those with ``addresses`` (all but loopback if none given)."""
    ifaces = interfaces()
    if addresses:
        return [i for i in ifaces if i.address in addresses]
    return [i for i in ifaces if not is_loopback(i.address)]


class NodeBeacon(_Beacon):
    """The node's side: answer probes, announce at start-up."""

    def __init__(self, secret: str, announcement: Callable[[bytes], d.Announce]) -> None:
        super().__init__(secret)
        self.announcement = announcement
        self.silent = False          # out of service hours: probes are not answered
        self.limit = RateLimit(MAX_REPLIES_PER_SOURCE, MAX_REPLIES_PER_SECOND)

    async def start(self, port: int, addresses: list[str]) -> None:
        self.ifaces = _selected(addresses)
        loopback_only = bool(addresses) and all(is_loopback(a) for a in addresses)
        for family in {socket.AF_INET6 if ':' in i.address else socket.AF_INET
                       for i in self.ifaces} or {socket.AF_INET}:
            # a node serving only loopback must not answer probes from the network
            bind_to = next((a for a in addresses if (':' in a) == (family == socket.AF_INET6)),
                           '') if loopback_only else ''
            sock = _udp_socket(family, port, reuse_port=True, bind_to=bind_to)
            _join_groups(sock, self.ifaces)
            await _open(self, sock)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        msg = self._decode(data, addr)
        if not isinstance(msg, d.Probe) or self.silent:
            return
        if self.limit.allow(addr[0]):
            self.send(d.encode(self.announcement(msg.nonce), self.secret), addr[:2])
        elif self.limit.dropped <= 5 or self.limit.dropped % 1000 == 0:
            log.info('probe from %s not answered: over the rate cap (%d dropped so far)',
                     addr[0], self.limit.dropped)

    def announce(self, client_port: int, multicast_v4: bool,
                 unicast: list[str] = ()) -> list[str]:
        """Tell clients already waiting that this node is up (by broadcast or multicast,
        and to each ``unicast`` host).  Returns the targets."""
        data = d.encode(self.announcement(os.urandom(d.NONCE_SIZE)), self.secret)
        targets = _spray(self, data, self.ifaces, client_port, multicast_v4)
        for host in unicast:
            try:
                address = socket.getaddrinfo(host, client_port, type=socket.SOCK_DGRAM)[0][4]
            except OSError as exc:
                log.warning('cannot announce to %s: %s', host, exc)
                continue
            self.send(data, address[:2])
            targets.append(f'{address[0]}:{client_port}')
        return targets


def _spray(beacon: _Beacon, data: bytes, ifaces: list[Interface], port: int,
           multicast_v4: bool) -> list[str]:
    targets = []
    for iface in ifaces:
        if ':' in iface.address:
            target = f'{config.IPv6MulticastGroup}%{iface.name}'
            beacon.send(data, (config.IPv6MulticastGroup, port, 0, iface.index))
        elif multicast_v4:
            target = config.IPv4MulticastGroup
            beacon.set_multicast_interface(iface.address)
            beacon.send(data, (target, port))
        elif iface.broadcast:
            target = iface.broadcast
            beacon.send(data, (target, port))
        else:
            continue
        targets.append(f'{target}:{port} ({iface.name})')
    return targets


class ClientBeacon(_Beacon):
    """The client's side: probe for nodes, hear their announcements."""

    def __init__(self, secret: str, on_announce: Callable[[d.Announce, str], None]) -> None:
        super().__init__(secret)
        self.on_announce = on_announce
        self.targets: list[str] = []

    async def start(self, port: int, addresses: list[str]) -> None:
        self.ifaces = _selected(addresses)
        for family in {socket.AF_INET6 if ':' in i.address else socket.AF_INET
                       for i in self.ifaces} or {socket.AF_INET}:
            try:
                sock = _udp_socket(family, port, reuse_port=True)
            except OSError as exc:  # the client port is taken: announcements are missed
                log.warning('UDP port %d is in use (%s): nodes that start later will not be '
                            'seen until the next probe', port, exc)
                sock = _udp_socket(family, 0)
            _join_groups(sock, self.ifaces)
            await _open(self, sock)

    def probe(self, node_port: int, multicast_v4: bool) -> None:
        data = d.encode(d.Probe(os.urandom(d.NONCE_SIZE)), self.secret)
        self.targets = _spray(self, data, self.ifaces, node_port, multicast_v4)

    def probe_relays(self, hosts: list[str], relay_port: int) -> None:
        """Ask the dispynetrelay that may run on each of ``hosts`` (IP addresses) to probe
        its subnets; it sends the answers on to this beacon."""
        data = d.encode(d.Probe(os.urandom(d.NONCE_SIZE)), self.secret)
        for host in hosts:
            self.send(data, (host, relay_port))
            self.targets.append(f'{host}:{relay_port} (relay)')

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        msg = self._decode(data, addr)
        if isinstance(msg, d.Announce):
            self.on_announce(msg, addr[0])
