"""dispy's node management methods, with their effect checked on the nodes themselves."""

import asyncio
import os
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike.protocol import messages as m
from dispylike.testing import NodeProcess, submit_unserved
from dispylike.transport.connection import connect

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def span(t):
    import time
    start = time.time()
    time.sleep(t)
    return dispy_node_name, start, time.time()  # noqa: F821


@pytest.fixture
def two_nodes():
    a = NodeProcess(cpus=2, extra=['-n', 'node-a'])
    b = NodeProcess(cpus=2, extra=['-n', 'node-b'])
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def names(jobs):
    return {j.result[0] for j in jobs}


def wait_joined(cluster, count, timeout=20):
    deadline = time.time() + timeout
    while len(cluster.status()) < count and time.time() < deadline:
        time.sleep(0.05)
    assert len(cluster.status()) == count


def node_busy_with(node):
    async def ask():
        conn = await connect(node.host, node.port, '')
        conn.send(m.NodeInfoRequest(''))
        info = await conn.recv()
        await conn.close()
        return info.busy_with
    return asyncio.run(ask())


def test_deallocate_then_allocate(two_nodes):
    a, b = two_nodes
    with dispylike.JobCluster(span, nodes=[a.address, b.address]) as c:
        wait_joined(c, 2)
        assert c.deallocate_node('node-a') == 0
        jobs = [c.submit(0.02) for _ in range(8)]
        assert c.wait(30) and names(jobs) == {'node-b'}
        assert c.allocate_node('node-a') == 0
        jobs = [c.submit(0.2) for _ in range(8)]
        assert c.wait(30) and names(jobs) == {'node-a', 'node-b'}
        assert c.deallocate_node('no-such-node') == -1


def test_set_node_cpus_limits_concurrency(node):
    with dispylike.JobCluster(span, nodes=[node.address]) as c:
        wait_joined(c, 1)
        assert c.set_node_cpus('127.0.0.1', -1) == 1
        spans = sorted(j()[1:] for j in [c.submit(0.2) for _ in range(3)])
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end - 0.01
        assert c.set_node_cpus('127.0.0.1', 5) == 2          # capped at what the node has
        assert c.set_node_cpus('nowhere', 1) == -1


def test_node_jobs_lists_running_jobs(node):
    with dispylike.JobCluster(span, nodes=[node.address]) as c:
        job = c.submit(1.0)
        while job.status != dispylike.DispyJob.Running:
            time.sleep(0.02)
        assert c.node_jobs('127.0.0.1') == [job]
        job()
        assert c.node_jobs('127.0.0.1') == []


def test_close_node_frees_it_for_other_clients(two_nodes):
    a, b = two_nodes
    with dispylike.JobCluster(span, nodes=[a.address, b.address]) as c:
        wait_joined(c, 2)
        running = c.submit_node('node-a', 0.5)
        assert c.close_node('node-a') == 0
        assert running() is not None                          # it finished first
        deadline = time.time() + 20
        while node_busy_with(a) and time.time() < deadline:
            time.sleep(0.05)
        assert node_busy_with(a) == ''                         # free, while c stays open
        jobs = [c.submit(0.01) for _ in range(4)]
        assert c.wait(30) and names(jobs) == {'node-b'}
        with dispylike.JobCluster(span, nodes=[a.address]) as other:
            assert other.submit(0)()[0] == 'node-a'


def count_setup():
    path = os.path.join(dispy_job_path, '..', 'setups')  # noqa: F821
    with open(path, 'a') as f:
        f.write('x')
    return 0


def read_setups(_):
    with open(os.path.join(dispy_job_path, '..', 'setups')) as f:  # noqa: F821
        return len(f.read())


def test_resetup_node_runs_cleanup_and_setup_again(node):
    with dispylike.JobCluster(read_setups, nodes=[node.address], setup=count_setup,
                              depends=[os]) as c:
        assert c.submit(0)() == 1
        assert c.resetup_node('127.0.0.1') == 0
        deadline = time.time() + 20
        while time.time() < deadline:
            job = c.submit(0)
            if job() == 2:
                break
            time.sleep(0.1)
        assert job.result == 2


class OnlyBigNodes(dispylike.NodeAllocate):
    def __init__(self, host, port, want_platform):
        super().__init__(host, port)
        self.want_platform = want_platform
        self.seen = []

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=''):
        self.seen.append((avail_info, platform))
        if self.want_platform not in platform or avail_info.memory < 1024:
            return 0
        return 1


def test_allocate_filters_by_platform_and_avail_info(node):
    skip = OnlyBigNodes(node.host, node.port, 'NoSuchOS')
    with dispylike.JobCluster(span, nodes=[skip]) as c:
        submit_unserved(c, 0)
    avail, plat = skip.seen[0]
    assert isinstance(avail, dispylike.DispyNodeAvailInfo) and avail.memory > 0 and plat
    take = OnlyBigNodes(node.host, node.port, 'Linux')
    with dispylike.JobCluster(span, nodes=[take]) as c:
        assert c.submit(0)() is not None and c.status()[0].cpus == 1


def test_discover_nodes_adds_a_node_later(two_nodes):
    a, b = two_nodes
    with dispylike.JobCluster(span, nodes=[a.address]) as c:
        wait_joined(c, 1)
        c.discover_nodes([b.address])
        wait_joined(c, 2)
        assert {n.name for n in c.status()} == {'node-a', 'node-b'}
