"""Warm workers (``JobCluster(warm_workers=True)``): job processes run job after job;
cancel and crashes kill one worker, fail only its job, and a fresh worker follows."""

import asyncio
import os
import pickle
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.execution.computation import package
from dispylike.execution.host import ComputationHost
from dispylike.node.options import NodeOptions
from dispylike.status import JobStatus
from dispylike.testing import InProcessNode, pid_alive, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def warm_cluster(node, compute, **kw):
    return dispylike.JobCluster(compute, nodes=[(node.host, node.port)], warm_workers=True, **kw)


def pid_of(n, wait=0.0):
    import os
    import time
    time.sleep(wait)
    return n, os.getpid(), os.getppid()


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def test_jobs_run_in_reused_processes_of_their_own(node):
    with warm_cluster(node, pid_of) as c:
        jobs = [c.submit(n) for n in range(300)]
        results = [j() for j in jobs]
    assert [r[0] for r in results] == list(range(300))
    pids = {r[1] for r in results}
    assert len(pids) <= 2 < 300                              # two CPUs: two workers
    assert node.proc.pid not in pids                         # never in the node itself
    assert len({r[2] for r in results}) == 1                 # all forked from one zygote
    assert node.proc.pid not in {r[2] for r in results}      # ... which is not the node


def test_fork_per_job_is_still_the_default(node):
    with dispylike.JobCluster(pid_of, nodes=[node.address]) as c:
        pids = {j()[1] for j in [c.submit(n) for n in range(20)]}
    assert len(pids) == 20


def sleeper(t, handle=False, ready=''):
    import os
    import time
    try:
        if ready:   # the test cancels once the job is inside this block
            open(ready, 'w').close()
        time.sleep(t)
    except KeyboardInterrupt:
        if handle:
            print('interrupted in', os.getpid())
            return 'saved'
        raise
    return os.getpid()


def _wait_running(job, timeout=10):
    deadline = time.time() + timeout
    while job.status != DispyJob.Running and time.time() < deadline:
        time.sleep(0.02)
    assert job.status == DispyJob.Running


def test_cancel_interrupts_kills_the_worker_and_a_fresh_one_follows(node1, tmp_path):
    ready = tmp_path / 'inside'
    with warm_cluster(node1, sleeper) as c:
        first = c.submit(0)
        worker = first()
        job = c.submit(60, handle=True, ready=str(ready))
        wait_until(ready.exists, 30, 'the job inside its try block')
        c.cancel(job)
        assert job.wait(10)
        assert job.status == DispyJob.Cancelled and job.result == 'saved'
        assert f'interrupted in {worker}' in job.stdout      # it ran in the warm worker
        assert wait_gone(worker)                              # which was killed after it
        after = c.submit(0)()
        assert after != worker and after == c.submit(0)()     # a fresh worker, reused


def stubborn(_):
    import os
    import signal
    import subprocess
    import time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(['sleep', '120'])                # in the worker's group
    print(os.getpid(), child.pid, flush=True)
    with open('pids', 'w') as f:
        f.write(f'{os.getpid()} {child.pid}')
    time.sleep(120)


def test_cancel_escalates_to_killing_the_workers_process_group():
    with InProcessNode(NodeOptions(cpus=1, cancel_grace=0.5)) as node:
        with warm_cluster(node, stubborn) as c:
            job = c.submit(0)
            _wait_running(job)
            pids_file = None
            deadline = time.time() + 10
            while pids_file is None and time.time() < deadline:
                for root, _dirs, files in os.walk(node.prefix):
                    if 'pids' in files and os.path.getsize(os.path.join(root, 'pids')):
                        pids_file = os.path.join(root, 'pids')
                time.sleep(0.05)
            with open(pids_file) as f:
                worker, child = (int(x) for x in f.read().split())
            c.cancel(job)
            assert job.wait(15)
            assert job.status == DispyJob.Cancelled
            assert 'SIGTERM' in job.exception or 'SIGKILL' in job.exception
            assert wait_gone(worker) and wait_gone(child)
            c.close(timeout=1, terminate=True)


def crash(kind):
    import ctypes
    import os
    if kind == 'exit':
        os._exit(3)
    if kind == 'segv':
        ctypes.string_at(0)
    if kind == 'unpicklable':
        import threading
        return threading.Lock()
    return os.getpid()


