"""Sharing nodes between the computations of a dispyscheduler.  Pure.

::

    client computations ──arrive──> Admission ──admitted──> share_cpus() ──> CPUs per
                                    (exclusive waits           (policy)       (computation,
                                     for the others)                           node)

Admission keeps arrival order: a computation is admitted when those before it
are; an exclusive one only when no other is admitted, and while it waits or
runs the ones that arrive after it wait too.

Every CPU of every node is given to one admitted computation that has a job
for it, chosen by the policy:

* ``FIRST_COME`` (default): the computation whose oldest pending job was
  submitted first, so jobs run in submission order across computations;
* ``EARLY``: the computation admitted first;
* ``FAIR``: the computation holding the fewest CPUs so far (ties: admitted
  first), so active computations get equal shares.

A computation never gets more CPUs than it has jobs pending, nor more on a
node than its limit there (the CPUs it was set up with; 0 where it is not set
up).  CPUs of a node are handed out one by one, node after node, so on a node
with two CPUs and two busy computations under FAIR each gets one.  Nothing is
preempted: a computation given fewer CPUs than it has jobs running just gets
no new ones until it is under its share.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

NodeKey = Hashable
CompKey = Hashable


class SharePolicy(enum.Enum):
    FIRST_COME = 'first_come'
    EARLY = 'early'
    FAIR = 'fair'


@dataclass(frozen=True, slots=True)
class Demand:
    """What one admitted computation wants."""
    comp: CompKey
    pending: int                  # jobs not final (queued or running)
    admitted: int                 # admission order (smaller = earlier)
    oldest: int                   # submission number of its oldest pending job
    limits: Mapping[NodeKey, int] = field(default_factory=dict)   # node -> most CPUs there


def share_cpus(nodes: Mapping[NodeKey, int], demands: Iterable[Demand],
               policy: SharePolicy = SharePolicy.FIRST_COME) -> dict[CompKey, dict[NodeKey, int]]:
    """CPUs per computation per node (every computation and every node it may use
    appears, with 0 where it gets nothing)."""
    wants = [d for d in demands]
    given: dict[CompKey, dict[NodeKey, int]] = {
        d.comp: {node: 0 for node in d.limits if node in nodes} for d in wants}
    total = {d.comp: 0 for d in wants}
    for node, cpus in nodes.items():
        for _ in range(max(0, cpus)):
            best: Demand | None = None
            best_rank: tuple = ()
            for d in wants:
                full = given[d.comp].get(node, 0) >= d.limits.get(node, 0)
                if full or total[d.comp] >= d.pending:
                    continue
                rank = _rank(d, total[d.comp], policy)
                if best is None or rank < best_rank:
                    best, best_rank = d, rank
            if best is None:
                break       # nobody wants more of this node
            given[best.comp][node] += 1
            total[best.comp] += 1
    return given


def _rank(d: Demand, held: int, policy: SharePolicy) -> tuple:
    if policy is SharePolicy.FAIR:
        return (held, d.admitted)
    if policy is SharePolicy.EARLY:
        return (d.admitted,)
    return (d.oldest, d.admitted)


class Admission:
    """Which computations may use the nodes now (exclusive ones alone)."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[CompKey, bool]] = deque()
        self._admitted: dict[CompKey, bool] = {}     # comp -> exclusive
        self._order = 0
        self.order: dict[CompKey, int] = {}          # admission number of admitted comps

    @property
    def waiting(self) -> list[CompKey]:
        return [comp for comp, _ in self._waiting]

    def is_admitted(self, comp: CompKey) -> bool:
        return comp in self._admitted

    def arrive(self, comp: CompKey, exclusive: bool) -> list[CompKey]:
        """A new computation; returns the computations admitted by this event."""
        if comp in self._admitted or any(c == comp for c, _ in self._waiting):
            raise ValueError(f'computation {comp!r} arrived twice')
        self._waiting.append((comp, exclusive))
        return self._admit()

    def leave(self, comp: CompKey) -> list[CompKey]:
        """A computation closed (admitted or still waiting); returns those admitted now."""
        if self._admitted.pop(comp, None) is None:
            self._waiting = deque((c, e) for c, e in self._waiting if c != comp)
        self.order.pop(comp, None)
        return self._admit()

    def _admit(self) -> list[CompKey]:
        out = []
        while self._waiting:
            comp, exclusive = self._waiting[0]
            if self._admitted and (exclusive or any(self._admitted.values())):
                break
            self._waiting.popleft()
            self._admitted[comp] = exclusive
            self._order += 1
            self.order[comp] = self._order
            out.append(comp)
        return out
