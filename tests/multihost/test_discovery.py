"""Discovery across hosts of the namespace lab: broadcast, multicast, IPv6, late nodes,
wildcards, other secrets.  The client runs in this process with its I/O thread on h1."""

from __future__ import annotations

import collections
import logging
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike.testing import wait_for_nodes, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.multihost


def where(n):
    import socket
    import time
    time.sleep(0.05)
    return socket.gethostname(), n


def run_jobs(lab, expect, count=24, **cluster_kw):
    """Run ``count`` jobs from h1 once the nodes at addresses ``expect`` are set up (the
    first one up could otherwise run them all); return {hostname: jobs}."""
    cluster_kw.setdefault('secret', 'lab')
    with lab.netns('h1'):
        cluster = dispylike.JobCluster(where, **cluster_kw)
    with cluster:
        wait_for_nodes(cluster, expect)
        jobs = [cluster.submit(i) for i in range(count)]
        assert cluster.wait(timeout=60), [j.status for j in jobs]
        assert sorted(j.result[1] for j in jobs) == list(range(count))
        return collections.Counter(j.result[0] for j in jobs)


def test_broadcast_discovery_finds_every_node(lab, start_node):
    for host in ('h2', 'h3', 'h4'):
        start_node(host, '-i', lab.ip(host))
    spread = run_jobs(lab, [lab.ip(h) for h in ('h2', 'h3', 'h4')])
    assert set(spread) == {'h2', 'h3', 'h4'}


def test_ipv4_multicast_discovery(lab, start_node):
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip(host), '--ipv4_udp_multicast')
    spread = run_jobs(lab, [lab.ip('h2'), lab.ip('h3')], ipv4_udp_multicast=True,
                      host=lab.ip('h1'))
    assert set(spread) == {'h2', 'h3'}


def test_ipv6_multicast_discovery(lab, start_node):
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip6(host))
    spread = run_jobs(lab, [lab.ip6('h2'), lab.ip6('h3')], host=lab.ip6('h1'))
    assert set(spread) == {'h2', 'h3'}


def test_node_started_after_the_client_joins(lab, start_node):
    start_node('h2', '-i', lab.ip('h2'))
    with lab.netns('h1'):
        cluster = dispylike.JobCluster(where, secret='lab')
    with cluster:
        assert cluster.submit(0)()[0] == 'h2'
        late = start_node('h3', '-i', lab.ip('h3'), '--scheduler_host', lab.ip('h1'))
        assert f"{lab.ip('h1')}:9700" in late.log()  # announced by broadcast and unicast
        wait_for_nodes(cluster, [lab.ip('h2'), lab.ip('h3')])
        jobs = [cluster.submit(i) for i in range(40)]
        assert cluster.wait(60)
        assert {j.result[0] for j in jobs} == {'h2', 'h3'}


def test_wildcards_and_unicast_hosts(lab, start_node):
    for host in ('h2', 'h3', 'h4'):
        start_node(host, '-i', lab.ip(host))
    h2, h3, h4 = (lab.ip(h) for h in ('h2', 'h3', 'h4'))
    spread = run_jobs(lab, [h3, h4], nodes=[f'{lab.subnet}.3', f'{lab.subnet}.4'])  # unicast
    assert set(spread) == {'h3', 'h4'}
    spread = run_jobs(lab, [h2], nodes=[f'{lab.subnet}.2*', '10.99.*'])          # wildcards
    assert set(spread) == {'h2'}
    spread = run_jobs(lab, [h2, h3, h4], nodes=[f'{lab.subnet}.*'])
    assert set(spread) == {'h2', 'h3', 'h4'}


def test_jobs_are_spread_over_equal_nodes(lab, start_node):
    for host in ('h2', 'h3', 'h4'):
        start_node(host, '-i', lab.ip(host))
    spread = run_jobs(lab, [lab.ip(h) for h in ('h2', 'h3', 'h4')], count=60)
    assert all(12 <= spread[h] <= 28 for h in ('h2', 'h3', 'h4')), spread


def test_node_with_another_secret_never_joins(lab, start_node, caplog):
    start_node('h2', '-i', lab.ip('h2'))
    other = start_node('h3', '-i', lab.ip('h3'), secret='other')
    with caplog.at_level(logging.INFO, logger='dispylike'):
        spread = run_jobs(lab, [lab.ip('h2')], count=10)
    assert set(spread) == {'h2'}
    # the probe was refused, not crashed on (its log line may come after the jobs)
    wait_until(lambda: 'ignored datagram' in other.log(), 10, 'h3 refused the probe')
    assert other.proc.poll() is None


def test_a_loopback_node_is_neither_advertised_nor_answering(lab, start_node, caplog):
    start_node('h2', '-i', lab.ip('h2'))
    start_node('h3', '-i', '127.0.0.1')
    with caplog.at_level(logging.DEBUG, logger='dispylike'):
        spread = run_jobs(lab, [lab.ip('h2')], count=10)
    assert set(spread) == {'h2'}
    assert not [r for r in caplog.records if lab.ip('h3') in r.getMessage()]  # never answered


def test_ping_interval_finds_a_node_whose_link_was_down(lab, start_node):
    start_node('h2', '-i', lab.ip('h2'))
    lab.partition('h3')
    start_node('h3', '-i', lab.ip('h3'))            # its start-up announcement is lost
    with lab.netns('h1'):
        cluster = dispylike.JobCluster(where, secret='lab', ping_interval=1)
    with cluster:
        assert cluster.submit(0)()[0] == 'h2'
        lab.heal('h3')
        deadline = time.time() + 20
        while len(cluster.status()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert {n.ip_addr for n in cluster.status()} == {lab.ip('h2'), lab.ip('h3')}


def test_two_nodes_on_one_host(lab, start_node):
    with lab.netns('h1'):
        cluster = dispylike.JobCluster(where, secret='lab')
    with cluster:
        start_node('h2', '-i', lab.ip('h2'), '-n', 'first')
        start_node('h2', '-i', lab.ip('h2'), '-n', 'second', '--node_port', '9711')
        deadline = time.time() + 20
        while len(cluster.status()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert sorted((n.name, n.port) for n in cluster.status()) == [('first', 9701),
                                                                      ('second', 9711)]


def test_no_node_found_is_said_clearly(lab, caplog):
    with lab.netns('h1'):
        cluster = dispylike.JobCluster(where, secret='lab')
    job = cluster.submit(1)
    assert job.wait(7) is False
    cluster.close(timeout=0, terminate=True)
    text = ' '.join(r.getMessage() for r in caplog.records)
    assert 'no node found' in text and f'{lab.subnet}.255:9701 (eth0)' in text