@pytest.mark.parametrize('kind, words', [('exit', 'exit status 3'), ('segv', 'SIGSEGV'),
                                         ('unpicklable', 'could not be serialised')])
def test_a_crash_fails_only_its_own_job(node1, kind, words):
    with warm_cluster(node1, crash) as c:
        before = c.submit('ok')()
        jobs = [c.submit('ok'), c.submit(kind), c.submit('ok'), c.submit('ok')]
        results = [j() for j in jobs]
        bad = jobs[1]
        assert bad.status == DispyJob.Terminated and words in bad.exception
        assert all(j.status == DispyJob.Finished for j in jobs if j is not bad)
        assert results[0] == before
        if kind == 'unpicklable':            # the worker survives a job's bad result
            assert results[2] == results[3] == before
        else:                                # a fresh worker took the crashed one's place
            assert results[2] == results[3] != before
            assert wait_gone(before)


def chatty(n, steps, acks):
    import os
    import sys
    import time
    print('out', n)
    print('err', n, file=sys.stderr)
    for i in range(steps):
        dispy_provisional_result((n, i))  # noqa: F821
        # job_status reads the live job: the next result waits until it has seen this one
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(acks, f'{n}-{i}')):
            if time.monotonic() > deadline:
                raise TimeoutError(f'job_status did not see ({n}, {i}) in 30 s')
            time.sleep(0.01)
    name = f'file-{n}.txt'
    with open(name, 'w') as f:
        f.write(f'from job {n}')
    assert dispy_send_file(name) == 0  # noqa: F821
    os.chdir('/')          # must not leak into the next job
    return n, os.getpid()


