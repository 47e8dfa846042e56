"""dispynetrelay across two subnets (relaylab.TwoSubnets): a client on 10.77.0.0/24 uses
the nodes of 10.78.0.0/24, which it can reach over TCP but not by broadcast.

The client runs in this process with its I/O thread on a1; nodes and the relay
are real processes on lab hosts, stopped by PID after each test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import cloudpickle
import pytest

import dispylike
from dispylike.protocol import discovery as d

from .conftest import LabNode, LabScheduler, _lab_unavailable
from .relaylab import LabRelay, TwoSubnets

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.multihost

SECRET = 'lab'
RELAY_HOST = '10.78.0.1'
REMOTE = ['10.78.0.1', '10.78.0.*']       # the relay's host and a wildcard, as dispy says


def square(n):
    return n * n


@pytest.fixture(scope='module')
def subnets():
    why = _lab_unavailable()
    if why:
        pytest.skip(f'!!! multi-host tests skipped: {why}')
    state = tempfile.mkdtemp(prefix='dispylike-relaylab-')
    lab = TwoSubnets(f'dr{os.getpid() % 100000}', state)
    try:
        yield lab.up()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f'!!! relay tests skipped: the lab could not be built: {exc.stderr}')
    finally:
        lab.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def spawn(subnets):
    """spawn.node('h2', *args) / spawn.relay('h1', *args) on subnet B; all stopped at the end."""
    started: list = []

    class Spawn:
        @staticmethod
        def node(host: str, *extra: str, address: str = '') -> LabNode:
            address = address or subnets.b.ip(host)
            node = LabNode(subnets.b, host, ['-i', address, *extra], SECRET, cpus=2)
            started.append(node)
            return node

        @staticmethod
        def scheduler(*extra: str) -> LabScheduler:          # on a1, the client's host
            sched = LabScheduler(subnets.a, 'h1', list(extra), node_secret=SECRET)
            started.append(sched)
            return sched

        @staticmethod
        def relay(host: str = 'h1', *extra: str) -> LabRelay:
            relay = LabRelay(subnets.b, host, list(extra), SECRET)
            started.append(relay)
            return relay

    yield Spawn
    for proc in reversed(started):
        (proc.close if isinstance(proc, LabRelay) else proc.stop)()


def client(subnets, nodes, **kw):
    with subnets.a.netns('h1'):
        return dispylike.JobCluster(square, nodes=nodes, secret=SECRET, **kw)


def wait_for_nodes(cluster, addresses: set[str], timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {n.ip_addr for n in cluster.status()}
        if addresses <= found:
            return found
        time.sleep(0.1)
    return {n.ip_addr for n in cluster.status()}


def wait_for_log(relay: LabRelay, text: str, count: int, timeout: float = 30) -> None:
    """Until ``text`` is in the relay's (debug) log ``count`` times."""
    deadline = time.monotonic() + timeout
    while relay.log().count(text) < count:
        assert time.monotonic() < deadline, relay.log()
        time.sleep(0.1)


def run_jobs(cluster, count: int = 30) -> set[str]:
    jobs = [cluster.submit(i) for i in range(count)]
    assert cluster.wait(timeout=60), [j.status for j in jobs]
    assert [j.result for j in jobs] == [i * i for i in range(count)]
    return {j.ip_addr for j in jobs}


def test_without_a_relay_the_other_subnet_is_not_found(subnets, spawn, caplog):
    spawn.node('h2')
    spawn.node('h3')
    cluster = client(subnets, REMOTE)
    try:
        job = cluster.submit(3)
        assert job.wait(7) is False
        assert cluster.status() == []
        text = ' '.join(r.getMessage() for r in caplog.records)
        assert 'no node found' in text and f'{RELAY_HOST}:9703 (relay)' in text
    finally:
        cluster.close(timeout=0, terminate=True)


def test_a_client_runs_jobs_on_the_other_subnet_through_the_relay(subnets, spawn):
    spawn.node('h1')                 # a node on the relay's host as well
    spawn.node('h2')
    spawn.node('h3')
    relay = spawn.relay('h1')
    cluster = client(subnets, REMOTE)
    try:
        assert wait_for_nodes(cluster, {'10.78.0.1', '10.78.0.2', '10.78.0.3'}) == \
            {'10.78.0.1', '10.78.0.2', '10.78.0.3'}
        assert run_jobs(cluster, 40) == {'10.78.0.1', '10.78.0.2', '10.78.0.3'}
    finally:
        cluster.close()
    assert relay.stop() == 0
    log = relay.log()
    assert 'probe from 10.77.0.1:9700' in log and 'relayed to 10.77.0.1:9700' in log


