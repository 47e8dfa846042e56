"""Shared clusters in the namespace lab: dispyscheduler on h1, nodes on h2-h4, three
client programs on h5-h7 at once, each a separate process on its own host."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import textwrap
import time

import pytest

from dispylike.execution.processes import child_env
from dispylike.testing import pid_alive

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(180)]

CLIENT = textwrap.dedent('''
    import json, os, sys, time
    import dispylike

    def work(n, pause, marks):
        import os, time
        if marks:                # named <node ip>_<pid>: the node's global, as dispy sets it
            name = f'{dispy_node_ip_addr}_{os.getpid()}'
            with open(os.path.join(marks, name), 'w') as f:
                f.write('running')
        time.sleep(pause)
        return n * n

    sched, out, count, pause, marks, exclusive = sys.argv[1:7]
    cluster = dispylike.SharedJobCluster(work, scheduler_node=sched, secret='cs',
                                         reentrant=True, exclusive=exclusive == '1')
    began = time.time()
    jobs = [cluster.submit(i, float(pause), marks) for i in range(int(count))]
    samples = []
    while not all(job.done for job in jobs):
        running = {n.ip_addr: len(cluster.node_jobs(n)) for n in cluster.status()}
        samples.append((time.time(), running))
        time.sleep(0.25)
    results = [(i, int(j.status), j.result, j.ip_addr, j.start_time, j.end_time)
               for i, j in enumerate(jobs)]
    cluster.close()
    with open(out, 'w') as f:
        json.dump({'began': began, 'results': results, 'samples': samples}, f)
''')


class Program:
    """A SharedJobCluster client program running on a lab host."""

    def __init__(self, lab, host, sched_ip, count, pause, marks='', exclusive=False):
        self.host = host
        self.out = tempfile.mktemp(prefix=f'dispylike-{host}-', suffix='.json')
        fd, self.log = tempfile.mkstemp(prefix=f'client-{host}-', suffix='.log')
        env = dict(lab.env, PYTHONPATH=child_env()['PYTHONPATH'])
        try:
            self.proc = lab.popen(host, [sys.executable, '-c', CLIENT, sched_ip, self.out,
                                         str(count), str(pause), marks,
                                         '1' if exclusive else '0'],
                                  env=env, stderr=fd, stdout=fd)
        finally:
            os.close(fd)      # the program has its own copy

    def output(self) -> str:
        with open(self.log, errors='replace') as f:
            return f.read()

    def result(self, timeout=120):
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, f'client on {self.host} failed:\n{self.output()}'
        with open(self.out) as f:
            data = json.load(f)
        os.unlink(self.out)
        return data


def wait_for_log(daemon, text, timeout=30):
    deadline = time.time() + timeout
    while text not in daemon.log() and time.time() < deadline:
        time.sleep(0.1)
    assert text in daemon.log(), daemon.log()


def check_all_finished(data, count):
    results = data['results']
    assert len(results) == count
    for i, status, result, ip, _start, _end in results:
        assert status == 11 and result == i * i, (i, status, result, ip)   # 11: Finished


def test_three_programs_share_three_nodes(lab, start_node, start_scheduler):
    sched = start_scheduler('h1', '-n', '10.77.0.*', '--fair_cluster_scheduler',
                            '--zombie_interval', '0.05', '--pulse_interval', '1')
    nodes = [start_node(h) for h in ('h2', 'h3', 'h4')]
    marks = tempfile.mkdtemp(prefix='dispylike-marks-')
    first = Program(lab, 'h5', sched.address, 30, 0.5)
    second = Program(lab, 'h6', sched.address, 30, 0.5)
    doomed = Program(lab, 'h7', sched.address, 30, 2.0, marks=marks)
    deadline = time.time() + 60
    while len(os.listdir(marks)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    doomed.proc.send_signal(signal.SIGKILL)            # the program on h7 crashes
    doomed.proc.wait(10)
    pids = [int(name.rpartition('_')[2]) for name in os.listdir(marks)]
    assert pids, f'the doomed program never ran a job:\n{doomed.output()}\n{sched.log()}'
    a, b = first.result(), second.result()
    check_all_finished(a, 30)
    check_all_finished(b, 30)
    # interleaving: a node ran jobs of both programs at the same time
    both = [(ra[3], rb[3]) for ra in a['results'] for rb in b['results']
            if ra[3] == rb[3] and ra[4] < rb[5] and rb[4] < ra[5]]
    assert both, 'no node ran jobs of two programs at once'
    # fair share, from node_jobs sampled by each program while both had work
    end = min(max(r[5] for r in a['results']), max(r[5] for r in b['results']))
    shares = {}
    for name, data in (('h5', a), ('h6', b)):
        counts = [sum(running.values()) for t, running in data['samples'] if t < end - 0.5]
        shares[name] = statistics.median(counts) if counts else 0
    print(f'median CPUs in use while both ran: {shares}')
    assert all(1 <= share <= 4 for share in shares.values()), shares   # 6 CPUs, 2 or 3 programs
    # the crashed program's jobs are terminated on the nodes (zombie_interval 3 s)
    deadline = time.time() + 30
    while any(pid_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(pid) for pid in pids), 'jobs of the crashed program still run'
    assert 'zombie_interval' in sched.log()
    for node in nodes:
        assert 'Traceback' not in node.log()


def test_exclusive_waits_then_runs_alone_and_a_lost_node_reschedules(lab, start_node,
                                                                     start_scheduler):
    sched = start_scheduler('h1', '-n', '10.77.0.*', '--pulse_interval', '1')
    nodes = {h: start_node(h) for h in ('h2', 'h3', 'h4')}
    marks = tempfile.mkdtemp(prefix='dispylike-marks-')
    running = Program(lab, 'h5', sched.address, 36, 1.0, marks=marks)     # 6 s on 6 CPUs
    on_h4 = f"{lab.ip('h4')}_"
    deadline = time.time() + 60
    while not any(name.startswith(on_h4) for name in os.listdir(marks)) \
            and time.time() < deadline:
        time.sleep(0.1)
    assert any(name.startswith(on_h4) for name in os.listdir(marks)), \
        f'the first program never ran a job on h4:\n{running.output()}\n{sched.log()}'
    exclusive = Program(lab, 'h6', sched.address, 6, 0.3, exclusive=True)
    wait_for_log(sched, 'waits for the others to close (exclusive)')
    later = Program(lab, 'h7', sched.address, 6, 0.3)
    wait_for_log(sched, 'waits for an exclusive computation')
    nodes['h4'].proc.send_signal(signal.SIGKILL)         # a node dies mid-run of the first
    killed_at = time.time()
    first, alone, last = running.result(), exclusive.result(), later.result()
    for data, count in ((first, 36), (alone, 6), (last, 6)):
        check_all_finished(data, count)
    # the jobs it was running ran again elsewhere: none ended there after it died
    assert all(r[3] != lab.ip('h4') or r[5] <= killed_at for r in first['results'])
    assert min(r[4] for r in alone['results']) >= max(r[5] for r in first['results']) - 0.1
    assert min(r[4] for r in last['results']) >= max(r[5] for r in alone['results']) - 0.1
    log = sched.log()
    assert 'lost node' in log, log
