"""Jobs waiting in a computation process: a CPU passes from job to job there;
cancelled or dropped while waiting, a job never runs."""

import asyncio
import os
import pickle
import sys

import cloudpickle

from dispylike.execution.computation import package
from dispylike.execution.host import ComputationHost
from dispylike.status import JobStatus

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def mark(n, wait=0.0):
    import os
    import time
    start = time.time()
    open(f'ran-{n}', 'w').close()
    time.sleep(wait)
    return n, start, time.time(), os.getpid()


def args(*a, **kw):
    return cloudpickle.dumps((a, kw), protocol=5)


def in_host(tmp_path, body):
    async def main():
        released = []
        host = ComputationHost('c', 'mark', str(tmp_path), on_release=lambda: released.append(1))
        await host.start(package(mark).code, {}, spares=1)
        try:
            await asyncio.wait_for(body(host, released), 60)
        finally:
            await host.close(run_cleanup=False)
    asyncio.run(main())


def ran(tmp_path, n):
    return os.path.exists(tmp_path / f'ran-{n}')


def test_one_cpu_passes_through_the_waiting_jobs_in_order(tmp_path):
    async def body(host, released):
        futs = [host.run(n, 1, args(n, 0.05), lend=n == 1) for n in (1, 2, 3)]
        outcomes = await asyncio.gather(*futs)
        results = [pickle.loads(o.payload)[0] for o in outcomes]
        assert [r[0] for r in results] == [1, 2, 3]
        for (_, _, end, _), (_, start, _, _) in zip(results, results[1:], strict=False):
            assert start >= end - 0.01, 'two jobs overlapped on one lent CPU'
        assert len({r[3] for r in results}) == 3            # a fresh process each
        assert released == [1] and host.lent == 0            # back once, at the end
    in_host(tmp_path, body)


def test_cancel_of_a_waiting_job_ends_it_cancelled_without_running_it(tmp_path):
    async def body(host, released):
        running = host.run(1, 1, args(1, 0.5), lend=True)
        waiting = host.run(2, 7, args(2), lend=False)
        host.cancel(2)
        outcome = await waiting
        assert outcome.status is JobStatus.Cancelled
        assert pickle.loads(outcome.payload)[3] == 'cancelled before it started'
        assert (await running).status is JobStatus.Finished
        assert ran(tmp_path, 1) and not ran(tmp_path, 2) and released == [1]
    in_host(tmp_path, body)


def test_dropped_waiting_jobs_never_run(tmp_path):
    async def body(host, released):
        running = host.run(1, 1, args(1, 0.3), lend=True)
        waiting = [host.run(n, 1, args(n), lend=False) for n in (2, 3)]
        host.drop_waiting()
        assert all(o.status is JobStatus.Cancelled for o in await asyncio.gather(*waiting))
        assert (await running).status is JobStatus.Finished
        assert not ran(tmp_path, 2) and not ran(tmp_path, 3)
    in_host(tmp_path, body)


def test_a_cpu_taken_back_returns_though_jobs_wait(tmp_path):
    async def body(host, released):
        first = host.run(1, 1, args(1, 0.3), lend=True)
        second = host.run(2, 1, args(2), lend=False)
        host.take_back(1)
        await first                       # its report says the CPU came back
        assert released == [1] and host.lent == 0 and not second.done()
        host.lend()                                          # lent again: it starts
        assert (await second).status is JobStatus.Finished and released == [1, 1]
    in_host(tmp_path, body)
