"""Fault drills in the namespace lab: silent partitions, healing, kill -9 of a node.

Each asserts that every job ends exactly once, that the loss is detected (by the zombie
rule: silent for more than 5 pulse intervals; how long it took is reported, not
asserted), and that a node that comes back gets work again."""

from __future__ import annotations

import json
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
from dispylike.driver.engine import ZOMBIE_PULSES
from dispylike.execution.processes import child_env

from .lab import Lab

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


def reentrant_cluster_counting_joins(lab):
    """A reentrant cluster on h1, and the list of node addresses as each joins."""
    joins = []

    def cluster_status(status, node, job):
        if status == dispylike.DispyNode.Initialized:
            joins.append(node.ip_addr)
    return cluster_on_h1(lab, reentrant=True, cluster_status=cluster_status), joins


def wait_running_on(lab, jobs, host):
    assert wait_for(lambda: any(j.status == DispyJob.Running and j.ip_addr == lab.ip(host)
                                for j in jobs), 20)


def assert_back_with_work(lab, cluster, joins, host):
    """``host`` joined a second time, and new jobs run there."""
    assert wait_for(lambda: joins.count(lab.ip(host)) == 2, 30), joins
    more = [cluster.submit(i) for i in range(8)]
    assert cluster.wait(60)
    assert host in {j.result[0] for j in more}


def finished_once(jobs, n):
    assert [j.status for j in jobs] == [DispyJob.Finished] * n, [j.exception for j in jobs]
    assert sorted(j.result[1] for j in jobs) == list(range(n))      # each exactly once


FAULTS = {'partition': ('silent partition (100% drop) then heal, reentrant', Lab.partition),
          'cut': ('link cut mid-job then heal, reentrant', Lab.cut)}


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_fault_mid_job_then_heal_with_reentrant_jobs(lab, start_node, caplog, fault):
    name, inflict = FAULTS[fault]
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip(host))
    cluster, joins = reentrant_cluster_counting_joins(lab)
    with cluster:
        jobs = [cluster.submit(i) for i in range(12)]
        wait_running_on(lab, jobs, 'h2')
        start = time.time()
        with caplog.at_level(logging.INFO, logger='dispylike'):
            inflict(lab, 'h2')
            assert cluster.wait(60)
        took = time.time() - start
        finished_once(jobs, 12)
        (delay,) = zombie_delays(caplog)               # the zombie rule dropped h2, once
        assert delay >= ZOMBIE_PULSES * PULSE           # not before it had been silent long
        print(f'{name}: h2 declared a zombie after {delay:.1f} s of silence')
        lab.heal('h2')                                   # the node comes back ...
        assert_back_with_work(lab, cluster, joins, 'h2')  # ... and gets work again
    report(name, detection_s=round(delay, 1), lost=0, duplicates=0, finish_s=round(took, 1),
           healed_gets_jobs=True)


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
    report('silent partition, not reentrant', lost=0, duplicates=0,
           abandoned=len(on_h2), finished=len(jobs) - len(on_h2))


def test_kill_9_of_a_node_leaves_no_job_running(lab, start_node):
    victim = start_node('h2', '-i', lab.ip('h2'))
    start_node('h3', '-i', lab.ip('h3'))
    cluster = cluster_on_h1(lab, reentrant=True)
    with cluster:
        jobs = [cluster.submit(i) for i in range(8)]
        wait_running_on(lab, jobs, 'h2')
        os.kill(victim.proc.pid, signal.SIGKILL)
        assert cluster.wait(60)
        assert sorted(j.result[1] for j in jobs) == list(range(8))

    def left():
        return subprocess.run(['ip', 'netns', 'pids', lab.ns('h2')], capture_output=True,
                              text=True).stdout.split()
    assert wait_for(lambda: left() == [], 10), left()     # job processes died with it
    report('kill -9 of a node mid-job, reentrant', lost=0, duplicates=0,
           orphan_job_processes=0)


# --- more drills: report what they measured when DISPYLIKE_DRILL_REPORT names a file ---