def test_capture_provisional_results_and_files_per_job(node1, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    acks = tmp_path / 'acks'
    acks.mkdir()
    seen = []

    def job_status(job):
        status, result = job.status, job.result
        seen.append((job.id, status, result))
        if status == DispyJob.ProvisionalResult:
            (acks / f'{result[0]}-{result[1]}').touch()       # the job may go on

    with warm_cluster(node1, chatty, job_status=job_status) as c:
        jobs = [c.submit(n, 2, str(acks)) for n in range(3)]
        results = [j() for j in jobs]
    # close() returned: the files jobs sent are saved and queued callbacks have run
    assert len({pid for _, pid in results}) == 1               # one worker ran all three
    for n, job in enumerate(jobs):
        assert job.stdout == f'out {n}\n' and job.stderr == f'err {n}\n'
        assert (tmp_path / f'file-{n}.txt').read_text() == f'from job {n}'
    for n, job in enumerate(jobs):
        mine = [(status, result) for jid, status, result in seen if jid == job.id]
        assert mine == [(DispyJob.ProvisionalResult, (n, 0)), (DispyJob.ProvisionalResult, (n, 1)),
                        (DispyJob.Finished, (n, results[n][1]))]


def helper_for_one_job(x):
    return x * 100


def uses_helper(name):
    import os
    helper = globals().get('helper_for_one_job')   # by name: not captured with this function
    return helper and helper(1), os.path.exists(name), os.getpid()


def test_job_depends_go_with_their_job(node1, tmp_path):
    data = tmp_path / 'job-input.txt'
    data.write_text('input')
    with warm_cluster(node1, uses_helper) as c:
        with_deps = c.submit('job-input.txt', dispy_job_depends=[str(data), helper_for_one_job])
        assert with_deps()[:2] == (100, True)
        without = c.submit('job-input.txt')
        assert without()[:2] == (None, False)
        assert with_deps()[2] == without()[2]                 # the same worker


def count_calls():
    global calls
    calls = globals().get('calls', 0) + 1
    return calls


def test_globals_a_job_changes_stay_for_the_next_job_of_that_worker(node1):
    with warm_cluster(node1, count_calls) as c:
        assert [c.submit()() for _ in range(3)] == [1, 2, 3]


def test_warm_workers_in_the_computation_process(tmp_path):
    """The zygote's own view: a worker per lent CPU, reused; one crash, one fresh worker."""
    def args(*a):
        return cloudpickle.dumps((a, {}), protocol=5)

    async def main():
        host = ComputationHost('c', 'crash', str(tmp_path))
        await host.start(package(crash, warm_workers=True).code, {}, spares=1)
        try:
            first = await host.run(1, 1, args('ok'))
            crashed = await host.run(2, 1, args('exit'))
            waiting = [host.run(n, 1, args('ok'), lend=n == 3) for n in (3, 4, 5)]
            rest = await asyncio.gather(*waiting)
        finally:
            await host.close(run_cleanup=False)
        assert crashed.status is JobStatus.Terminated
        assert 'exit status 3' in pickle.loads(crashed.payload)[3]
        pids = [pickle.loads(o.payload)[0] for o in [first, *rest]]
        assert pids[1] == pids[2] == pids[3] != pids[0]
        assert host.lent == 0
    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_worker_that_died_idle_is_replaced_and_no_job_is_lost(node1):
    import signal
    with warm_cluster(node1, crash) as c:
        worker = c.submit('ok')()
        os.kill(worker, signal.SIGKILL)     # a descendant of the node this test started
        # once it has exited its pipes are closed: a job handed to it cannot get lost in
        # them (before that, a job written to it dies with it, as in a crash)
        assert wait_gone(worker)
        jobs = [c.submit('ok') for _ in range(5)]
        results = {j() for j in jobs}
        assert all(j.status == DispyJob.Finished for j in jobs)
        assert worker not in results and len(results) == 1


# --- jobs written ahead: a waiting job is written behind the one a warm worker runs,
# --- with a token in the worker's gate pipe that decides whether it may start

def gated(name, box, mode='ok', pad=''):
    """Mark ``name`` as started in ``box``; with mode 'hold', wait for ``name``.go there,
    then die if it says 'exit'; returns (name, pid)."""
    import os
    import time
    open(os.path.join(box, name), 'w').close()
    go = os.path.join(box, name + '.go')
    if mode == 'hold':
        deadline = time.monotonic() + 30
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                raise TimeoutError(name)
            time.sleep(0.01)
        with open(go) as f:
            if f.read() == 'exit':
                os._exit(3)
    return name, os.getpid()


def _gated_args(*a):
    return cloudpickle.dumps((a, {}), protocol=5)


def _on_gated_host(tmp_path, cpus, body):
    """Run ``await body(host, box)`` with a warm computation process of ``gated`` with
    ``cpus`` workers (``box``: its jobs' marker directory); returns (box, the result)."""
    box = tmp_path / 'box'
    box.mkdir()

    async def main():
        host = ComputationHost('c', 'gated', str(tmp_path))
        await host.start(package(gated, warm_workers=True).code, {}, spares=cpus)
        try:
            return await body(host, box)
        finally:
            await host.close(run_cleanup=False)
    return box, asyncio.run(asyncio.wait_for(main(), 60))


def _ahead_case(tmp_path, scenario):
    """One worker: job 1 holds it, job 2 arrives while it runs (so it is written ahead),
    then ``await scenario(host, box, args, first, second)`` (the two jobs' futures)."""
    async def body(host, box):
        first = host.run(1, 1, _gated_args('one', str(box), 'hold'))
        await asyncio.to_thread(wait_until, (box / 'one').exists, 30, 'job 1 running')
        second = host.run(2, 1, _gated_args('two', str(box)), lend=False)
        return await scenario(host, box, _gated_args, first, second)
    return _on_gated_host(tmp_path, 1, body)


def _result(outcome):
    return pickle.loads(outcome.payload)[0]


def test_a_job_written_ahead_and_cancelled_never_runs_and_the_one_before_is_untouched(tmp_path):
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)          # job 2 reaches the process (written ahead)
        host.cancel(2)
        cancelled = await second
        (box / 'one.go').touch()
        done = await first
        third = await host.run(3, 1, args('three', str(box)))
        return cancelled, done, third

    box, (cancelled, done, third) = _ahead_case(tmp_path, scenario)
    assert cancelled.status is JobStatus.Cancelled
    assert not (box / 'two').exists()                        # it never started
    assert done.status is JobStatus.Finished and _result(done)[0] == 'one'
    assert _result(third)[1] == _result(done)[1]             # the worker was not killed


