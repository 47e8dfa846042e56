"""Runs user callbacks (job_status, cluster_status) on a thread of their own.

Callbacks never run on the I/O loop, so a slow callback delays other
callbacks but never the cluster's communication.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger('dispylike')
_STOP = object()


class CallbackRunner:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name='dispylike-callbacks',
                                        daemon=True)
        self._thread.start()

    def put(self, fn: Callable, *args: Any) -> None:
        self._queue.put((fn, args))

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception('callback %s raised', getattr(fn, '__name__', fn))

    def stop(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then stop (idempotent; called from any other thread)."""
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._queue.put(_STOP)
            self._thread.join(timeout)
