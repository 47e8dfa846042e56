"""Job processes as the computation process sees them: forking them, their pipes,
the records they write back.

Each job process has an argument pipe (the computation process writes, the job
reads) and a result pipe (the other way round); :class:`JobProcess` holds the
computation process's ends and what has arrived so far.  :func:`spawn` forks
a burst of them; the child side runs :mod:`.jobproc`.
"""

from __future__ import annotations

import _signal
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import channel
from .forking import LeanForks
from .jobqueue import WaitingJob
from .processes import set_parent_death_signal

_SIGKILL, _SIGCHLD, _SIGINT, _SIGTERM = (int(signal.SIGKILL), int(signal.SIGCHLD),
                                         int(signal.SIGINT), int(signal.SIGTERM))
_SIG_DFL = int(signal.SIG_DFL)
_close, _sleep = os.close, time.sleep
#: A fork-per-job process whose job has ended (its result written, its pipe closed)
#: waits this long before it exits.  Its exit (tearing down its memory: 0.3-0.6 ms
#: here) and the computation process's reaping of it then fall outside the moments
#: the next job is handed over and its result comes back.  Measured
#: (``bench/profile.py --sequential --jobs 300``, interleaved pairs): W2 median
#: 1.59 / 1.52 / 1.58 ms at once, 1.08 / 1.17 / 1.05 ms after 5 ms (3 ms: -12%, 20 ms:
#: -19%); W1 throughput 691 / 603 / 552 vs 608 / 584 / 607 jobs/s (no cost); p99 8.5-9.3
#: vs 10.2-12.3 ms.  A job's process thus lives up to this much longer than its job.
LINGER = 0.005


@dataclass(eq=False, slots=True)
class JobProcess:
    """One job process: a fork-per-job child, or a warm worker that runs job after job."""
    pid: int
    rfd: int                       # read end of the result pipe (-1 once closed)
    afd: int                       # write end of the argument pipe (-1 once closed)
    warm: bool = False
    uid: int = -1                  # the job it runs (-1: none)
    attempt: int = -1
    output: bytearray = field(default_factory=bytearray)   # records not yet complete
    final: bytes | tuple = b''     # the RESULT record's body, or (header, transfer file)
    eof: bool = False
    wait_status: int | None = None
    cpu_time: float = 0.0
    reported: bool = False         # its (only) job was reported (fork per job)
    retiring: bool = False         # a warm worker that runs no more jobs (cancelled)
    # warm workers: a job written ahead (see channel.AHEAD) and the gate pipe's ends
    ahead: WaitingJob | None = None   # the job written ahead, while ``uid`` runs
    gated: list[WaitingJob | None] = field(default_factory=list)   # jobs whose GO token
    #                                may be in the gate, in order (None: denied)
    denied: bool = False           # a job taken back may still be in the argument pipe
    gate_r: int = -1               # (non-blocking, shared with the worker)
    gate_w: int = -1

    @property
    def usable(self) -> bool:
        """A warm worker that may take another job."""
        return self.warm and not self.retiring and not self.eof and self.wait_status is None


#: What a record of a job means to the computation process: (kind, body) -> None.
RecordSink = Callable[[JobProcess, int, bytes], None]


def take_records(proc: JobProcess, sink: RecordSink) -> None:
    """Hand every complete record that arrived from ``proc`` to ``sink``."""
    buf = proc.output
    size = channel.RECORD.size
    pos = 0
    while len(buf) - pos >= size:
        kind, length = channel.RECORD.unpack_from(buf, pos)
        end = pos + size + length
        if len(buf) < end:
            break
        body = bytes(buf[pos + size:end])
        pos = end
        sink(proc, kind, body)
    if pos:
        del buf[:pos]


def spawn(count: int, warm: bool, body: Callable[[int, int, bool, int], int],
          inherited: tuple[int, ...]) -> tuple[list[JobProcess], OSError | None]:
    """Fork up to ``count`` job processes; returns them and the error that stopped the
    burst short (if any).  A child closes ``inherited`` (the computation process's
    own descriptors) and the other pipes of the burst, then ``body(afd, wfd, warm,
    gate)`` runs and its return value is the exit code (``gate``: a warm worker's
    gate pipe, see :data:`.channel.AHEAD`; -1 for a fork-per-job process).

    Between two forks this process runs as little Python as possible: every fork
    write-protects its pages and each page written afterwards costs a copy-on-write
    fault, so the pipes are made before the burst and the bookkeeping after it.  For
    the same reason a child gets what it closes as one tuple of numbers instead of
    walking the computation process's objects."""
    pipes: list[tuple[int, ...]] = []   # (rfd, wfd, afd_r, afd_w, gate_r, gate_w)
    error: OSError | None = None
    try:
        for _ in range(count):
            fds = os.pipe() + os.pipe()
            try:
                pipes.append(fds + (_gate_pipe() if warm else (-1, -1)))
            except OSError:
                for fd in fds:
                    os.close(fd)
                raise
    except OSError as exc:
        error = exc
    closing = inherited + tuple(fd for fds in pipes for fd in fds if fd >= 0)
    pids: list[int] = []
    with LeanForks() as forks:
        for _rfd, wfd, afd_r, _afd_w, gate_r, _gate_w in pipes:
            try:
                pid = os.fork()
            except OSError as exc:
                error = exc
                break
            if pid == 0:
                forks.restore()
                _child_main((afd_r, wfd, gate_r), closing, warm, body)
            pids.append(pid)
    spawned = []
    for index, (rfd, wfd, afd_r, afd_w, gate_r, gate_w) in enumerate(pipes):
        os.close(wfd)
        os.close(afd_r)
        if index >= len(pids):  # its fork failed
            for fd in (rfd, afd_w, gate_r, gate_w):
                if fd >= 0:
                    os.close(fd)
            continue
        pid = pids[index]
        try:
            os.setpgid(pid, pid)  # before any job reaches it: cancelling kills its group
        except OSError:
            pass
        os.set_blocking(rfd, False)
        spawned.append(JobProcess(pid, rfd, afd_w, warm, gate_r=gate_r, gate_w=gate_w))
    return spawned, error


def _gate_pipe() -> tuple[int, int]:
    """A warm worker's gate: non-blocking at both ends, not inherited by programs."""
    fds = os.pipe()
    for fd in fds:
        os.set_blocking(fd, False)
    return fds


def _child_main(kept: tuple[int, int, int], closing: tuple[int, ...], warm: bool,
                body: Callable[[int, int, bool, int], int]) -> None:
    """A forked job process; never returns.  ``kept``: its argument pipe, result pipe
    and gate pipe (-1: none), which it does not close with ``closing``."""
    code = 70
    try:
        for fd in closing:
            if fd not in kept:
                try:
                    _close(fd)
                except OSError:
                    pass
        _child_signals()
        afd, wfd, gate = kept
        code = body(afd, wfd, warm, gate)
        if code == 0 and not warm:
            _sleep(LINGER)   # its result is out (and its pipe closed): see LINGER
    finally:
        os._exit(code)


def _child_signals() -> None:
    # Every object this touches is shared with the computation process, and each
    # page written costs a copy-on-write fault: so the C functions of _signal
    # (signal.signal wraps them in enum conversions that touch ~60 pages) and
    # plain ints.  The process group is set by the parent (spawn), before a job
    # can reach this process.
    set_parent_death_signal(_SIGKILL)
    _signal.set_wakeup_fd(-1)
    _signal.signal(_SIGCHLD, _SIG_DFL)
    _signal.signal(_SIGINT, _signal.default_int_handler)
    _signal.signal(_SIGTERM, _SIG_DFL)
