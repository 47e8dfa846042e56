"""A per-source and overall rate cap with bounded memory (for discovery answers).

Counts are kept for one window (a second by default) and forgotten when the
next one starts.  Within a window a source gets at most ``per_source`` events
and all sources together at most ``overall``; at most ``max_sources`` distinct
sources are tracked, so a flood with forged source addresses costs a bounded
table and only steals the overall budget.  The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimit:
    def __init__(self, per_source: int, overall: int, window: float = 1.0,
                 max_sources: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_source = per_source
        self.overall = overall
        self.window = window
        self.max_sources = max_sources
        self.clock = clock
        self.dropped = 0          # events refused since start
        self._start = float('-inf')
        self._total = 0
        self._counts: dict[str, int] = {}

    def allow(self, source: str) -> bool:
        """Count one event from ``source``; False if it is over a cap (then drop it)."""
        now = self.clock()
        if now - self._start >= self.window:
            self._start, self._total = now, 0
            self._counts.clear()
        count = self._counts.get(source, 0)
        if (self._total >= self.overall or count >= self.per_source
                or (not count and len(self._counts) >= self.max_sources)):
            self.dropped += 1
            return False
        self._counts[source] = count + 1
        self._total += 1
        return True
