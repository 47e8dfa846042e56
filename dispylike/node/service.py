"""Service hours (``--service_start/--service_stop/--service_end``).  Pure: no clock.

A daily cycle, times of day in the node's local time::

    start ───── serving (new jobs) ───── stop ── stopped (running jobs go on) ── end ── ended
      ^                                                                                  │
      └────────────────────────────── next day ──────────────────────────────────────────┘

A missing start is midnight; a missing stop is the end (or midnight); a missing
end means running jobs are never terminated.  Windows may wrap past midnight
(``--service_start 20:00 --service_stop 06:00``).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

MIDNIGHT = dt.time(0, 0)


class Service(enum.Enum):
    SERVING = 'serving'     # new jobs accepted
    STOPPED = 'stopped'     # no new jobs; running jobs go on
    ENDED = 'ended'         # no jobs at all: running ones are terminated


def parse_hhmm(text: str, option: str = 'time') -> dt.time:
    """'HH:MM' (24-hour) -> time; ValueError with a clear message otherwise."""
    try:
        hours, minutes = text.strip().split(':')
        if len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit():
            raise ValueError
        return dt.time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f'{option}: {text!r} is not a time of day as HH:MM '
                         '(24-hour, e.g. 08:30 or 17:05)') from None


def _within(t: dt.time, start: dt.time, stop: dt.time) -> bool:
    if start < stop:
        return start <= t < stop
    if start > stop:                 # wraps past midnight
        return t >= start or t < stop
    return True                      # the whole day


@dataclass(frozen=True)
class ServiceHours:
    start: dt.time | None = None
    stop: dt.time | None = None
    end: dt.time | None = None

    @classmethod
    def parse(cls, start: str = '', stop: str = '', end: str = '') -> ServiceHours:
        hours = cls(parse_hhmm(start, '--service_start') if start else None,
                    parse_hhmm(stop, '--service_stop') if stop else None,
                    parse_hhmm(end, '--service_end') if end else None)
        begin = hours.start or MIDNIGHT
        if hours.stop and hours.end and hours.stop != hours.end and \
                not _within(hours.stop, begin, hours.end):
            raise ValueError('--service_stop must fall between --service_start and --service_end')
        for name, t in (('--service_stop', hours.stop), ('--service_end', hours.end)):
            if t is not None and t == begin and hours.start is not None:
                raise ValueError(f'{name} equals --service_start: the node would never serve')
        return hours

    @property
    def always(self) -> bool:
        return self.start is None and self.stop is None and self.end is None

    def state(self, now: dt.datetime) -> Service:
        if self.always:
            return Service.SERVING
        t = now.time()
        begin = self.start or MIDNIGHT
        accept_until = self.stop or self.end or MIDNIGHT
        if _within(t, begin, accept_until):
            return Service.SERVING
        if self.end is None or _within(t, begin, self.end):
            return Service.STOPPED
        return Service.ENDED

    def describe(self) -> str:
        if self.always:
            return 'always'
        fmt = lambda t: t.strftime('%H:%M') if t else '-'   # noqa: E731
        return f'start {fmt(self.start)}, stop {fmt(self.stop)}, end {fmt(self.end)}'
