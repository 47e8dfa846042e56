"""Discovery answers are capped per source and overall; the table stays bounded."""

from dispylike.discovery import beacon
from dispylike.discovery.ratelimit import RateLimit
from dispylike.protocol import discovery as d


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_per_source_and_overall_caps_reset_each_window():
    clock = Clock()
    limit = RateLimit(per_source=3, overall=5, clock=clock)
    assert [limit.allow('a') for _ in range(4)] == [True, True, True, False]
    assert [limit.allow('b') for _ in range(3)] == [True, True, False]   # overall 5 reached
    assert not limit.allow('c')
    assert limit.dropped == 3
    clock.now += 0.5
    assert not limit.allow('c')                     # same window
    clock.now += 0.5
    assert limit.allow('a') and limit.allow('c')    # a new window forgets the counts


def test_forged_source_flood_keeps_the_table_bounded():
    clock = Clock()
    limit = RateLimit(per_source=2, overall=10_000, max_sources=100, clock=clock)
    allowed = sum(limit.allow(f'10.77.{i // 250}.{i % 250}') for i in range(5000))
    assert allowed == 100 and len(limit._counts) == 100
    assert limit.allow('10.77.0.0')                 # a known source keeps its budget
    clock.now += 1
    assert limit.allow('127.0.0.9')


def test_node_beacon_answers_within_the_caps(monkeypatch):
    clock = Clock()
    node = beacon.NodeBeacon('s', lambda nonce: d.Announce(nonce, 9701, 2, 1, 'n', '127.0.0.1'))
    node.limit = RateLimit(beacon.MAX_REPLIES_PER_SOURCE, beacon.MAX_REPLIES_PER_SECOND,
                           clock=clock)
    sent = []
    monkeypatch.setattr(node, 'send', lambda data, target: sent.append(target))
    probe = d.encode(d.Probe(b'n' * d.NONCE_SIZE), 's')
    for _ in range(1000):
        node.datagram_received(probe, ('127.0.0.2', 5000))
    assert len(sent) == beacon.MAX_REPLIES_PER_SOURCE
    node.datagram_received(probe, ('127.0.0.3', 5000))   # another host is still answered
    assert sent[-1] == ('127.0.0.3', 5000)
    for i in range(1000):
        node.datagram_received(probe, (f'127.0.{i // 200}.{i % 200 + 4}', 5000))
    assert len(sent) == beacon.MAX_REPLIES_PER_SECOND
    for junk in (b'x' * 10_000, probe[:-1], d.encode(d.Probe(b'n' * d.NONCE_SIZE), 'other')):
        node.datagram_received(junk, ('127.0.0.4', 5000))
    assert node.refused == 3
    clock.now += 1
    node.datagram_received(probe, ('127.0.0.2', 5000))
    assert len(sent) == beacon.MAX_REPLIES_PER_SECOND + 1
