"""Fault drills in the namespace lab: silent partitions, healing, kill -9 of a node.

Each asserts that every job ends exactly once, that the loss is detected within
5 x pulse_interval + 1 s, and that a node that comes back gets work again."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.multihost
PULSE = 1.0


def slow(n):
    import socket
    import time
    time.sleep(1.0)
    return socket.gethostname(), n


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def cluster_on_h1(lab, **kw):
    with lab.netns('h1'):
        return dispylike.JobCluster(slow, secret='lab', pulse_interval=PULSE, **kw)


def zombie_delays(caplog) -> list[float]:
    return [float(m.group(1)) for r in caplog.records
            if (m := re.search(r'silent for ([0-9.]+) s: zombie', r.getMessage()))]


def test_partition_then_heal_with_reentrant_jobs(lab, start_node, caplog):
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip(host))
    joins = []

    def cluster_status(status, node, job):
        if status == dispylike.DispyNode.Initialized:
            joins.append(node.ip_addr)

    cluster = cluster_on_h1(lab, reentrant=True, cluster_status=cluster_status)
    with cluster:
        jobs = [cluster.submit(i) for i in range(12)]
        assert wait_for(lambda: any(j.status == DispyJob.Running and j.ip_addr == lab.ip('h2')
                                    for j in jobs), 20)
        with caplog.at_level(logging.INFO, logger='dispylike'):
            lab.partition('h2')
            assert cluster.wait(60)
        assert [j.status for j in jobs] == [DispyJob.Finished] * 12
        assert sorted(j.result[1] for j in jobs) == list(range(12))    # each exactly once
        (delay,) = zombie_delays(caplog)
        assert delay <= 5 * PULSE + 1
        lab.heal('h2')                                   # the node comes back ...
        assert wait_for(lambda: joins.count(lab.ip('h2')) == 2, 30), joins
        more = [cluster.submit(i) for i in range(8)]
        assert cluster.wait(60)
        assert 'h2' in {j.result[0] for j in more}       # ... and gets work again


def test_partition_without_reentrant_abandons_its_jobs(lab, start_node):
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip(host))
    cluster = cluster_on_h1(lab)
    with cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        assert wait_for(lambda: sum(j.status == DispyJob.Running for j in jobs) == 4, 20)
        lab.partition('h2')
        assert cluster.wait(60)
    on_h2 = [j for j in jobs if j.ip_addr == lab.ip('h2')]
    assert on_h2 and all(j.status == DispyJob.Abandoned and 'lost' in j.exception
                         for j in on_h2)
    assert all(j.status == DispyJob.Finished for j in jobs if j not in on_h2)


def test_kill_9_of_a_node_leaves_no_job_running(lab, start_node):
    victim = start_node('h2', '-i', lab.ip('h2'))
    start_node('h3', '-i', lab.ip('h3'))
    cluster = cluster_on_h1(lab, reentrant=True)
    with cluster:
        jobs = [cluster.submit(i) for i in range(8)]
        assert wait_for(lambda: any(j.status == DispyJob.Running and j.ip_addr == lab.ip('h2')
                                    for j in jobs), 20)
        os.kill(victim.proc.pid, signal.SIGKILL)
        assert cluster.wait(60)
        assert sorted(j.result[1] for j in jobs) == list(range(8))

    def left():
        return subprocess.run(['ip', 'netns', 'pids', lab.ns('h2')], capture_output=True,
                              text=True).stdout.split()
    assert wait_for(lambda: left() == [], 10), left()     # job processes died with it