@pytest.mark.parametrize('mode', ['broadcast', 'multicast'])
def test_a_node_that_starts_later_is_relayed_to_a_client_that_probed(subnets, spawn, mode):
    extra = ['--ipv4_udp_multicast'] if mode == 'multicast' else []
    spawn.node('h2', *extra)
    relay = spawn.relay('h1', *extra)
    cluster = client(subnets, REMOTE, ipv4_udp_multicast=mode == 'multicast')
    try:
        assert run_jobs(cluster, 4) == {'10.78.0.2'}
        wait_for_log(relay, 'probe from 10.77.0.1:9700', 4)   # the client's last probe
        spawn.node('h4', *extra)      # nobody probes now: only its announcement tells
        assert wait_for_nodes(cluster, {'10.78.0.4'}) == {'10.78.0.2', '10.78.0.4'}
        assert run_jobs(cluster, 40) == {'10.78.0.2', '10.78.0.4'}
    finally:
        cluster.close()
    assert relay.log().count('probe from 10.77.0.1:9700') == 4
    assert '10.78.0.4:9701 relayed to 10.77.0.1:9700' in relay.log()


def test_ipv6_nodes_are_found_through_the_relay(subnets, spawn):
    for host in ('h2', 'h3'):
        spawn.node(host, address=f'fd78::{host[1]}')
    relay = spawn.relay('h1')
    cluster = client(subnets, ['fd78::1', 'fd78::*'], host='fd77::1')
    try:
        assert wait_for_nodes(cluster, {'fd78::2', 'fd78::3'}) == {'fd78::2', 'fd78::3'}
        assert run_jobs(cluster, 20) == {'fd78::2', 'fd78::3'}
    finally:
        cluster.close()
    assert 'probe from [fd77::1]:9700' in relay.log()


def test_the_scheduler_node_hears_of_every_node_without_probing(subnets, spawn):
    """A dispyscheduler discovers nodes like a client on its client port; here a client
    that never probes the relay (its host is not listed) stands in for it."""
    spawn.node('h2')
    spawn.node('h3')
    cluster = client(subnets, ['10.78.0.*'])
    try:
        relay = spawn.relay('h1', '--scheduler_node', '10.77.0.1')   # probes at start
        assert wait_for_nodes(cluster, {'10.78.0.2', '10.78.0.3'}) == {'10.78.0.2', '10.78.0.3'}
        wait_for_log(relay, 'probed 10.78.0.255:9701', 4)            # its last probe
        spawn.node('h4')                              # only its announcement tells now
        assert wait_for_nodes(cluster, {'10.78.0.4'}) == {'10.78.0.2', '10.78.0.3', '10.78.0.4'}
        assert run_jobs(cluster, 30) == {'10.78.0.2', '10.78.0.3', '10.78.0.4'}
    finally:
        cluster.close()


def test_a_relay_takes_no_datagram_meant_for_a_node_or_client_on_its_host(subnets, spawn):
    """Unicast to a port shared with SO_REUSEPORT reaches one socket only (by a hash of the
    addresses): 8 senders would have lost some datagrams to a relay in the group (8, not more:
    the node answers at most 10 probes a second from one address)."""
    spawn.node('h1')
    relay = spawn.relay('h1')
    with subnets.b.netns('h1'):              # a client's beacon on the relay's host
        local_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local_client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        local_client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        local_client.bind(('', 9700))
    with subnets.b.netns('h2'):
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    try:
        for sock in [local_client, *senders]:
            sock.settimeout(5)
        for sock in senders:
            sock.bind(('10.78.0.2', 0))
            sock.sendto(d.encode(d.Probe(os.urandom(16)), SECRET), (RELAY_HOST, 9701))
        answers = [d.decode(sock.recvfrom(2048)[0], SECRET) for sock in senders]
        assert {a.ip_addr for a in answers} == {RELAY_HOST}         # the node answered all 8
        for sock in senders:
            sock.sendto(b'for the client', (RELAY_HOST, 9700))
        assert [local_client.recvfrom(2048)[0] for _ in senders] == [b'for the client'] * 8
    finally:
        local_client.close()
        for sock in senders:
            sock.close()
    relay.stop()
    assert 'refused 0' in relay.log()                    # it never saw any of them


def test_a_shared_cluster_uses_the_other_subnet_through_scheduler_and_relay(subnets, spawn):
    """dispyscheduler on subnet A (wildcard only: it cannot probe B), the relay told of it."""
    spawn.node('h2')
    spawn.node('h3')
    sched = spawn.scheduler('-n', '10.78.0.*', '-i', '10.77.0.1')
    spawn.relay('h1', '--scheduler_node', '10.77.0.1')
    with subnets.a.netns('h1'):
        cluster = dispylike.SharedJobCluster(square, scheduler_node='10.77.0.1', secret='cs')
    try:
        # both nodes set up first: else the first one ready may run all 20 instant jobs
        assert wait_for_nodes(cluster, {'10.78.0.2', '10.78.0.3'}) == {'10.78.0.2', '10.78.0.3'}
        jobs = [cluster.submit(i) for i in range(20)]
        assert cluster.wait(timeout=60), [j.status for j in jobs]
        assert [j.result for j in jobs] == [i * i for i in range(20)]
        assert {j.ip_addr for j in jobs} == {'10.78.0.2', '10.78.0.3'}
    finally:
        cluster.close()
    assert 'at 10.78.0.2:9701' in sched.log() and 'at 10.78.0.3:9701' in sched.log()
