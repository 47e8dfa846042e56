"""The UDP sockets of dispynetrelay (the decisions are in relay.state).

::

    RelayPort  (wildcard, one per family, not shared): clients' PROBEs in, the relay's
               PROBEs out to its subnets, nodes' answers in, everything relayed out
    ClientPort (bound to each subnet's broadcast address and to the multicast
               groups, shared by SO_REUSEPORT): nodes' start-up ANNOUNCEs in

Why these ports.  A UDP port shared with SO_REUSEPORT hands each *unicast*
datagram to one socket of the group, picked by a hash of the addresses, and
every broadcast/multicast datagram to all of them.  So the relay never binds
the node port (a dispynode on the same host would lose the unicast probes the
hash gives the relay) and takes clients' probes on a port of its own.  On the
client port it binds only broadcast and multicast addresses: a socket bound to
10.78.0.255 gets datagrams sent to 10.78.0.255 and nothing else, so a client or
dispyscheduler on the same host still gets every unicast answer and
announcement meant for it, while everyone hears the nodes that start.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from .. import config
from .addresses import Interface
from .beacon import _Beacon, _join_groups, _open, _selected, _spray, _udp_socket

log = logging.getLogger('dispylike.relay')

#: on_datagram(data, source address, heard_on_client_port)
DatagramHandler = Callable[[bytes, tuple, bool], None]


class _Endpoint(_Beacon):
    """Hands every datagram, undecoded, to the handler."""

    def __init__(self, handler: DatagramHandler, on_client_port: bool) -> None:
        super().__init__('')
        self.handler = handler
        self.on_client_port = on_client_port

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.handler(data, addr, self.on_client_port)

    def error_received(self, exc: Exception) -> None:
        log.debug('UDP error: %s', exc)


def _relay_socket(family: int, port: int, bind_to: str = '', shared: bool = False
                  ) -> socket.socket:
    """A UDP socket bound to ``bind_to`` (all addresses if empty) and ``port``.

    ``shared`` sockets set SO_REUSEADDR and SO_REUSEPORT, as clients' and nodes'
    beacons do, to coexist with them; the relay port is not shared, so a second
    relay on it fails at start instead of taking half the probes.
    """
    return _udp_socket(family, port, reuse_port=shared, bind_to=bind_to, reuse_addr=shared)


class RelaySockets:
    """Open with :meth:`start`; every datagram goes to ``handler``; :meth:`close` is idempotent."""

    def __init__(self, handler: DatagramHandler) -> None:
        self.relay = _Endpoint(handler, on_client_port=False)
        self.listen = _Endpoint(handler, on_client_port=True)
        self.ifaces: list[Interface] = []
        self.listening: list[str] = []

    async def start(self, relay_port: int, client_port: int, addresses: list[str]) -> None:
        """Bind ``relay_port`` (OSError if taken) and listen on ``client_port`` of the
        subnets of ``addresses`` (all non-loopback interfaces if empty).  OSError if
        an address is on no interface (a typo would leave a relay that serves nothing)."""
        self.ifaces = _selected(addresses)
        missing = sorted(set(addresses) - {i.address for i in self.ifaces})
        if missing:
            raise OSError(f'no interface has the address {", ".join(missing)}')
        families = {socket.AF_INET6 if ':' in i.address else socket.AF_INET
                    for i in self.ifaces} or {socket.AF_INET}
        try:
            for family in sorted(families):
                await _open(self.relay, _relay_socket(family, relay_port))
            for bind_to, family in self._listen_addresses(families):
                try:
                    sock = _relay_socket(family, client_port, bind_to, shared=True)
                except OSError as exc:
                    log.warning('cannot listen on %s:%d (%s): nodes that start later are '
                                'not relayed from there', bind_to, client_port, exc)
                    continue
                if bind_to in (config.IPv4MulticastGroup, config.IPv6MulticastGroup):
                    _join_groups(sock, self.ifaces)
                await _open(self.listen, sock)
                self.listening.append(f'{bind_to}:{client_port}')
        except BaseException:
            self.close()
            raise

    def _listen_addresses(self, families: set[int]) -> list[tuple[str, int]]:
        out = []
        if socket.AF_INET in families:
            for bcast in sorted({i.broadcast for i in self.ifaces if i.broadcast}):
                out.append((bcast, socket.AF_INET))
            out.append((config.IPv4MulticastGroup, socket.AF_INET))
        if socket.AF_INET6 in families:
            out.append((config.IPv6MulticastGroup, socket.AF_INET6))
        return out

    def probe_subnets(self, data: bytes, node_port: int, multicast_v4: bool) -> list[str]:
        """Send ``data`` (a PROBE) to the node port of every subnet served; returns where."""
        return _spray(self.relay, data, self.ifaces, node_port, multicast_v4)

    def send(self, data: bytes, target: tuple) -> None:
        self.relay.send(data, target)

    def close(self) -> None:
        self.relay.close()
        self.listen.close()
