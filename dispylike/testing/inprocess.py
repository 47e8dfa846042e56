"""A node daemon running in this process, on a thread of its own, with a clock the
test controls (service hours without waiting for the time of day)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import tempfile
import threading
from dataclasses import replace

from ..node.daemon import NodeDaemon
from ..node.options import NodeOptions
from ..transport.loop import new_event_loop


class FakeClock:
    """Local time of day for a node: starts at ``now``, moves only when told."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self.now

    def set(self, now: dt.datetime) -> None:
        with self._lock:
            self.now = now


class InProcessNode:
    """``NodeDaemon(opts, clock)`` on 127.0.0.1 (any free port), housekeeping every
    ``tick`` seconds.  A context manager; ``host``/``port`` once started."""

    def __init__(self, opts: NodeOptions | None = None, clock: FakeClock | None = None,
                 tick: float = 0.1, timeout: float = 30.0) -> None:
        opts = opts or NodeOptions()
        self.prefix = tempfile.mkdtemp(prefix='dispylike-test-node-')
        self.opts = replace(opts, hosts=opts.hosts or ['127.0.0.1'], node_port=0,
                            discovery=False, dest_path_prefix=self.prefix)
        self.clock = clock
        self.tick = tick
        self.node: NodeDaemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name='in-process-node', daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f'in-process node did not start: {self._error!r}')
        self.host, self.port = '127.0.0.1', self.node.port

    def _run(self) -> None:
        self._loop = new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        kw = {'clock': self.clock} if self.clock is not None else {}
        self.node = NodeDaemon(self.opts, **kw)
        self.node.tick = self.tick
        await self.node.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.node.stop()

    def call(self, func, *args, timeout: float = 30.0):
        """Run ``func(*args)`` on the node's event loop (e.g. ``node.set_cpus``) and
        return its result."""
        async def run():
            return func(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass    # the loop has just closed
        self._thread.join(timeout)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> InProcessNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
