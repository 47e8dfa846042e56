"""The node's periodic work (a mixin of NodeDaemon, run on its loop once a tick):
service hours, clients gone past zombie_interval, re-announcements."""

from __future__ import annotations

import asyncio
import logging
import time

from ..protocol import messages as m
from .service import Service

log = logging.getLogger('dispylike.node')


class Housekeeping:
    """_housekeeping (the loop), _service_check, _reap_zombies."""

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self._service_check()
                await self._reap_zombies()
                interval = self.opts.ping_interval
                if (interval and not self.owners and self.service is Service.SERVING
                        and time.monotonic() - self._last_announce >= interval):
                    self._announce()
            except Exception:  # noqa: BLE001 - housekeeping must go on; the bug is logged
                log.exception('housekeeping failed')

    async def _service_check(self) -> None:
        now = self.clock()
        state = self.hours.state(now)
        if state is self.service:
            return
        previous, self.service = self.service, state
        stamp = now.strftime('%H:%M')
        log.info('service hours: %s at %s', state.value, stamp)
        if self.beacon is not None:
            self.beacon.silent = state is not Service.SERVING
        if state is Service.SERVING:
            for session in self.clients:
                session.send(m.ServiceChange(True, False, f'service started at {stamp}'))
            self._announce()
        elif state is Service.STOPPED and previous is Service.SERVING:
            for session in self.clients:
                session.send(m.ServiceChange(False, False, f'service stopped at {stamp}: '
                                                           'no new jobs; running jobs go on'))
        elif state is Service.ENDED:
            for session in list(self.clients):
                session.send(m.ServiceChange(False, True, f'service ended at {stamp}: '
                                                          'running jobs terminated'))
                await self._end_session(session)

    async def _reap_zombies(self) -> None:
        limit = self.opts.zombie_interval * 60
        now = time.monotonic()
        for session in list(self.clients):
            if session.detached_at and now - session.detached_at > limit:
                log.warning('client %s gone for %.0f s (zombie_interval %g min): terminating '
                            'its jobs and cleaning up', session.client, now - session.detached_at,
                            self.opts.zombie_interval)
                await self._end_session(session)
