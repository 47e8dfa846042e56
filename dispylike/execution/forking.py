"""Cheap forks of a single-threaded process.

CPython runs at-fork handlers in every child: threading's, which rebuilds its
records of the threads that did not survive the fork, and logging's, which
re-creates handler locks that another thread might have held.  In a process
with a single thread neither has anything to repair, yet every child pays for
them in copied pages: measured on the 2-core VM of docs/PERFORMANCE.md, a
fork-and-exit child of the computation process costs 0.77 ms of CPU with them
and 0.43 ms without.  :func:`lean_fork` skips those two handlers while the
process has exactly one thread and runs them as usual otherwise; every other
handler (``random`` reseeding, for one) still runs.  Set ``DISPYLIKE_LEAN_FORK=0``
to always run them.
"""

from __future__ import annotations

import os
import sys
import threading

_NOOP = (lambda *args, **kwargs: None).__code__


def _repair_handlers() -> list:
    handlers = [getattr(threading, '_after_fork', None)]
    logging = sys.modules.get('logging')
    if logging is not None:
        handlers.append(getattr(logging, '_after_at_fork_child_reinit_locks', None))
    return [h for h in handlers if h is not None and hasattr(h, '__code__')]


def lean_fork() -> int:
    """``os.fork()``, without the repair handlers when this process has one thread."""
    if os.environ.get('DISPYLIKE_LEAN_FORK') == '0' or threading.active_count() != 1:
        return os.fork()
    handlers = _repair_handlers()
    saved = [h.__code__ for h in handlers]
    for handler in handlers:
        handler.__code__ = _NOOP
    try:
        return os.fork()
    finally:
        for handler, code in zip(handlers, saved, strict=True):
            handler.__code__ = code  # in the parent, and in the child for its own forks
