"""dispylike.testing's waits: they return what they waited for, and fail saying what."""

from __future__ import annotations

import itertools

import pytest

from dispylike.nodes import DispyNode
from dispylike.testing import wait_for_nodes, wait_until


def test_wait_until_returns_the_first_true_value():
    calls = itertools.count()
    assert wait_until(lambda: next(calls) >= 2 and 'done', 5, 'counted') == 'done'


def test_wait_until_fails_with_what_was_awaited():
    with pytest.raises(AssertionError, match='the moon rose: not so after 0.1 s'):
        wait_until(lambda: False, 0.1, 'the moon rose')


class _Cluster:
    def __init__(self, *batches: list[DispyNode]) -> None:
        self.batches = list(batches)

    def status(self) -> list[DispyNode]:
        return self.batches.pop(0) if len(self.batches) > 1 else self.batches[0]


def test_wait_for_nodes_by_address_or_address_and_port():
    a, b = DispyNode('10.77.0.2', 9701, 'a', 2), DispyNode('127.0.0.1', 9711, 'b', 2)
    cluster = _Cluster([], [a], [a, b])
    assert wait_for_nodes(cluster, ['10.77.0.2', '127.0.0.1:9711'], 5) == [a, b]


def test_wait_for_nodes_names_the_nodes_it_has():
    cluster = _Cluster([DispyNode('10.77.0.2', 9701, 'a', 2)])
    with pytest.raises(AssertionError, match=r"\['10.77.0.3'\] set up.*has \['10.77.0.2:9701'\]"):
        wait_for_nodes(cluster, ['10.77.0.3'], 0.1)