def report(drill: str, **figures) -> None:
    path = os.environ.get('DISPYLIKE_DRILL_REPORT')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps({'drill': drill, **figures}) + '\n')


def test_node_restart_mid_run(lab, start_node):
    victim = start_node('h2', '-i', lab.ip('h2'))
    start_node('h3', '-i', lab.ip('h3'))
    cluster, joins = reentrant_cluster_counting_joins(lab)
    with cluster:
        jobs = [cluster.submit(i) for i in range(12)]
        wait_running_on(lab, jobs, 'h2')
        start = time.time()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        start_node('h2', '-i', lab.ip('h2'))               # the same host and port, at once
        assert cluster.wait(60)
        took = time.time() - start
        finished_once(jobs, 12)
        assert_back_with_work(lab, cluster, joins, 'h2')    # the new incarnation
    report('node restart (kill -9, start again) mid-run, reentrant', lost=0, duplicates=0,
           finish_s=round(took, 1), healed_gets_jobs=True)


def test_twenty_percent_loss_on_one_node_for_the_whole_run(lab, start_node):
    for host in ('h2', 'h3'):
        start_node(host, '-i', lab.ip(host))
    cluster = cluster_on_h1(lab, reentrant=True)
    with cluster:
        assert wait_for(lambda: len(cluster.status()) == 2, 20)
        lab.loss('h2', 20)
        start = time.time()
        jobs = [cluster.submit(i) for i in range(24)]
        assert cluster.wait(120)
        finished_once(jobs, 24)
        hosts = [j.result[0] for j in jobs]
    report('20% packet loss on one node, whole run, reentrant', lost=0, duplicates=0,
           finish_s=round(time.time() - start, 1),
           jobs_on_lossy_node=hosts.count('h2'))


CRASHING_CLIENT = '''
import os, signal, sys, time
import dispylike

def slow(n):
    import socket, time
    time.sleep(2.0)
    return socket.gethostname(), n

nodes, path = sys.argv[1].split(','), sys.argv[2]
cluster = dispylike.JobCluster(slow, nodes=nodes, secret='lab', recover_file=path,
                               pulse_interval=1)
jobs = [cluster.submit(i) for i in range(4)]
deadline = time.time() + 20
while sum(j.status == dispylike.DispyJob.Running for j in jobs) < 4 and time.time() < deadline:
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
'''

RECOVERING_CLIENT = '''
import json, sys
import dispylike
jobs = dispylike.recover_jobs(sys.argv[1], secret='lab')
print(json.dumps([[j.id, int(j.status), j.result] for j in jobs]))
'''


def test_client_kill_9_then_recover_jobs_from_a_new_process(lab, start_node, tmp_path):
    nodes = [start_node(host, '-i', lab.ip(host)) for host in ('h2', 'h3')]
    path = str(tmp_path / 'recover')
    env = dict(lab.env, PYTHONPATH=child_env()['PYTHONPATH'])
    crash = lab.popen('h1', [sys.executable, '-c', CRASHING_CLIENT,
                             f'{lab.ip("h2")},{lab.ip("h3")}', path], env=env,
                      stderr=subprocess.PIPE, text=True)
    _, crash_err = crash.communicate(timeout=60)
    assert crash.returncode == -signal.SIGKILL, crash_err
    start = time.time()
    rec = lab.popen('h1', [sys.executable, '-c', RECOVERING_CLIENT, path], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    got = json.loads(out)
    assert [(i, status) for i, status, _ in got] == [(i, int(DispyJob.Finished))
                                                     for i in range(1, 5)]
    assert sorted(r[1] for _, _, r in got) == list(range(4))
    assert {r[0] for _, _, r in got} == {'h2', 'h3'}
    for node in nodes:                                      # both released
        assert wait_for(lambda n=node: 'closed' in n.log().split('attached again')[-1], 10)
    report('client kill -9, recover_jobs from a new process', lost=0, duplicates=0,
           recover_s=round(time.time() - start, 1))
