"""dispynetrelay's decisions (relay.state), driven directly: who gets what, replays, limits."""

from __future__ import annotations

import ast
import itertools
import pathlib

import pytest

from dispylike.protocol import discovery as d
from dispylike.relay import state as rs
from dispylike.relay.state import RelayLimits, RelayState

SECRET = 'lab'
A, B, C = ('10.77.0.1', 9700), ('10.77.0.2', 9700), ('10.77.0.3', 40000)
SCHED = ('10.77.0.9', 9700)


def nonces():
    counter = itertools.count()
    return lambda: next(counter).to_bytes(d.NONCE_SIZE, 'big')


def make(scheduler=None, **limits) -> RelayState:
    return RelayState(nonces(), scheduler, RelayLimits(**limits))


def announce(nonce: bytes, ip: str = '10.78.0.2', incarnation: int = 1):
    ann = d.Announce(nonce, 9701, 2, incarnation, 'node', ip)
    return d.encode(ann, SECRET), ann


def client_nonce(i: int) -> bytes:
    return b'c' + i.to_bytes(d.NONCE_SIZE - 1, 'big')


def test_a_probe_asks_for_a_subnet_probe_and_its_answers_go_to_that_client():
    st = make()
    probe = st.on_probe(A, client_nonce(1), now=0.0)
    assert isinstance(probe, d.Probe)
    data, ann = announce(probe.nonce)
    assert st.on_announce(data, ann, now=0.01) == [A]
    assert st.stats.probes == 1 and st.stats.subnet_probes == 1 and st.stats.forwarded == 1


def test_probes_close_together_share_one_subnet_probe():
    st = make(probe_gap=0.25)
    first = st.on_probe(A, client_nonce(1), now=0.0)
    assert st.on_probe(B, client_nonce(2), now=0.1) is None       # coalesced
    data, ann = announce(first.nonce)
    assert st.on_announce(data, ann, now=0.2) == sorted([A, B])
    second = st.on_probe(B, client_nonce(3), now=0.3)
    assert second is not None and second.nonce != first.nonce
    data, ann = announce(second.nonce)
    assert st.on_announce(data, ann, now=0.31) == [B]              # A did not ask this time
    assert st.stats.subnet_probes == 2


def test_a_replayed_probe_is_dropped_even_from_another_source():
    st = make()
    assert st.on_probe(A, client_nonce(1), now=0.0) is not None
    assert st.on_probe(C, client_nonce(1), now=5.0) is None
    assert st.stats.replayed == 1 and list(st.clients) == [A]


def test_a_node_that_starts_is_relayed_to_every_recent_client_and_the_scheduler():
    st = make(scheduler=SCHED, client_ttl=60)
    st.on_probe(A, client_nonce(1), now=0.0)
    st.on_probe(B, client_nonce(2), now=30.0)
    data, ann = announce(b's' * 16)                                 # not a nonce of ours
    assert st.on_announce(data, ann, now=61.0) == [B, SCHED]        # A probed > 60 s ago
    data, ann = announce(b't' * 16)
    assert st.on_announce(data, ann, now=100.0) == [SCHED]


def test_without_a_scheduler_or_clients_nothing_is_sent():
    st = make()
    data, ann = announce(b's' * 16)
    assert st.on_announce(data, ann, now=0.0) == []
    assert st.probe_for_scheduler(0.0) is None


def test_answers_to_a_scheduler_probe_go_to_the_scheduler_only():
    st = make(scheduler=SCHED)
    probe = st.probe_for_scheduler(0.0)
    st.on_probe(A, client_nonce(1), now=1.0)      # a later probe of its own
    data, ann = announce(probe.nonce)
    assert st.on_announce(data, ann, now=1.1) == [SCHED]


def test_a_scheduler_that_also_probes_gets_each_datagram_once():
    st = make(scheduler=SCHED)
    st.on_probe(SCHED, client_nonce(1), now=0.0)
    data, ann = announce(b's' * 16)
    assert st.on_announce(data, ann, now=1.0) == [SCHED]


def test_a_late_answer_counts_as_a_node_announcing_itself():
    st = make(answer_window=5.0)
    probe = st.on_probe(A, client_nonce(1), now=0.0)
    st.on_probe(B, client_nonce(2), now=1.0)
    data, ann = announce(probe.nonce)
    assert st.on_announce(data, ann, now=9.0) == [A, B]


def test_the_same_announcement_is_relayed_once():
    st = make()
    probe = st.on_probe(A, client_nonce(1), now=0.0)
    data, ann = announce(probe.nonce)
    assert st.on_announce(data, ann, now=0.1) == [A]
    assert st.on_announce(data, ann, now=0.2) == []         # heard twice, or replayed
    assert st.stats.replayed == 1 and st.stats.forwarded == 1


@pytest.mark.parametrize('ip', ['127.0.0.1', '::1', '0.0.0.0'])
def test_an_unreachable_node_address_is_not_relayed(ip):
    st = make()
    probe = st.on_probe(A, client_nonce(1), now=0.0)
    data, ann = announce(probe.nonce, ip=ip)
    assert st.on_announce(data, ann, now=0.1) == []
    assert st.stats.unroutable == 1


def test_clients_are_capped_least_recent_first():
    st = make(max_clients=3)
    for i in range(5):
        st.on_probe((f'10.77.0.{i}', 9700), client_nonce(i), now=float(i))
    st.on_probe(('10.77.0.2', 9700), client_nonce(9), now=5.0)     # heard again: kept longest
    assert list(st.clients) == [('10.77.0.3', 9700), ('10.77.0.4', 9700), ('10.77.0.2', 9700)]


def test_forwarding_is_rate_limited_per_second():
    st = make(max_clients=100, max_forwards_per_second=10)
    for i in range(30):
        st.on_probe((f'10.77.1.{i}', 9700), client_nonce(i), now=0.0)
    data, ann = announce(b's' * 16)
    assert len(st.on_announce(data, ann, now=0.5)) == 10
    data, ann = announce(b't' * 16)
    assert st.on_announce(data, ann, now=0.6) == []
    assert st.stats.over_budget == 50
    data, ann = announce(b'u' * 16)
    assert len(st.on_announce(data, ann, now=1.6)) == 10            # a new second


def test_replay_memory_is_bounded():
    seen = rs._Seen(ttl=100.0, limit=4)
    for i in range(10):
        assert seen.add(bytes([i]), now=0.0)
    assert len(seen) == 4
    assert not seen.add(bytes([9]), now=1.0)
    assert seen.add(bytes([9]), now=200.0)                          # forgotten after ttl


def test_the_state_module_does_no_io():
    tree = ast.parse(pathlib.Path(rs.__file__).read_text())
    names = {alias.name.split('.')[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split('.')[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not names & {'asyncio', 'socket', 'time', 'ssl', 'threading', 'selectors'}, names
