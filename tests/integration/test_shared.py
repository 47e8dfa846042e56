"""dispyscheduler + SharedJobCluster on loopback: several programs share two nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

import dispylike
from dispylike.testing import NodeProcess, SchedulerProcess, pid_alive, wait_for_nodes, wait_until

pytestmark = pytest.mark.timeout(120)
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # functions use dispy_* globals


def compute(n):
    import time
    time.sleep(0.05)
    return n * n


def slow(n):
    import time
    time.sleep(n)
    return n


def held(markers):
    """Say where it runs (a file naming its directory, under the node's dest path
    prefix), then wait (at most 30 s) until the test lets it end."""
    import os
    import time
    import uuid
    with open(os.path.join(markers, f'ran-{uuid.uuid4().hex}'), 'w') as f:
        f.write(os.getcwd())
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(markers, 'go')):
        if time.monotonic() > deadline:
            raise TimeoutError('not let go in 30 s')
        time.sleep(0.02)
    return markers


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
            for cluster in (a, b):    # both set up on both nodes: a's 40 jobs take ~0.5 s
                wait_for_nodes(cluster, [f'{n.host}:{n.port}' for n in two_nodes])
            jobs_a = [a.submit(i) for i in range(40)]
            jobs_b = [b.submit(i) for i in range(40)]
            assert [j() for j in jobs_a] == [i * i for i in range(40)]
            assert [j() for j in jobs_b] == [i * i for i in range(40)]
            for job in jobs_a + jobs_b:
                assert job.status == dispylike.DispyJob.Finished and job.ip_addr
            used_a = {(j.ip_addr, j._node.port) for j in jobs_a}
            used_b = {(j.ip_addr, j._node.port) for j in jobs_b}
            assert used_a & used_b, 'no node ran jobs of both programs'
            # fair: b did not wait for a's queue to drain (early/first come would)
            assert min(j.start_time for j in jobs_b) < max(j.start_time for j in jobs_a) - 0.2
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
            for cluster in (a, b):   # both set up on both nodes (work-conserving: a
                wait_for_nodes(cluster, [f'{n.host}:{n.port}' for n in two_nodes])  # program
            jobs_a = [a.submit(0.4) for _ in range(8)]     # with no node lets others run)
            # 4 CPUs: a's first round runs, the rest of a's jobs wait at the scheduler
            wait_until(lambda: sum(j.status == dispylike.DispyJob.Running
                                   for j in jobs_a) >= 4, 30, "a's first round running")
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


KILLED_CLIENT = textwrap.dedent('''
    import os, signal, sys, time
    import dispylike

    def hang(path):
        import os, time
        with open(path, 'w') as f:
            f.write(str(os.getpid()))
        time.sleep(120)

    host, port, marks, recover = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cluster = dispylike.SharedJobCluster(hang, scheduler_node=host, scheduler_port=port,
                                         secret='cs', recover_file=recover)
    jobs = [cluster.submit(os.path.join(marks, f'job{i}')) for i in range(2)]
    deadline = time.time() + 30
    while len(os.listdir(marks)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGKILL)
''')


def test_a_killed_client_has_its_jobs_terminated_and_others_go_on(two_nodes, tmp_path):
    marks = tmp_path / 'marks'
    marks.mkdir()
    with scheduler_for(two_nodes, '--zombie_interval', '0.05') as sched:   # 3 s
        other = shared(slow, sched)
        try:
            steady = [other.submit(0.2) for _ in range(10)]
            proc = subprocess.run([sys.executable, '-c', KILLED_CLIENT, sched.host,
                                   str(sched.port), str(marks), str(tmp_path / 'rec')],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == -9, proc.stderr
            pids = [int((marks / f'job{i}').read_text()) for i in range(2)]
            assert all(pid_alive(pid) for pid in pids)          # jobs go on for zombie_interval
            deadline = time.monotonic() + 30
            while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(pid_alive(pid) for pid in pids), 'the dead client\'s jobs still run'
            assert [j() for j in steady] == [0.2] * 10
            assert other.submit(0.1)() == 0.1
        finally:
            other.close()
        assert 'gone for 0.05 min (zombie_interval): terminating its jobs' in sched.log()


def test_recover_jobs_of_a_shared_cluster(two_nodes, tmp_path):
    client = textwrap.dedent('''
        import os, signal, sys, time
        import dispylike

        def work(n):
            import time
            time.sleep(1.0)
            return n * n

        host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        cluster = dispylike.SharedJobCluster(work, scheduler_node=host, scheduler_port=port,
                                             secret='cs', recover_file=path)
        jobs = [cluster.submit(i) for i in range(5)]
        for i, job in enumerate(jobs):
            job.id = f'j{i}'
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    ''')
    path = tmp_path / 'rec'
    with scheduler_for(two_nodes) as sched:
        proc = subprocess.run([sys.executable, '-c', client, sched.host, str(sched.port),
                               str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == -9, proc.stderr
        jobs = dispylike.recover_jobs(str(path), secret='cs', timeout=30)
        assert [j.id for j in jobs] == [f'j{i}' for i in range(5)]
        assert all(j.status == dispylike.DispyJob.Finished for j in jobs), \
            [(j.status, j.exception) for j in jobs]
        assert [j.result for j in jobs] == [i * i for i in range(5)]
        assert 'closed' in sched.log()


def chatty(n):
    import time
    dispy_provisional_result(n + 1)  # noqa: F821
    with open('out.txt', 'w') as f:
        f.write(f'file of job {n}')
    dispy_send_file('out.txt', relay=True)  # noqa: F821
    with open('direct.txt', 'w') as f:
        f.write('relay=False')
    dispy_send_file('direct.txt', relay=False)  # noqa: F821
    time.sleep(0.3)
    with open('sent.txt') as f:
        return f.read()


def test_provisional_results_and_files_go_through_the_scheduler(two_nodes, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'sent.txt').write_text('from the client')
    updates = []
    node = two_nodes[0]
    with scheduler_for(two_nodes) as sched:
        cluster = shared(chatty, sched, nodes=[f'{node.host}'],
                         job_status=lambda job: updates.append((job.status, job.result)))
        try:
            # both set up (the nodes join without a job): the job may run on either
            wait_for_nodes(cluster, [f'{n.host}:{n.port}' for n in two_nodes])
            for n in cluster.status():
                assert cluster.send_file(str(tmp_path / 'sent.txt'), f'{n.ip_addr}:{n.port}') == 0
            job = cluster.submit(5)
            assert job() == 'from the client'
            cluster.wait()
        finally:
            cluster.close()
    assert (dispylike.DispyJob.ProvisionalResult, 6) in updates
    assert (tmp_path / 'out.txt').read_text() == 'file of job 5'
    assert (tmp_path / 'direct.txt').read_text() == 'relay=False'


def ran_on(markers, node):
    """How many held() jobs have started on ``node`` (NodeProcess)."""
    return sum((markers / name).read_text().startswith(node.prefix + os.sep)
               for name in os.listdir(markers) if name.startswith('ran-'))


def test_node_lost_mid_run_reentrant_jobs_run_elsewhere(tmp_path):
    with NodeProcess(cpus=2, secret='ns') as keep:
        lost = NodeProcess(cpus=2, secret='ns')
        try:
            with scheduler_for([keep, lost]) as sched:
                cluster = shared(held, sched, reentrant=True)
                try:
                    wait_for_nodes(cluster, [f'{n.host}:{n.port}' for n in (keep, lost)])
                    jobs = [cluster.submit(str(tmp_path)) for _ in range(8)]
                    wait_until(lambda: ran_on(tmp_path, lost), 30, 'a job running on the node')
                    os.kill(lost.proc.pid, signal.SIGKILL)
                    (tmp_path / 'go').touch()   # held until now: none could end on the lost node
                    assert [j() for j in jobs] == [str(tmp_path)] * 8
                    assert all(j.status == dispylike.DispyJob.Finished for j in jobs)
                    assert {j._node.port for j in jobs} == {keep.port}
                finally:
                    cluster.close()
                assert 'lost node' in sched.log()
        finally:
            lost.stop()


def read_data(n):
    with open('data.txt') as f:
        return f.read()


def test_each_programs_files_are_its_own_on_a_shared_node(two_nodes, tmp_path):
    paths = []
    for tag in ('first', 'second'):
        (tmp_path / tag).mkdir()
        path = tmp_path / tag / 'data.txt'
        path.write_text(f'data of the {tag} program')
        paths.append(str(path))
    with scheduler_for(two_nodes, '--fair_cluster_scheduler') as sched:
        a = shared(read_data, sched, depends=[paths[0]])
        b = shared(read_data, sched, depends=[paths[1]])
        try:
            jobs_a = [a.submit(i) for i in range(8)]
            jobs_b = [b.submit(i) for i in range(8)]
            assert {j() for j in jobs_a} == {'data of the first program'}
            assert {j() for j in jobs_b} == {'data of the second program'}
        finally:
            a.close()
            b.close()


def test_a_restarted_scheduler_can_use_nodes_that_still_hold_its_old_jobs(tmp_path):
    prefix = str(tmp_path / 'sched')
    with NodeProcess(cpus=2, secret='ns') as node:
        first = scheduler_for([node], '--dest_path_prefix', prefix)
        try:
            cluster = shared(slow, first)
            cluster.submit(0)()
            cluster.submit(60)                  # still running on the node below
            time.sleep(0.5)
            os.kill(first.proc.pid, signal.SIGKILL)
            cluster.close(timeout=0, terminate=True)
        finally:
            first.stop()
        with scheduler_for([node], '--dest_path_prefix', prefix) as again:
            with shared(compute, again) as other:
                job = other.submit(7)
                assert job(timeout=60) == 49, (job.status, again.log())
        assert 'disconnected' in node.log()


def counted(n, marks):
    import os
    import time
    with open(os.path.join(marks, f'{n}-{os.getpid()}'), 'w') as f:
        f.write('ran')
    time.sleep(0.2)
    return n * n


@pytest.mark.parametrize('after', [None, 0.5])   # before the jobs reach it, or mid-run
def test_a_broken_link_to_the_scheduler_is_dialled_again_and_no_job_runs_twice(two_nodes,
                                                                               tmp_path, after):
    marks = tmp_path / 'marks'
    marks.mkdir()
    with scheduler_for(two_nodes) as sched:
        with shared(counted, sched) as cluster:
            cluster.submit(-1, str(marks))()
            if after is None:
                # hold the I/O loop so the link breaks before the jobs are sent
                cluster._io.call(time.sleep, 0.5)
                jobs = [cluster.submit(i, str(marks)) for i in range(20)]
                cluster._io.call(cluster._engine.conn.abort)
            else:
                jobs = [cluster.submit(i, str(marks)) for i in range(20)]
                time.sleep(after)
                cluster._io.call(cluster._engine.conn.abort)      # the link breaks
            time.sleep(0.5)
            more = [cluster.submit(i, str(marks)) for i in range(20, 30)]   # while it is down
            assert [j(timeout=60) for j in jobs + more] == [i * i for i in range(30)]
        ran = [name.rsplit('-', 1)[0] for name in os.listdir(marks)]
        assert sorted(ran) == sorted(str(i) for i in range(-1, 30)), 'a job ran twice or never'
        assert 'attached again' in sched.log()


def test_closing_while_the_link_is_down_stops_dialling_the_scheduler(two_nodes):
    import asyncio

    async def reattach_tasks():
        return [t for t in asyncio.all_tasks() if '_reattach' in repr(t.get_coro())]

    with scheduler_for(two_nodes) as sched:
        cluster = shared(compute, sched)
        try:
            assert cluster.submit(3)() == 9
            cluster._io.call(cluster._engine.conn.abort)          # the link breaks
            tasks = wait_until(lambda: cluster._io.run(reattach_tasks(), timeout=10), 10,
                               'the client dialling the scheduler again')
        finally:
            cluster.close()
        assert all(task.done() for task in tasks), 'a reattach task outlived close()'


def test_a_listed_node_that_starts_later_is_used(tmp_path):
    with NodeProcess(cpus=1, secret='ns') as probe:
        port = probe.port                      # a free port for the node started later
    with SchedulerProcess([f'127.0.0.1:{port}'], node_secret='ns', cluster_secret='cs') as sched:
        with shared(compute, sched) as cluster:
            job = cluster.submit(6)
            time.sleep(1.0)
            assert job.status == dispylike.DispyJob.Created
            with NodeProcess(cpus=1, secret='ns', extra=['--node_port', str(port)]):
                assert job(timeout=30) == 36


def test_two_programs_with_one_dest_path_do_not_share_a_directory(tmp_path):
    data = tmp_path / 'data.txt'
    data.write_text('first')
    with NodeProcess(cpus=2, secret='ns') as node, scheduler_for([node]) as sched:
        a = shared(read_data, sched, depends=[str(data)], dest_path='same')
        try:
            assert a.submit(0)() == 'first'
            data.write_text('second')
            b = shared(read_data, sched, depends=[str(data)], dest_path='same')
            with b:
                job = b.submit(0)
                time.sleep(1.0)
                assert job.status == dispylike.DispyJob.Created   # refused while a uses it
                assert a.submit(1)() == 'first'                   # a's file is untouched
                a.close()
                assert job(timeout=30) == 'second'
        finally:
            a.close()
        assert 'in use by another computation' in sched.log()


def test_a_computation_id_that_is_a_path_is_refused(two_nodes, tmp_path):
    import asyncio

    from dispylike.protocol import messages as m
    from dispylike.transport.connection import connect
    victim = tmp_path / 'victim'
    victim.mkdir()

    async def attack(sched):
        conn = await connect(sched.host, sched.port, 'cs')
        conn.send(m.ShareComputation('../../../../../../' + str(victim).lstrip('/'), 'x', 'evil',
                                     '', b'', True, 0.0, False, False, ()))
        try:
            with pytest.raises(dispylike.DispyError):
                while True:
                    await asyncio.wait_for(conn.recv(), 10)
        finally:
            conn.abort()
    with scheduler_for(two_nodes) as sched:
        asyncio.run(attack(sched))
        with shared(compute, sched) as cluster:
            assert cluster.submit(2)() == 4
        assert 'malformed computation id' in sched.log()
    assert list(victim.iterdir()) == []
