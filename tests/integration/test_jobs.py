"""End to end on 127.0.0.1: client -> node -> forked job -> node -> client."""

import os
import sys
import threading
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.testing import submit_unserved

# Test functions travel by value, as functions of a client's __main__ do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(n):
    return n * n


def noisy(n):
    import sys
    print('out', n)
    print('err', n, file=sys.stderr)
    if n < 0:
        raise ValueError('negative')
    return n


def cluster_for(node, compute, **kw):
    return dispylike.JobCluster(compute, nodes=[(node.host, node.port)], **kw)


def test_results_stdout_stderr_and_attributes(node):
    with cluster_for(node, noisy) as c:
        t0 = time.time()
        job = c.submit(3)
        assert job.id == 1 and job() == 3
        assert job.status == DispyJob.Finished
        assert job.stdout == 'out 3\n' and job.stderr == 'err 3\n' and job.exception is None
        assert job.ip_addr == job.host == '127.0.0.1'
        assert t0 <= job.start_time <= job.end_time <= time.time()
        assert c.submit(4).id == 2


def test_exception_becomes_terminated_with_traceback(node):
    with cluster_for(node, noisy) as c:
        job = c.submit(-1)
        assert job() is None
        assert job.status == DispyJob.Terminated
        assert 'ValueError: negative' in job.exception and job.stdout == 'out -1\n'


def test_closure_lambda_and_kwargs(node):
    base = 10
    with cluster_for(node, lambda x, y=1: base + x * y) as c:
        assert c.submit(2, y=3)() == 16


def test_two_thousand_trivial_jobs_all_correct(node):
    with cluster_for(node, square) as c:
        jobs = [c.submit(i) for i in range(2000)]
        assert c.wait(timeout=110)
        bad = [j for j in jobs if j.status != DispyJob.Finished or j.result != j.args[0] ** 2]
        assert bad == []


