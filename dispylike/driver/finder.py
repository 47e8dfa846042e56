"""Finding nodes by UDP for the client engine (a mixin: state lives in Engine)."""

from __future__ import annotations

import asyncio
import logging
import time

from .. import config
from ..discovery.addresses import is_loopback, is_routable_ip
from ..discovery.beacon import ClientBeacon
from ..protocol.discovery import Announce

log = logging.getLogger('dispylike')

#: Seconds after which a cluster that found no node says so (what it probed, where).
SETTLE_TIME = 5.0


class NodeFinder:
    """Probes for nodes, hears their announcements, and joins those ``nodes`` allows."""

    async def _start_discovery(self) -> None:
        self.beacon = ClientBeacon(self.cfg.secret, self._on_announce)
        await self.beacon.start(config.port_of('ClientPort', self.cfg.dispy_port),
                                self.cfg.client_addresses)
        self._discovery = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        """Probe at once, again soon (datagrams get lost), then every ping_interval."""
        node_port = config.port_of('NodePort', self.cfg.dispy_port)
        started = time.monotonic()
        for delay in (0.0, 0.5, 1.0, 2.0):
            await asyncio.sleep(delay)
            self._probe(node_port)
        await asyncio.sleep(max(0.0, SETTLE_TIME - (time.monotonic() - started)))
        if not self.links:
            log.warning('no node found for "%s" after %.0f s; probed %s (UDP; the secret '
                        'must match); %d job(s) wait', self.cfg.package.name,
                        time.monotonic() - started,
                        ', '.join(self.beacon.targets) or 'nothing: no interface with broadcast',
                        len(self.jobs))
        while self.cfg.ping_interval:
            await asyncio.sleep(self.cfg.ping_interval)
            self._probe(node_port)

    def _probe(self, node_port: int) -> None:
        self.beacon.probe(node_port, self.cfg.ipv4_multicast)
        # a dispynetrelay on a listed host probes its own subnet(s) for us, so that
        # wildcards match nodes beyond broadcast reach
        relays = [spec.ip_addr for spec in self.specs
                  if not spec.is_pattern and is_routable_ip(spec.ip_addr)]
        if relays:
            self.beacon.probe_relays(relays, config.port_of('RelayPort', self.cfg.dispy_port))

    def _on_announce(self, ann: Announce, source: str) -> None:
        address = ann.ip_addr
        if is_loopback(address) and not is_loopback(source):
            address = source  # a node that only knows its loopback address
        if self._closing or f'{address}:{ann.port}' in self._known:
            return
        for spec in self.specs:
            if spec.matches(address, ann.name) and spec.port in (None, ann.port):
                log.debug('discovered node %s at %s:%d', ann.name, address, ann.port)
                self._start_join(spec, address, ann.port)
                return
        log.debug('node %s at %s:%d does not match nodes=', ann.name, address, ann.port)

