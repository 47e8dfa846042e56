"""Cheap forks of a single-threaded process.

CPython runs at-fork handlers in every child: threading's, which rebuilds its
records of the threads that did not survive the fork, and logging's, which
re-creates handler locks that another thread might have held.  In a process
with a single thread neither has anything to repair, yet every child pays for
them in copied pages: measured on the 2-core VM of docs/PERFORMANCE.md, a
fork-and-exit child of the computation process costs 0.77 ms of CPU with them
and 0.43 ms without.  :class:`LeanForks` skips those two handlers while the
process has exactly one thread and runs them as usual otherwise; every other
handler (``random`` reseeding, for one) still runs.  Set ``DISPYLIKE_LEAN_FORK=0``
to always run them.

The handlers are switched off once for a whole burst of forks (``with
LeanForks() as forks: ... os.fork() ...``): every fork write-protects all pages
of the parent, so whatever Python code runs between two forks pays a
copy-on-write fault per page it writes.  A child forked inside the block calls
:meth:`LeanForks.restore` first, so its own forks run the handlers again.
"""

from __future__ import annotations

import os
import sys
import threading

_NOOP = (lambda *args, **kwargs: None).__code__
_ENABLED = os.environ.get('DISPYLIKE_LEAN_FORK') != '0'


def _repair_handlers() -> list:
    handlers = [getattr(threading, '_after_fork', None)]
    logging = sys.modules.get('logging')
    if logging is not None:
        handlers.append(getattr(logging, '_after_at_fork_child_reinit_locks', None))
    return [h for h in handlers if h is not None and hasattr(h, '__code__')]


class LeanForks:
    """Within the block, ``os.fork()`` skips the repair handlers if this process has
    one thread.  Children forked in the block must call :meth:`restore` first."""

    def __init__(self) -> None:
        self._saved: list = []

    def __enter__(self) -> LeanForks:
        if _ENABLED and threading.active_count() == 1:
            self._saved = [(h, h.__code__) for h in _repair_handlers()]
            for handler, _code in self._saved:
                handler.__code__ = _NOOP
        return self

    def restore(self) -> None:
        for handler, code in self._saved:
            handler.__code__ = code

    def __exit__(self, *exc: object) -> None:
        self.restore()


def lean_fork() -> int:
    """``os.fork()``, without the repair handlers when this process has one thread."""
    with LeanForks() as forks:
        pid = os.fork()
        if pid == 0:
            forks.restore()
        return pid
