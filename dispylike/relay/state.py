"""What dispynetrelay relays, to whom and when: a pure state machine (no sockets, no clock).

::

    client ──PROBE, unicast to RelayPort──> relay ──PROBE, broadcast/multicast──> nodes
    client <──the node's ANNOUNCE, as is─── relay <──ANNOUNCE, unicast answer──── nodes
    clients, scheduler <──ANNOUNCE, as is── relay <──ANNOUNCE, broadcast/multicast─ node
                                                     to ClientPort (a node starting)

The daemon verifies every datagram (protocol.discovery) and hands the result
here with the current time; the answers say what to send.  Nothing is relayed
that did not verify, and what is relayed is the node's own datagram, unmodified
(its MAC still holds), so the client trusts the node, not the relay.

Rules:

* A verified client PROBE makes the client a *listener* for ``client_ttl``
  seconds and asks for one probe of the relay's subnets, unless one went out
  less than ``probe_gap`` ago: then the client waits for that one's answers.
* An ANNOUNCE that answers one of the relay's own probes (same nonce) goes to
  the clients that asked for that probe.  Any other ANNOUNCE (a node that has
  just started) goes to every listener and to the scheduler.
* A probe nonce or an announcement seen before is dropped (a replay, or the
  same datagram heard on two sockets), so a captured datagram cannot be
  replayed through the relay; at most ``max_forwards_per_second`` datagrams
  are sent on per second, and at most ``max_clients`` listeners are kept.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.discovery import MAC_SIZE, Announce, Probe

#: (address, port) of a client or of the scheduler, as the socket layer gives it.
Target = tuple[str, int]


@dataclass(frozen=True)
class RelayLimits:
    #: Seconds a client that probed keeps hearing of nodes that start.
    client_ttl: float = 600.0
    #: Most clients remembered (the least recently heard is forgotten first).
    max_clients: int = 64
    #: Least seconds between two probes of the relay's subnets.
    probe_gap: float = 0.25
    #: Seconds after a probe in which answers to it are accepted as answers.
    answer_window: float = 5.0
    #: Most datagrams sent on per second (to all clients together).
    max_forwards_per_second: int = 1000
    #: Most probe nonces / announcements remembered for replay detection.
    max_seen: int = 8192


@dataclass
class RelayStats:
    """Counters, for the log and the console (all datagrams unless said otherwise)."""
    probes: int = 0            # verified client probes taken
    subnet_probes: int = 0     # probes the relay sent to its subnets
    announces: int = 0         # verified announcements taken
    forwarded: int = 0         # datagrams sent on to clients and the scheduler
    replayed: int = 0          # seen before: dropped
    over_budget: int = 0       # not sent: more than max_forwards_per_second
    unroutable: int = 0        # announcements of a loopback/unspecified address
    refused: int = 0           # not ours, another secret, malformed, oversized
    unexpected: int = 0        # verified but not where it belongs (a probe on ClientPort)

    def describe(self) -> str:
        return ', '.join(f'{name} {value}' for name, value in vars(self).items())


class _Seen:
    """A set of keys forgotten after ``ttl`` seconds or when more than ``limit`` are held."""

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self._at: OrderedDict[bytes, float] = OrderedDict()

    def add(self, key: bytes, now: float) -> bool:
        """Remember ``key``; False if it was already there (a repeat)."""
        while self._at and (len(self._at) >= self.limit
                            or next(iter(self._at.values())) < now - self.ttl):
            self._at.popitem(last=False)
        if key in self._at:
            return False
        self._at[key] = now
        return True

    def __len__(self) -> int:
        return len(self._at)


@dataclass
class _SubnetProbe:
    sent_at: float
    waiting: set[Target]


class RelayState:
    """Decides, for each verified datagram, what the relay sends and where."""

    def __init__(self, new_nonce: Callable[[], bytes], scheduler: Target | None = None,
                 limits: RelayLimits = RelayLimits()) -> None:
        self.new_nonce = new_nonce
        self.scheduler = scheduler
        self.limits = limits
        self.stats = RelayStats()
        self.clients: OrderedDict[Target, float] = OrderedDict()  # -> last probe time
        self._probes: OrderedDict[bytes, _SubnetProbe] = OrderedDict()  # by our nonce
        self._seen = _Seen(limits.client_ttl, limits.max_seen)
        self._window = float('-inf')
        self._sent = 0

    # --- inputs ---------------------------------------------------------------------
    def on_probe(self, source: Target, nonce: bytes, now: float) -> Probe | None:
        """A client's verified probe; returns the probe to send to the subnets, if one is due."""
        if not self._seen.add(b'P' + nonce, now):
            self.stats.replayed += 1
            return None
        self.stats.probes += 1
        self._remember_client(source, now)
        return self._probe_for(source, now)

    def probe_for_scheduler(self, now: float) -> Probe | None:
        """A probe whose answers go to the scheduler (the relay's start-up), if one is due."""
        if self.scheduler is None:
            return None
        return self._probe_for(self.scheduler, now)

    def on_announce(self, datagram: bytes, ann: Announce, now: float) -> list[Target]:
        """A verified announcement ``datagram``; returns where to send it, as it is."""
        if not self._seen.add(b'A' + datagram[-MAC_SIZE:], now):
            self.stats.replayed += 1
            return []
        self.stats.announces += 1
        if not routable(ann.ip_addr):
            self.stats.unroutable += 1
            return []
        self._expire(now)
        probe = self._probes.get(ann.nonce)
        if probe is not None:
            targets = sorted(probe.waiting)
        else:
            targets = list(self.clients)
            if self.scheduler is not None and self.scheduler not in self.clients:
                targets.append(self.scheduler)
        return self._spend(targets, now)

    # --- internals ------------------------------------------------------------------
    def _remember_client(self, source: Target, now: float) -> None:
        self.clients.pop(source, None)
        self.clients[source] = now
        while len(self.clients) > self.limits.max_clients:
            self.clients.popitem(last=False)

    def _probe_for(self, target: Target, now: float) -> Probe | None:
        self._expire(now)
        if self._probes:
            last = self._probes[next(reversed(self._probes))]
            if now - last.sent_at < self.limits.probe_gap:
                last.waiting.add(target)        # its answers are still coming in
                return None
        nonce = self.new_nonce()
        self._probes[nonce] = _SubnetProbe(now, {target})
        self.stats.subnet_probes += 1
        return Probe(nonce)

    def _expire(self, now: float) -> None:
        while self._probes:
            nonce, probe = next(iter(self._probes.items()))
            if probe.sent_at >= now - self.limits.answer_window:
                break
            del self._probes[nonce]
        while self.clients and next(iter(self.clients.values())) < now - self.limits.client_ttl:
            self.clients.popitem(last=False)

    def _spend(self, targets: list[Target], now: float) -> list[Target]:
        if now - self._window >= 1.0:
            self._window, self._sent = now, 0
        allowed = max(0, self.limits.max_forwards_per_second - self._sent)
        if len(targets) > allowed:
            self.stats.over_budget += len(targets) - allowed
            targets = targets[:allowed]
        self._sent += len(targets)
        self.stats.forwarded += len(targets)
        return targets


def routable(address: str) -> bool:
    """False for addresses a client elsewhere cannot dial (loopback, unspecified)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)
