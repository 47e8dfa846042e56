"""DispyJob: the handle ``cluster.submit()`` returns."""

from __future__ import annotations

import threading
from typing import Any

from .status import FINAL_STATUSES, JobStatus


class DispyJob:
    """A submitted job.  ``job()`` waits for it and returns its result.

    Attributes (dispy's): ``id`` (writable; 1, 2, ... by default), ``status``,
    ``ip_addr`` / ``host`` (node that ran it), ``result``, ``stdout``,
    ``stderr``, ``exception`` (traceback text, or why the job ended),
    ``start_time``, ``end_time``, ``args``, ``kwargs``.
    """

    Created = JobStatus.Created
    Running = JobStatus.Running
    ProvisionalResult = JobStatus.ProvisionalResult
    Cancelled = JobStatus.Cancelled
    Terminated = JobStatus.Terminated
    Abandoned = JobStatus.Abandoned
    Finished = JobStatus.Finished

    __slots__ = ('_id', '_id_hook', 'status', 'ip_addr', 'result', 'stdout', 'stderr', 'exception',
                 'start_time', 'end_time', 'args', 'kwargs', '_uid', '_payload', '_event',
                 '_lock', '_node', '__weakref__')

    def __init__(self, uid: int, args: tuple, kwargs: dict, payload: bytes | None,
                 lock: threading.Lock) -> None:
        self._id: Any = uid
        self._id_hook: Any = None      # the recover file hears of a new id
        self.status = JobStatus.Created
        self.ip_addr: str | None = None
        self.result: Any = None
        self.stdout: str | None = None
        self.stderr: str | None = None
        self.exception: str | None = None
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.args = args
        self.kwargs = kwargs
        self._uid = uid
        self._payload = payload
        self._event: threading.Event | None = None
        self._lock = lock
        self._node = None

    @property
    def id(self) -> Any:
        """The job's id: 1, 2, ... in submit order unless the program sets another."""
        return self._id

    @id.setter
    def id(self, value: Any) -> None:
        self._id = value
        hook = self._id_hook
        if hook is not None:
            hook(self)

    @property
    def host(self) -> str | None:
        """The node's IP address (dispy's older name for ``ip_addr``)."""
        return self.ip_addr

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    def __call__(self, clear: bool = False, timeout: float | None = None) -> Any:
        """Wait until the job ends and return its result (``clear`` drops it afterwards)."""
        if not self.wait(timeout):
            raise TimeoutError(f'job {self.id} did not finish within {timeout} s')
        result = self.result
        if clear:
            self.result = None
        return result

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job ends; False if ``timeout`` passed first."""
        if self.status in FINAL_STATUSES:
            return True
        with self._lock:
            if self.status in FINAL_STATUSES:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def _finish(self, status: JobStatus, result: Any, stdout: str | None, stderr: str | None,
                exception: str | None, end_time: float) -> None:
        """Record the outcome (called once, on the I/O loop) and wake waiters."""
        self.result, self.stdout, self.stderr = result, stdout, stderr
        self.exception, self.end_time = exception, end_time
        # what only an unfinished job needs goes now: a program may keep many finished
        # jobs (a waiter holds its own reference to the event)
        self._payload = self._id_hook = None
        with self._lock:
            self.status = status
            event, self._event = self._event, None
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return f'<DispyJob id={self.id!r} status={JobStatus(self.status).name}>'
