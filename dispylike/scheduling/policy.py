"""Load-balancing policy: which node gets the next job.  Pure.

The node with the most free CPUs wins; ties go round-robin so equal nodes
share the work instead of the first one found taking everything (dispy #99).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Protocol


class HasFreeCpus(Protocol):
    key: Hashable

    @property
    def free(self) -> int: ...


class MostFreeCpus:
    """Pick the node with the most free CPUs, rotating among ties."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Iterable[HasFreeCpus]) -> HasFreeCpus | None:
        best: list[HasFreeCpus] = []
        most = 0
        for node in candidates:
            free = node.free
            if free > most:
                most, best = free, [node]
            elif free == most and free > 0:
                best.append(node)
        if not best:
            return None
        self._turn += 1
        return best[self._turn % len(best)]