def test_two_jobs_written_ahead_in_turn_and_cancelled_never_run(tmp_path):
    """The second one's token sits behind the first one's SKIP in the gate."""
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)
        host.cancel(2)
        cancelled = [await second]
        third = host.run(3, 1, args('three', str(box)), lend=False)
        await asyncio.sleep(0.2)
        host.cancel(3)
        cancelled.append(await third)
        (box / 'one.go').touch()
        return cancelled, await first

    box, (cancelled, done) = _ahead_case(tmp_path, scenario)
    assert [o.status for o in cancelled] == [JobStatus.Cancelled] * 2
    assert not (box / 'two').exists() and not (box / 'three').exists()
    assert done.status is JobStatus.Finished and _result(done)[0] == 'one'


def test_cancelling_the_running_job_puts_the_one_written_behind_it_back_in_line(tmp_path):
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)
        host.cancel(1, grace=0.5)
        return await first, await second

    box, (interrupted, after) = _ahead_case(tmp_path, scenario)
    assert interrupted.status is JobStatus.Terminated
    assert 'KeyboardInterrupt' in pickle.loads(interrupted.payload)[3]   # by the cancel
    assert after.status is JobStatus.Finished and _result(after)[0] == 'two'


def test_a_crash_of_the_running_job_puts_the_one_written_behind_it_back_in_line(tmp_path):
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)
        (box / 'one.go').write_text('exit')   # job 1 kills its worker
        return await first, await second

    box, (crashed, after) = _ahead_case(tmp_path, scenario)
    assert crashed.status is JobStatus.Terminated
    assert 'exit status 3' in pickle.loads(crashed.payload)[3]
    assert after.status is JobStatus.Finished and _result(after)[0] == 'two'


def test_a_free_cpu_takes_a_job_written_ahead_behind_a_long_job(tmp_path):
    """Work-conserving: two workers hold jobs 1 and 2, jobs 3 and 4 are written ahead,
    one behind each; once job 2 ends, its CPU runs both 3 and 4 while job 1 still runs."""
    async def body(host, box):
        one = host.run(1, 1, _gated_args('one', str(box), 'hold'))
        two = host.run(2, 1, _gated_args('two', str(box), 'hold'))
        for name in ('one', 'two'):
            await asyncio.to_thread(wait_until, (box / name).exists, 30, f'job {name}')
        rest = [host.run(n, 1, _gated_args(str(n), str(box)), lend=False) for n in (3, 4)]
        await asyncio.sleep(0.2)     # both written ahead, one behind each running job
        (box / 'two.go').touch()
        done = await asyncio.wait_for(asyncio.gather(two, *rest), 20)
        assert not (box / 'one.go').exists()
        (box / 'one.go').touch()
        return await one, done

    _box, (first, (second, third, fourth)) = _on_gated_host(tmp_path, 2, body)
    assert all(o.status is JobStatus.Finished for o in (first, second, third, fourth))
    assert _result(third)[1] == _result(fourth)[1] == _result(second)[1]   # on job 2's CPU


def test_closing_with_a_job_written_ahead_starts_nothing_and_ends(tmp_path):
    """The computation closes (jobs killed) while job 2 is written behind job 1: nothing
    is started in its place, the process ends and the closing reports no error."""
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)
        error = await host.close(run_cleanup=False, timeout=15)
        return error, await first, await second

    box, (error, first, second) = _ahead_case(tmp_path, scenario)
    assert error == ''
    assert first.status is second.status is JobStatus.Terminated
    assert not (box / 'two').exists()


def test_jobs_taken_back_again_and_again_never_block_the_computation_process(tmp_path):
    """Each job written ahead and cancelled leaves its bytes in the worker's pipe until
    the worker reads past them (job 1 holds it): writing more ahead must stop before
    the pipe is full, or the computation process would block on it."""
    async def scenario(host, box, args, first, second):
        await asyncio.sleep(0.2)
        host.cancel(2)
        outcomes = [await second]
        for n in range(3, 11):          # 8 more of ~15 KB: 120 KB, a pipe holds 64 KiB
            job = host.run(n, 1, args(str(n), str(box), 'ok', 'x' * 15000), lend=False)
            await asyncio.sleep(0.05)
            host.cancel(n)
            outcomes.append(await asyncio.wait_for(job, 10))
        (box / 'one.go').touch()
        return outcomes, await first

    box, (outcomes, done) = _ahead_case(tmp_path, scenario)
    assert [o.status for o in outcomes] == [JobStatus.Cancelled] * 9
    assert done.status is JobStatus.Finished
    assert sorted(p.name for p in box.iterdir()) == ['one', 'one.go']
