"""One event loop on a daemon thread, driven from synchronous code.

Calls from other threads queue up and reach the loop together: the first call
after the loop took the queue wakes it (one write to its self-pipe), the next
ones only join the queue.  A program submitting thousands of jobs in a loop
thus wakes the I/O thread once per batch instead of once per job, and the
loop sends each batch to the nodes as one message.  Calls (and coroutines
given to :meth:`run`) run in the order they were made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ..transport.loop import new_event_loop


class LoopThread:
    """Runs an event loop on its own thread; :meth:`run` and :meth:`call` reach into it."""

    def __init__(self, name: str = 'dispylike-io') -> None:
        self.loop = new_event_loop()
        self._calls: list[tuple[Callable, tuple]] = []
        self._calls_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop and wait for its result from this thread."""
        result: concurrent.futures.Future = concurrent.futures.Future()
        self.call(self._start, coro, result)
        return result.result(timeout)

    def _start(self, coro: Awaitable, result: concurrent.futures.Future) -> None:
        if not result.set_running_or_notify_cancel():
            coro.close()
            return
        task = self.loop.create_task(coro)

        def done(task: asyncio.Task) -> None:
            if task.cancelled():
                result.cancel()
            elif task.exception() is not None:
                result.set_exception(task.exception())
            else:
                result.set_result(task.result())
        task.add_done_callback(done)

    def call(self, fn: Callable, *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop (thread-safe, does not wait)."""
        with self._calls_lock:
            self._calls.append((fn, args))
            if len(self._calls) > 1:
                return        # the loop has been woken for the queue already
        try:
            self.loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:   # the loop is closed: nothing will run this call
            with self._calls_lock:
                self._calls.clear()
            raise

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as the loop does for a failing callback
                self.loop.call_exception_handler({
                    'message': f'Exception in callback {fn!r}', 'exception': exc})

    def stop(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