def test_one_job_per_cpu(node1):
    def span(_):
        import time
        start = time.time()
        time.sleep(0.2)
        return start, time.time()

    with cluster_for(node1, span) as c:
        jobs = [c.submit(i) for i in range(4)]
        spans = sorted(j() for j in jobs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.01, 'two jobs overlapped on a 1-CPU node'


def test_each_job_in_a_fresh_process(node):
    def pid(_):
        return os.getpid()

    with cluster_for(node, pid) as c:
        pids = [c.submit(i)() for i in range(6)]
    assert len(set(pids)) == 6


def test_callbacks_run_off_the_io_loop(node):
    seen = []
    statuses = []

    def job_status(job):
        seen.append((job.id, threading.current_thread().name))

    def cluster_status(status, node_, job):
        statuses.append((status, threading.current_thread().name))

    with cluster_for(node, square, job_status=job_status, cluster_status=cluster_status) as c:
        for i in range(5):
            c.submit(i)
        c.wait()
    assert sorted(i for i, _ in seen) == [1, 2, 3, 4, 5]
    names = {n for _, n in seen} | {n for _, n in statuses}
    assert names == {'dispylike-callbacks'}
    kinds = {s for s, _ in statuses}
    assert {dispylike.DispyNode.Initialized, DispyJob.Running, DispyJob.Finished} <= kinds


def test_print_status_table(node, capsys):
    with cluster_for(node, square) as c:
        for i in range(4):
            c.submit(i)
        c.wait()
        c.print_status()
    out = capsys.readouterr().out
    assert 'Node' in out and 'Sec/Job' in out and 'Sent' in out and 'Rcvd' in out
    assert '127.0.0.1' in out and 'speedup' in out
    row = [line for line in out.splitlines() if '127.0.0.1' in line][0]
    assert row.split('|')[2].strip() == '4'


def test_submit_node_and_unknown_node(node):
    with cluster_for(node, square) as c:
        c.submit(1)()                       # the node has joined
        assert c.submit_node('127.0.0.1', 5)() == 25
        nodes = c.status()
        assert c.submit_node(nodes[0], 6)() == 36
        job = c.submit_node('10.77.9.9', 7)
        assert job() is None and job.status == DispyJob.Abandoned


def test_wait_timeout_and_close_terminate(node):
    def sleepy(t):
        import time
        time.sleep(t)
        return t

    c = cluster_for(node, sleepy)
    job = c.submit(30)
    assert c.wait(timeout=0.5) is False
    assert c.close(timeout=0.2) is False            # not finished, not terminated: still open
    assert c.close(timeout=0.2, terminate=True) is True
    assert job.status in (DispyJob.Cancelled, DispyJob.Abandoned)
    with pytest.raises(dispylike.errors.ClusterClosed):
        c.submit(1)


def test_node_serves_the_next_client_after_close(node):
    for _ in range(2):
        with cluster_for(node, square) as c:
            assert c.submit(3)() == 9


def test_second_client_is_refused_while_node_is_held(node, caplog):
    with cluster_for(node, square) as first:
        assert first.submit(2)() == 4
        with cluster_for(node, square) as second:
            submit_unserved(second, 3, wait=1.5)
        assert first.submit(5)() == 25
    assert any('in use by' in r.getMessage() for r in caplog.records)


def uses_threads_logging_and_random(n):
    import concurrent.futures
    import logging
    import random
    import threading
    logging.getLogger('job').warning('job %d logs', n)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        squares = list(pool.map(lambda x: x * x, range(n)))
    return squares, threading.active_count(), random.random()


def test_jobs_can_use_threads_logging_and_get_fresh_random_state(node):
    with cluster_for(node, uses_threads_logging_and_random) as c:
        jobs = [c.submit(4) for _ in range(4)]
        results = [j() for j in jobs]
    assert all(r[0] == [0, 1, 4, 9] and r[1] == 1 for r in results), results
    assert len({r[2] for r in results}) == 4          # each fork reseeds random
    assert all('job 4 logs' in j.stderr for j in jobs)


def test_two_embedded_nodes():
    with dispylike.JobCluster(square, nodes=[dispylike.LocalNode(cpus=1),
                                             dispylike.LocalNode(cpus=1)]) as c:
        assert [c.submit(i)() for i in range(4)] == [0, 1, 4, 9]
        deadline = time.time() + 30
        while len(c.status()) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len({n.port for n in c.status()}) == 2


def optimise(steps, acks):
    import os
    import time
    for i in range(steps):
        assert dispy_provisional_result(('step', i)) == 0  # noqa: F821
        # job_status reads the live job: the next result waits until it has seen this one
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(acks, f'step-{i}')):
            if time.monotonic() > deadline:
                raise TimeoutError(f'job_status did not see step {i} in 30 s')
            time.sleep(0.01)
    assert dispy_provisional_result(threading_lock_like()) == -1  # noqa: F821
    return ('final', steps)


def threading_lock_like():
    import threading
    return threading.Lock()


def test_provisional_results_arrive_in_order_before_the_final_one(node, tmp_path):
    seen = []

    def job_status(job):
        status, result = job.status, job.result
        seen.append((status, result))
        if status == DispyJob.ProvisionalResult:
            (tmp_path / f'{result[0]}-{result[1]}').touch()     # the job may go on

    with cluster_for(node, optimise, job_status=job_status,
                     depends=[threading_lock_like]) as c:
        job = c.submit(3, str(tmp_path))
        assert job() == ('final', 3) and job.status == DispyJob.Finished
        c.wait()
    deadline = time.time() + 5
    while len(seen) < 4 and time.time() < deadline:
        time.sleep(0.05)
    assert seen == [(DispyJob.ProvisionalResult, ('step', 0)),
                    (DispyJob.ProvisionalResult, ('step', 1)),
                    (DispyJob.ProvisionalResult, ('step', 2)),
                    (DispyJob.Finished, ('final', 3))]


def big_echo(data, factor):
    return data * factor


def test_tens_of_megabytes_each_way_while_small_jobs_go_on(node):
    big = bytes(range(256)) * (120 * 1024)                   # 30 MiB
    with dispylike.JobCluster(big_echo, nodes=[node.address]) as c:
        heavy = c.submit(big, 1)
        small = [c.submit(b'x', n) for n in range(200)]
        assert heavy.wait(120)
        assert heavy.status == DispyJob.Finished and heavy.result == big
        assert all(j() == b'x' * n for n, j in enumerate(small))
