"""LoopThread: calls from other threads run on the loop, in order, batched."""

import asyncio
import threading

import pytest

from dispylike.client.loopthread import LoopThread


def test_calls_and_coroutines_run_in_the_order_they_were_made():
    io = LoopThread('test-io')
    try:
        seen = []
        threads = []

        async def coro(n):
            seen.append(('run', n))
            return n

        def caller(base):
            for i in range(200):
                io.call(seen.append, (base, i))
        for base in ('a', 'b'):
            threads.append(threading.Thread(target=caller, args=(base,)))
        for t in threads:
            t.start()
        for i in range(20):
            io.call(seen.append, ('main', i))
            assert io.run(coro(i), timeout=10) == i
        for t in threads:
            t.join()
        io.run(asyncio.sleep(0), timeout=10)
        for base in ('a', 'b'):
            assert [x for x in seen if x[0] == base] == [(base, i) for i in range(200)]
        mine = [x for x in seen if x[0] in ('main', 'run')]
        assert mine == [(k, i) for i in range(20) for k in ('main', 'run')]
    finally:
        io.stop()


def test_a_failing_call_does_not_stop_the_next_ones():
    io = LoopThread('test-io')
    errors, seen = [], []
    io.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx['exception']))
    try:
        io.call(lambda: 1 / 0)
        io.call(seen.append, 'after')
        io.run(asyncio.sleep(0), timeout=10)
        assert seen == ['after'] and isinstance(errors[0], ZeroDivisionError)
    finally:
        io.stop()


def test_a_coroutine_error_reaches_the_caller_and_calls_after_stop_fail():
    io = LoopThread('test-io')

    async def boom():
        raise KeyError('x')
    with pytest.raises(KeyError):
        io.run(boom(), timeout=10)
    io.stop()
    with pytest.raises(RuntimeError):
        io.call(print, 'never')
