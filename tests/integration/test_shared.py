"""dispyscheduler + SharedJobCluster on loopback: several programs share two nodes."""

from __future__ import annotations

import time

import pytest

import dispylike
from dispylike.testing import NodeProcess, SchedulerProcess

pytestmark = pytest.mark.timeout(120)


def compute(n):
    import time
    time.sleep(0.05)
    return n * n


def slow(n):
    import time
    time.sleep(n)
    return n


def whoami(n):
    import os
    import time
    time.sleep(0.3)
    return os.getpid(), n


@pytest.fixture
def two_nodes():
    with NodeProcess(cpus=2, secret='ns') as a, NodeProcess(cpus=2, secret='ns') as b:
        yield a, b


def scheduler_for(nodes, *extra, cluster_secret='cs'):
    return SchedulerProcess([f'{n.host}:{n.port}' for n in nodes], node_secret='ns',
                            cluster_secret=cluster_secret, extra=list(extra))


def shared(compute_fn, sched, **kw):
    return dispylike.SharedJobCluster(compute_fn, scheduler_node=sched.host,
                                      scheduler_port=sched.port, secret='cs', **kw)


def test_two_programs_share_the_nodes_and_interleave_on_them(two_nodes):
    with scheduler_for(two_nodes, '--fair_cluster_scheduler') as sched:
        a = shared(compute, sched)
        b = shared(compute, sched)
        try:
            jobs_a = [a.submit(i) for i in range(40)]
            jobs_b = [b.submit(i) for i in range(40)]
            assert [j() for j in jobs_a] == [i * i for i in range(40)]
            assert [j() for j in jobs_b] == [i * i for i in range(40)]
            for job in jobs_a + jobs_b:
                assert job.status == dispylike.DispyJob.Finished and job.ip_addr
            used_a = {(j.ip_addr, j._node.port) for j in jobs_a}
            used_b = {(j.ip_addr, j._node.port) for j in jobs_b}
            assert used_a & used_b, 'no node ran jobs of both programs'
            assert len(a.status()) == 2 and sum(n.jobs_done for n in a.status()) == 40
        finally:
            a.close()
            b.close()
        assert 'closed' in sched.log()


def test_exclusive_waits_for_the_others_then_runs_alone(two_nodes):
    with scheduler_for(two_nodes) as sched:
        first = shared(slow, sched)
        try:
            long_job = first.submit(1.5)
            time.sleep(0.3)
            excl = shared(compute, sched, exclusive=True)
            later = shared(compute, sched)
            try:
                excl_job = excl.submit(3)
                later_job = later.submit(4)
                time.sleep(0.8)
                assert excl_job.status == dispylike.DispyJob.Created   # waits for `first`
                assert long_job() == 1.5
                first.close()
                assert excl_job() == 9
                assert later_job.status == dispylike.DispyJob.Created  # waits for `excl`
                excl.close()
                assert later_job() == 16
                assert later_job.start_time >= excl_job.end_time
            finally:
                excl.close(timeout=5, terminate=True)
                later.close(timeout=5, terminate=True)
        finally:
            first.close(timeout=5, terminate=True)


def test_first_come_serves_the_earlier_program_first(two_nodes):
    with scheduler_for(two_nodes) as sched:
        a = shared(slow, sched)
        b = shared(slow, sched)
        try:
            a.submit(0)(), b.submit(0)()    # both set up on both nodes (work-conserving:
            time.sleep(0.5)                 # a program with no node yet lets others run)
            jobs_a = [a.submit(0.4) for _ in range(8)]     # 4 CPUs: two rounds
            time.sleep(0.2)
            jobs_b = [b.submit(0.1) for _ in range(2)]
            for job in jobs_a + jobs_b:
                job()
            # b's jobs came after all of a's: none of them starts before a's last starts
            assert min(j.start_time for j in jobs_b) >= max(j.start_time for j in jobs_a) - 0.05
        finally:
            a.close()
            b.close()


def test_set_node_cpus_needs_a_cooperative_scheduler(two_nodes):
    node = two_nodes[0]
    with scheduler_for(two_nodes) as sched:
        cluster = shared(compute, sched)
        try:
            assert cluster.submit(2)() == 4
            assert cluster.set_node_cpus(node.host + f':{node.port}', 1) == -1
        finally:
            cluster.close()
    with scheduler_for(two_nodes, '--cooperative') as sched:
        cluster = shared(whoami, sched, nodes=[f'{node.host}'])
        try:
            cluster.submit(0)()
            assert cluster.set_node_cpus(f'{node.host}:{node.port}', 1) == 1
            jobs = [cluster.submit(i) for i in range(6)]
            for job in jobs:
                job()
            starts = sorted((j.start_time, j.end_time) for j in jobs if j._node.port == node.port)
            overlaps = sum(1 for (_, end), (start, _) in zip(starts, starts[1:], strict=False)
                           if start < end - 0.05)
            assert overlaps == 0, 'two jobs ran at once on a node given 1 CPU'
            assert cluster.resetup_node(node.host) == -1
        finally:
            cluster.close()


def test_wrong_cluster_secret_is_refused_and_the_scheduler_keeps_serving(two_nodes):
    with scheduler_for(two_nodes) as sched:
        with pytest.raises(dispylike.DispyError):
            dispylike.SharedJobCluster(compute, scheduler_node=sched.host,
                                       scheduler_port=sched.port, secret='wrong')
        cluster = shared(compute, sched)
        try:
            assert cluster.submit(3)() == 9
        finally:
            cluster.close()
