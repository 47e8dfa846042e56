"""The computation process ("zygote") and the job processes it forks.

::

    node daemon <──ctl socketpair──> zygote: loads the bundle, runs setup, then
                                      forks job processes, feeds and reaps them
                         argument pipe  │  ^  result pipe
                                        v  │
                                      job process (:mod:`.jobproc`): runs a job,
                                      writes its result, then
                                        fork per job: exits
                                        warm worker:  waits for the next job

The zygote is single-threaded, so forking it is safe; every job process
inherits the globals created by ``setup``.  By default (dispy's contract) each
job runs in a fresh process: to keep fork off a job's critical path the zygote
keeps "spare" processes, forked ahead and blocked on their argument pipe.
With warm workers (``JobCluster(warm_workers=True)``) a job process runs the
computation's jobs one after another; one that crashes or is cancelled is
killed (its process group) and a fresh one forked in its place.  A worker that runs
a job gets the next waiting one written behind it, gated by a token it must take
before starting it, so the job can still be taken back (cancelled, moved to a CPU
that came free, put back in line) until it starts: see :data:`.channel.AHEAD`.

The node lends the zygote a CPU with each job it may start at once; other
jobs wait in the zygote (:mod:`.jobqueue`), and when a job ends the next one
starts on its CPU before the node hears of the end.

The zygote is the only owner of job processes: it forks them, cancels them
(SIGINT, grace, SIGTERM, SIGKILL of the process group) and reaps them.  A job
is reported to the node exactly once: as 'done' at the end of its RESULT record
(the job's last word: a fork-per-job process exits right after it, and the next
job need not wait for that exit), otherwise once the process is reaped, so the
report can say how it died; as 'cancelled' if it was cancelled (or the
computation closed) while it waited; as 'refused' if no process could be
forked for it.  Messages to the node made while handling one batch of events
go out as one ('batch', ...) message.  Job processes and the zygote die with
their parent (parent-death signal).

What the zygote holds is copied into every job process it forks: on the 2-vCPU VM
of docs/PERFORMANCE.md each MB of its memory costs ~0.03 ms of CPU per job
(page tables copied and torn down, copy-on-write) and each mapping of a shared
library ~2 us (issue 8).  So it imports what jobs need and what its own loop
needs, and the rest only when used: its control socket is a plain descriptor (no
``socket`` module), it waits with epoll (no ``selectors``), ``subprocess`` comes
for program computations only, ``mmap`` once transfer files are in use,
``termios`` where a pipe's fill is asked, the standard-library modules the
computation's code imports at load (:func:`.computation.stdlib_imports`: jobs then
find them loaded); cloudpickle comes without
typing_extensions (:mod:`.leanimport`); the control messages' decoder without the
message classes (:mod:`..protocol.plain`); and the dynamic linker binds symbols
at start (:func:`.host.zygote_env`).  ``tests/integration/test_lean_zygote.py``
keeps it so.
"""

from __future__ import annotations

# First, before anything imports cloudpickle: see .leanimport.
from . import leanimport  # noqa: F401

# isort: split
import fcntl
import gc
import importlib
import logging
import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections import deque
from typing import Any

import cloudpickle

from ..protocol.frames import FrameDecoder
from ..protocol.plain import safe_loads
from . import channel
from .computation import Loaded, load, stdlib_imports
from .jobproc import (
    SMALL,
    file_sender,
    provisional_sender,
    run_job,
    serve_jobs,
    set_transfer_dir,
    widen_pipe,
    write_all,
)
from .jobprocs import JobProcess, spawn, take_records
from .jobqueue import JobQueue, WaitingJob
from .processes import (
    BIND_NOW_ADDED,
    keep_freed_memory,
    kill_group,
    release_freed_memory,
    set_parent_death_signal,
)
from .xfer import mmap_module

SETUP_OK = (0, 1, 2)
KILL_AFTER_TERM = 1.0
#: Reads go into one reusable buffer of this size: a fresh buffer per read that large
#: would come from mmap (and go back with munmap), three system calls and page faults
#: per read.
READ_SIZE = 1 << 18
#: With no job waiting here, spares are forked once nothing has happened for this long
#: (seconds): a burst of forks takes CPU time, and right after a job ended is when
#: the next job starts and the ended job's process exits.  W4 (40 x sleep(0.25) on 2
#: CPUs): jobs took 257 ms instead of 252 ms with the burst right after their ends.
IDLE_TOP_UP = 0.005
#: Fork per job: spares are refilled, when fewer than one per CPU are left, up to this
#: many per CPU in one burst while jobs wait here, else (idle, or one job at a time)
#: up to IDLE_SPARES_PER_CPU.  Every fork write-protects this process's pages, so it
#: re-faults the pages it writes once per burst: larger bursts, fewer faults per job.
#: Measured (bench/profile.py --jobs 3000 --each, W1): 3 per CPU 1,003-1,042 jobs/s
#: (this process 0.53 ms and 80 faults per job), 6: 1,024-1,047, 10: 1,099-1,142
#: (0.43 ms, 48 faults), 16: 1,070-1,085, 24: 1,044-1,052 (job processes slower: more
#: live processes share each page).  A burst delays the jobs that wait meanwhile, so
#: with nothing waiting the refill stays small (W2, one job at a time).
BUSY_SPARES_PER_CPU = 10
IDLE_SPARES_PER_CPU = 3
#: Once this many bytes of arguments and results have passed through this process, the
#: memory it freed goes back to the system at its next idle moment (IDLE_TOP_UP without
#: an event).  It keeps freed memory for reuse (processes.keep_freed_memory), but every
#: page it holds is copied at each fork and torn down at each exit: after 200 results of
#: 900 kB it held 8 MB more and trivial jobs ran 3-7% slower from then on.
TRIM_AFTER = 1 << 20
#: Tries to hand a job to a warm worker before it is refused (a worker may have died idle).
WARM_TRIES = 3
#: A warm worker that runs a job gets the next waiting one written behind it (arguments
#: up to this size; see channel.AHEAD): it starts that job as soon as it has written the
#: result, instead of waiting for this process to read the result and hand it the next.
#: Measured (bench/profile.py --jobs 20000 --warm): 7,733-7,992 jobs/s without (0.20 ms
#: of CPU per job), 10,263-10,424 with (0.15 ms).
AHEAD_MAX = 16 * 1024
#: Writing a job ahead never blocks this process for long: a worker's argument pipe
#: holds at most two jobs written ahead (the next on its CPU, maybe not read yet, and
#: the one behind it) beside the tail of a job written to it directly, which it reads
#: at once; a job taken back stays there until the worker reads past it, so after one
#: a job is written ahead only while at most AHEAD_MAX + 8 bytes wait unread.  A worker
#: whose pipe the system keeps smaller than this (a user over its pipe budget gets 4
#: KiB) gets no job ahead.
AHEAD_ROOM = 2 * (AHEAD_MAX + 8)
#: Tokens are read from a gate in one read of this size: more than a gate can hold, as
#: a worker's argument pipe holds fewer jobs than that.
GATE_READ = 1 << 16


def _send(fd: int, *fields: Any) -> None:
    bufs = channel.pack(*fields)
    if sum(len(buf) for buf in bufs) < SMALL:
        bufs = [b''.join(bufs)]  # one system call for the usual short message
    for buf in bufs:
        write_all(fd, buf)  # a large message may go in parts


class Zygote:
    def __init__(self, ctl: int) -> None:
        self.ctl = ctl
        self.decoder = FrameDecoder(message_cap=channel.INTERNAL_MESSAGE_CAP)
        self.loaded: Loaded | None = None
        self.warm = False
        self.procs: dict[int, JobProcess] = {}             # pid -> job process
        self.pids: dict[int, int] = {}                      # uid -> pid
        self.spares: deque[JobProcess] = deque()            # unused spares / idle workers
        self.queue = JobQueue()
        self.spare_low = 0    # fork more spares when fewer than this are left ...
        self.spare_high = 0   # ... up to this many, in one burst (warm: workers kept) ...
        self.spare_burst = 0  # ... or this many while jobs wait here
        self.deadlines: dict[int, tuple[float, int]] = {}   # pid -> (when, next signal)
        self.top_up_due = False
        self.rehearsal = False     # spares forked now rehearse a job (jobproc.rehearse)
        self.poller = select.epoll()
        self.watched: dict[int, JobProcess] = {}           # result pipe -> its process
        self.outbox: list[tuple] = []
        self._rbuf = memoryview(bytearray(READ_SIZE))
        self._wake_r = -1
        self._wake_w = -1
        self.passed = 0   # bytes read from the node and job processes since the last trim
        self.closing = False

    # --- loop -----------------------------------------------------------------------
    def serve(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller.register(self.ctl, select.EPOLLIN)
        self.poller.register(self._wake_r, select.EPOLLIN)
        while True:
            idle_due = self.top_up_due or self.passed >= TRIM_AFTER
            timeout = IDLE_TOP_UP if idle_due else None
            if self.deadlines:
                timeout = min(timeout or 1e9, max(0.0, min(
                    d for d, _ in self.deadlines.values()) - time.monotonic()))
            reap = False
            events = self.poller.poll(-1 if timeout is None else timeout)
            if not events and idle_due:
                self._idle()
            for fd, _ in events:
                if fd == self.ctl:
                    size = os.readv(self.ctl, (self._rbuf,))
                    if not size:
                        self.finish(run_cleanup=False)
                        return
                    self.passed += size
                    for msg in self.decoder.feed(self._rbuf[:size]):
                        if self.handle(channel.unpack(msg)):
                            return
                elif fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    reap = True   # SIGCHLD: only then can wait4 find anything
                else:
                    proc = self.watched.get(fd)
                    if proc is not None:
                        self.read_output(proc)
            if reap:
                self.reap()
            if self.deadlines:
                self.escalate()
            self.flush()

    def _idle(self) -> None:
        """Nothing happened for IDLE_TOP_UP: refill spares, give freed memory back."""
        if self.top_up_due:
            self.top_up_due = False
            self._top_up(idle=True)
        if self.passed >= TRIM_AFTER:
            self.passed = 0
            release_freed_memory()

    def handle(self, msg: tuple) -> bool:
        """Handle one message from the node; True means exit the loop."""
        kind = msg[0]
        if kind == 'batch':
            for inner in msg[1]:
                if self.handle(inner):
                    return True
            return False
        if kind == 'run':
            uid, attempt, payload, lend = msg[1:]
            self.queue.add(WaitingJob(uid, attempt, payload))
            if lend:
                self._lent()
            elif self.warm:
                self._fill_ahead()
        elif kind == 'lend':
            self._lent()
        elif kind == 'reclaim':
            self.queue.give_back(msg[1])
            for job in reversed(self._take_back_ahead()):   # CPUs go back as jobs end
                self.queue.put_back(job)
        elif kind == 'drop':
            for job in self.queue.drop():
                _discard(job.payload)
                self._out('cancelled', job.uid, job.attempt)
            for job in self._take_back_ahead():   # (jobs that started run on)
                self._out('cancelled', job.uid, job.attempt)
        elif kind == 'cancel':
            self.cancel(msg[1], msg[2])
        elif kind == 'load':
            self.do_load(*msg[1:])
        elif kind == 'close':
            self.finish(run_cleanup=msg[1])
            return True
        return False

    def _out(self, *fields: Any) -> None:
        self.outbox.append(fields)

    def flush(self) -> None:
        """Send what this turn of the loop has for the node, as one message."""
        if self.outbox:
            msgs, self.outbox = self.outbox, []
            _send(self.ctl, *(msgs[0] if len(msgs) == 1 else ('batch', tuple(msgs))))

    # --- computation ----------------------------------------------------------------
    def do_load(self, code: bytes, dest_path: str, node_globals: dict, setup_args: bytes,
                spares: int, run_setup: bool = True, handed: bytes = b'',
                xfer_dir: str = '') -> None:
        """Load the computation and run setup.  Setup's return value picks where jobs
        fork from (dispy's rule): 2, or 0 when setup made globals, this process; 1, or
        0 without globals, a fresh one: its globals (plain data only) are handed to
        the node, which starts a new computation process with them ('handover')."""
        node_globals = dict(node_globals)
        node_globals['dispynode_logger'] = logging.getLogger('dispynode')
        node_globals['dispynode_shutdown'] = self._shutdown_node
        try:
            self.loaded = load(code, dest_path, node_globals)
            ns = self.loaded.ns.__dict__
            if handed:
                ns.update(cloudpickle.loads(handed))  # from a setup run elsewhere
            if run_setup and self.loaded.setup is not None:
                before = {name: id(value) for name, value in ns.items()}
                args = pickle.loads(setup_args) if setup_args else ()
                ret = self.loaded.setup(*args)
                if ret not in SETUP_OK:
                    raise RuntimeError(f'setup returned {ret!r}; it must return 0, 1 or 2')
                made = {name: value for name, value in ns.items()
                        if not name.startswith('__') and before.get(name) != id(value)}
                if ret == 1 or (ret == 0 and not made):
                    self._out('handover', plain_globals(made, ret))
                    return
        except BaseException:  # noqa: BLE001 - any failure of user setup is reported
            self._out('failed', traceback.format_exc())
            return
        ns = self.loaded.ns.__dict__  # bound once here, not in each job process
        if self.loaded.program:   # its jobs run it: imported once here, not in each
            import subprocess  # noqa: F401 - (see the module docstring)
        elif self.loaded.func is not None:   # what the jobs import: once, here
            _import_ahead(stdlib_imports(self.loaded.func))
        ns['dispy_provisional_result'] = provisional_sender()
        ns['dispy_send_file'] = file_sender(ns)
        set_transfer_dir(xfer_dir)
        gc.freeze()  # jobs then leave the objects made so far alone: fewer copied pages
        self.warm = self.loaded.warm
        self.spare_low = max(0, spares)
        self.spare_high = self.spare_low if self.warm else IDLE_SPARES_PER_CPU * self.spare_low
        self.spare_burst = self.spare_low if self.warm else BUSY_SPARES_PER_CPU * self.spare_low
        self._top_up(idle=True)
        self._out('ready', '')

    def _shutdown_node(self) -> None:
        """``dispynode_shutdown()`` for cleanup: ask the node to exit (it does so only
        if it was started with --client_shutdown)."""
        self._out('shutdown')

    def finish(self, run_cleanup: bool) -> None:
        self.closing = True   # nothing starts now: the node fails what was not reported
        for proc in self.procs.values():
            proc.ahead, proc.gated = None, []
        self.spare_low = self.spare_high = self.spare_burst = 0
        for job in self.queue.drop():   # the node fails them: nothing may start now
            _discard(job.payload)
        for pid in list(self.procs):
            kill_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.procs and time.monotonic() < deadline:
            self.reap(block=True)
        error = ''
        if run_cleanup and self.loaded is not None and self.loaded.cleanup is not None:
            try:
                self.loaded.cleanup()
            except BaseException:  # noqa: BLE001 - reported to the node
                error = traceback.format_exc()
        self._out('closed', error)
        try:
            self.flush()
        except OSError:
            pass

    # --- jobs -----------------------------------------------------------------------
    def _lent(self) -> None:
        self._steal_ahead()
        if not self._run_on_cpu(self.queue.lend()):
            self._out('returned')

    def _run_on_cpu(self, job: WaitingJob | None) -> bool:
        """Start ``job`` on a lent CPU (the next waiting job if it cannot start).
        False: nothing started, the CPU goes back to the node."""
        while job is not None and not self.closing:
            if self.start_job(job.uid, job.attempt, job.payload):
                return True
            job = self.queue.ended()
        return False

    def start_job(self, uid: int, attempt: int, payload: bytes | str) -> bool:
        """Hand a job to a spare (fork per job) or an idle worker (warm); False if no
        process could take it (the job is then reported 'refused').  ``payload``: the
        arguments, or the path of the transfer file holding them."""
        if isinstance(payload, str):
            mmap_module()   # job processes map transfer files: imported once, here
            name = payload.encode()
            payload, length = name, len(name) | channel.BY_FILE
        else:
            length = len(payload)
        for _ in range(WARM_TRIES if self.warm else 1):
            try:
                proc = self.spares.popleft() if self.spares else self._spawn(1)[0]
            except OSError as exc:  # out of processes or descriptors: fail this job only
                self._refuse(uid, attempt, payload, length,
                             f'could not start a job process: {exc}')
                return False
            proc.uid, proc.attempt = uid, attempt
            self.pids[uid] = proc.pid
            try:
                if len(payload) < SMALL:  # one write (and one read in the job process)
                    write_all(proc.afd, channel.LENGTH.pack(length) + payload)
                else:
                    widen_pipe(proc.afd, len(payload))
                    write_all(proc.afd, channel.LENGTH.pack(length))
                    write_all(proc.afd, payload)
            except OSError:
                if proc.warm:   # died while idle: the job never reached it, try another
                    del self.pids[uid]
                    proc.uid = proc.attempt = -1
                    self._retire(proc)
                    continue
                # a spare that died: reaping reports the job as ended without a result
            if not proc.warm:
                os.close(proc.afd)
                proc.afd = -1
            else:
                self._write_ahead(proc)
            return True
        self._refuse(uid, attempt, payload, length, 'no worker process could take the job')
        return False

    # --- warm workers: a job written ahead ------------------------------------------
    def _write_ahead(self, proc: JobProcess) -> None:
        """Write the next waiting job behind the one warm worker ``proc`` runs, on the
        same lent CPU (see AHEAD_MAX), with its GO token in the gate pipe."""
        if proc.ahead is not None or proc.uid < 0 or proc.gate_w < 0 or not proc.usable:
            return
        if proc.denied and _unread(proc.afd) > AHEAD_ROOM - AHEAD_MAX - 8:
            return   # jobs taken back stay in the pipe until the worker reads past them
        job = self.queue.take_next(AHEAD_MAX)
        if job is None:
            return
        # the token first: a worker that reads the job at once finds it (after the job,
        # W1w ran ~5% slower: the worker often waited for it in select)
        os.write(proc.gate_w, channel.GO)
        try:
            write_all(proc.afd, channel.LENGTH.pack(len(job.payload) | channel.AHEAD)
                      + job.payload)
        except OSError:   # the worker died: it will never read the job
            self.queue.put_back(job)
            proc.gated.append(None)   # (the token has no job: counted as denied)
            proc.denied = True
            return
        proc.ahead = job
        proc.gated.append(job)
        self.pids[job.uid] = proc.pid

    def _fill_ahead(self) -> None:
        """A job arrived to wait: behind a running warm worker, if one has room."""
        for proc in self.procs.values():
            if not self.queue.waiting:
                return
            if proc.warm and proc.ahead is None and proc.uid >= 0:
                self._write_ahead(proc)

    def _take_back_ahead(self, first_only: bool = False) -> list[WaitingJob]:
        """Take back the jobs written ahead that have not started (or the first one)."""
        taken = []
        for proc in self.procs.values():
            job = proc.ahead
            if job is not None and self._take_back(proc, job):
                taken.append(job)
                if first_only:
                    break
        return taken

    def _unconsumed(self, proc: JobProcess) -> tuple[bytes, list]:
        """Take every token still in ``proc``'s gate (the worker, if it wants one, waits
        until they are written back): the tokens and the jobs they belong to (None for
        a job already denied).  They are the last written: the worker takes tokens in
        the order its jobs were written, so the entries before them are forgotten."""
        tokens = b''
        while proc.gate_r >= 0:
            try:   # one read takes them all: the worker cannot take one in between
                chunk = os.read(proc.gate_r, GATE_READ)
            except BlockingIOError:
                break
            if not chunk:
                break
            tokens += chunk
        count = len(tokens)
        if count > len(proc.gated):   # never expected: let every job run
            logging.getLogger('dispynode').error(
                'gate of job process %d holds %d tokens for %d jobs', proc.pid, count,
                len(proc.gated))
            count = 0
        del proc.gated[:len(proc.gated) - count]
        proc.denied = any(job is None for job in proc.gated)
        return tokens, proc.gated

    def _take_back(self, proc: JobProcess, job: WaitingJob) -> bool:
        """Deny ``job``, written ahead to ``proc``, its start: True if it will not run
        (its GO token was still in the gate: SKIP takes its place), False if it has
        started.  A byte in a pipe is read by one process only, so the worker and this
        process cannot both have it."""
        tokens, waiting = self._unconsumed(proc)
        index = next((i for i, other in enumerate(waiting) if other is job), -1)
        if index >= 0:
            tokens = tokens[:index] + channel.SKIP + tokens[index + 1:]
            waiting[index] = None
            proc.denied = True
        if tokens:
            os.write(proc.gate_w, tokens)
        if index < 0:
            return False
        self.pids.pop(job.uid, None)
        if proc.ahead is job:
            proc.ahead = None
        elif proc.ahead is not None:   # it was next on its CPU: the job behind it is now
            after, proc.ahead = proc.ahead, None
            proc.uid, proc.attempt = after.uid, after.attempt
        else:   # it was next on its CPU, which passes on (the caller's part)
            proc.uid = proc.attempt = -1
        return True

    def _cancel_warm(self, proc: JobProcess, uid: int) -> bool:
        """Cancel job ``uid`` of warm worker ``proc`` if it has not started (True), or
        make sure only it can be interrupted: the job written behind it goes back in
        line (True if that one started already: ``uid`` has ended, its result is on its
        way).  False: interrupt the worker."""
        target = next((job for job in proc.gated if job is not None and job.uid == uid), None)
        if target is not None and self._take_back(proc, target):
            self._out('cancelled', uid, target.attempt)
            if proc.uid < 0:   # the worker is idle
                self.spares.append(proc)
                self._pass_cpu()
            return True
        after = proc.ahead
        if after is not None and after.uid != uid:
            if not self._take_back(proc, after):
                return True
            self.queue.put_back(after)
        return False

    def _requeue_unstarted(self, proc: JobProcess) -> None:
        """A warm worker is gone: the jobs written to it that did not pass the gate go
        back first in line (the CPU that one of them was next on passes on)."""
        _tokens, waiting = self._unconsumed(proc)
        unstarted = [job for job in waiting if job is not None]
        proc.gated = []
        for job in reversed(unstarted):
            self.queue.put_back(job)
            self.pids.pop(job.uid, None)
        if proc.ahead is not None and any(job is proc.ahead for job in unstarted):
            proc.ahead = None
        if proc.uid >= 0 and any(job.uid == proc.uid for job in unstarted):
            proc.uid = proc.attempt = -1
            self._pass_cpu()

    def _steal_ahead(self) -> None:
        """A CPU is free and no job waits here: a job written ahead behind another
        worker's job (which may run for long) moves to it, if it has not started: a
        CPU does not idle while a job waits."""
        if self.warm and not self.queue.waiting:
            for job in self._take_back_ahead(first_only=True):
                self.queue.put_back(job)

    def _pass_cpu(self) -> None:
        """A lent CPU whose next job will not run: to the next waiting job, or back."""
        self._steal_ahead()
        if not self._run_on_cpu(self.queue.ended()):
            self._out('returned')

    def _refuse(self, uid: int, attempt: int, payload: bytes, length: int, why: str) -> None:
        if length & channel.BY_FILE:
            _discard(payload.decode())
        self._out('refused', uid, attempt, why)

    def _top_up(self, idle: bool = False, rehearsal: bool = False) -> None:
        """Fork spares (fork per job: in bursts, after a job's report so a fork never
        delays a result; a fork write-protects every page of this process and each
        page it then writes costs a fault, so forking several back to back pays for
        this process's working set once per burst) or replace lost warm workers.
        ``idle``: nothing else is going on, so refill even if spares are not low.
        Spares forked while no job waits (``idle`` or ``rehearsal``) rehearse a job
        (:func:`.jobproc.rehearse`): a job then finds one whose path is faulted in."""
        if self.warm:
            want = self.spare_low - sum(1 for p in self.procs.values() if p.usable)
        elif idle or len(self.spares) < self.spare_low:
            busy = bool(self.queue.waiting) and not idle
            want = (self.spare_burst if busy else self.spare_high) - len(self.spares)
        else:
            return
        if want > 0:
            self.flush()   # the reports made so far go out first: a burst takes a while
            try:   # spares and workers are an optimisation: a job forks if none is left
                self.spares.extend(self._spawn(want, rehearsal=idle or rehearsal))
            except OSError:
                pass

    def _spawn(self, count: int, rehearsal: bool = False) -> list[JobProcess]:
        """Fork up to ``count`` job processes (at least one, else OSError); with
        ``rehearsal`` (nothing waits for them) fork-per-job ones rehearse a job."""
        self.rehearsal = rehearsal   # read by _job_body in the children
        spawned, error = spawn(count, self.warm, self._job_body, self._inherited_fds())
        for proc in spawned:
            if proc.warm and _pipe_size(proc.afd) < AHEAD_ROOM:
                _close_gate(proc)   # writing ahead could block this process: not for it
            self.procs[proc.pid] = proc
            self.poller.register(proc.rfd, select.EPOLLIN)
            self.watched[proc.rfd] = proc
        if not spawned:
            raise error or OSError('no job process could be forked')
        return spawned

    def _job_body(self, afd: int, wfd: int, warm: bool, gate: int) -> int:
        if warm:
            return serve_jobs(self.loaded, afd, wfd, gate)
        return run_job(self.loaded, afd, wfd, self.rehearsal)

    def _inherited_fds(self) -> tuple[int, ...]:
        """This process's descriptors, which a job process closes: the control socket
        (a job must not talk to the node), the epoll descriptor, the wake-up pipe and the
        pipes of the other job processes (a process holding another's pipe would
        hide that one's end)."""
        fds = [self._wake_r, self._wake_w, self.poller.fileno(), self.ctl]
        for other in self.procs.values():
            fds.extend(fd for fd in (other.rfd, other.afd, other.gate_r, other.gate_w)
                       if fd >= 0)
        return tuple(fds)

    def read_output(self, proc: JobProcess) -> None:
        """Take what a job process wrote (one read: epoll says if more is
        there); at the end of its output, report it if it can be."""
        try:
            size = os.readv(proc.rfd, (self._rbuf,))
        except BlockingIOError:
            return
        if size:
            self.passed += size
            proc.output += self._rbuf[:size]
            take_records(proc, self._on_record)
        else:
            self._output_ended(proc)

    def drain(self, proc: JobProcess) -> None:
        """Read what is left in a job process's pipe (it has exited)."""
        while proc.rfd >= 0:
            try:
                size = os.readv(proc.rfd, (self._rbuf,))
            except BlockingIOError:
                return    # someone else (a process the job left) still holds the pipe
            if not size:
                self._output_ended(proc)
                return
            proc.output += self._rbuf[:size]
            take_records(proc, self._on_record)

    def _output_ended(self, proc: JobProcess) -> None:
        self.poller.unregister(proc.rfd)
        del self.watched[proc.rfd]
        os.close(proc.rfd)
        proc.rfd = -1  # the number may be reused at once: never close it again
        proc.eof = True
        self._report(proc)

    def _on_record(self, proc: JobProcess, kind: int, body: bytes) -> None:
        """Relay provisional results and files at once; a RESULT ends the job."""
        if proc.uid < 0:
            return
        if kind == channel.PROVISIONAL:
            self._out('provisional', proc.uid, proc.attempt, body)
        elif kind in (channel.RESULT, channel.RESULT_FILE):
            if kind == channel.RESULT:
                output = body
            else:   # job processes write results to files: imported once, here
                mmap_module()
                output = _file_result(body)
            if proc.warm or isinstance(output, tuple) or channel.result_complete(output):
                # a whole result is the job's last word: a fork-per-job process only
                # exits after it, and its exit (~0.3-0.6 ms of page-table teardown)
                # need not delay the report nor the next job on its CPU
                self._job_ended(proc, 0, 0.0, output)
            else:
                proc.final = output
        elif kind == channel.FILE and len(body) >= channel.FILE_NAME.size:
            (size,) = channel.FILE_NAME.unpack_from(body)
            name = body[channel.FILE_NAME.size:channel.FILE_NAME.size + size]
            self._out('file', proc.uid, proc.attempt, name.decode('utf-8', 'replace'),
                      body[channel.FILE_NAME.size + size:])

    def _report(self, proc: JobProcess) -> None:
        """A job process's output ended or it was reaped: report its job if it has one
        and how it ended is known (a whole result, else the wait status)."""
        if proc.warm and proc.wait_status is not None and proc.gated:
            self._requeue_unstarted(proc)   # first: such a job must not be reported
        if proc.uid < 0 or not proc.eof:
            return
        complete = isinstance(proc.final, tuple) or channel.result_complete(proc.final)
        if proc.warm or not complete:
            if proc.wait_status is None:
                return  # no whole result: wait until it is reaped to say how it ended
            self._job_ended(proc, proc.wait_status, proc.cpu_time, b'')
        else:
            self._job_ended(proc, proc.wait_status or 0, proc.cpu_time, proc.final)

    def _job_ended(self, proc: JobProcess, wait_status: int, cpu_time: float,
                   output: bytes | tuple[bytes, str]) -> None:
        """Report the job of ``proc`` and pass its CPU on to the next waiting job."""
        uid, attempt = proc.uid, proc.attempt
        proc.uid = proc.attempt = -1
        self.pids.pop(uid, None)
        if proc.warm:
            for index, job in enumerate(proc.gated):   # if it was written ahead, it
                if job is not None and job.uid == uid:  # and those before it passed the gate
                    del proc.gated[:index + 1]
                    break
            after = proc.ahead
            if after is not None:
                if (proc.retiring or not proc.usable) and self._take_back(proc, after):
                    self.queue.put_back(after)    # it never started: first in line again
                else:   # it runs (or is about to) on this CPU
                    proc.ahead = None
                    proc.uid, proc.attempt = after.uid, after.attempt
                    self._out('done', uid, attempt, wait_status, cpu_time, output, False)
                    self._write_ahead(proc)
                    return
            if proc.retiring or not proc.usable:
                self._retire(proc)
            else:
                self.spares.append(proc)   # idle first: the next job may start on it
        else:
            self.deadlines.pop(proc.pid, None)
        if proc.warm:
            self._steal_ahead()
        kept = self._run_on_cpu(self.queue.ended())  # first: the CPU waits for no one
        self._out('done', uid, attempt, wait_status, cpu_time, output, not kept)
        if not proc.warm:
            if self.queue.waiting or not self.spares:   # spares are needed now
                self._top_up(rehearsal=not self.queue.waiting)
            else:
                self.top_up_due = True  # when nothing else happens: see IDLE_TOP_UP

    def _retire(self, proc: JobProcess) -> None:
        """A warm worker runs no more jobs: kill its process group (reaping and a
        replacement follow)."""
        proc.retiring = True
        self.deadlines.pop(proc.pid, None)
        if proc.afd >= 0:
            os.close(proc.afd)
            proc.afd = -1
        if proc.wait_status is None:
            kill_group(proc.pid, signal.SIGKILL)

    def cancel(self, uid: int, grace: float) -> None:
        job = self.queue.cancel(uid)
        if job is not None:
            _discard(job.payload)
            self._out('cancelled', job.uid, job.attempt)
            return
        pid = self.pids.get(uid)
        if pid is None or pid in self.deadlines:
            return
        proc = self.procs.get(pid)
        if proc is not None and proc.warm and self._cancel_warm(proc, uid):
            return
        if proc is not None:
            proc.retiring = True   # a warm worker is not trusted with another job
        kill_group(pid, signal.SIGINT)
        self.deadlines[pid] = (time.monotonic() + grace, signal.SIGTERM)

    def escalate(self) -> None:
        now = time.monotonic()
        for pid, (when, sig) in list(self.deadlines.items()):
            if when > now:
                continue
            kill_group(pid, sig)
            if sig == signal.SIGTERM:
                self.deadlines[pid] = (now + KILL_AFTER_TERM, signal.SIGKILL)
            else:
                del self.deadlines[pid]

    def reap(self, block: bool = False) -> None:
        while self.procs:
            try:
                pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.procs.pop(pid, None)
            if proc is None:
                continue
            kill_group(pid, signal.SIGKILL)  # leftovers the job spawned in its group
            self.deadlines.pop(pid, None)
            if proc in self.spares:
                self.spares.remove(proc)
            if proc.afd >= 0:
                os.close(proc.afd)
                proc.afd = -1
            proc.wait_status = status
            proc.cpu_time = usage.ru_utime + usage.ru_stime
            if not proc.eof:
                self.drain(proc)  # the pipe may hold the last bytes
            self._report(proc)   # (a warm worker's unstarted jobs go back in line first)
            if proc.warm:
                _close_gate(proc)
                self._top_up()    # a fresh worker in its place
            if block:
                return


def _import_ahead(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a job importing it will say why
            pass


def _pipe_size(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except (OSError, AttributeError):   # not Linux
        return 0


def _unread(fd: int) -> int:
    """Bytes in the pipe ``fd`` writes to that its reader has not read yet."""
    try:
        import termios  # here, not at the top: see the module docstring
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)
    except OSError:
        return 1 << 30   # unknown: as if full


def _close_gate(proc: JobProcess) -> None:
    for fd in (proc.gate_r, proc.gate_w):
        if fd >= 0:
            os.close(fd)
    proc.gate_r = proc.gate_w = -1


def _discard(payload: bytes | str) -> None:
    """A job that will not run: remove its transfer file, if it has one."""
    if isinstance(payload, str):
        try:
            os.unlink(payload)
        except OSError:
            pass


def _file_result(body: bytes) -> tuple[bytes, str] | bytes:
    """A RESULT_FILE record: (RESULT_HEADER, the transfer file's name) for the node,
    which checks the name and reads the file (b'' if the record is malformed)."""
    size = channel.RESULT_HEADER.size
    if len(body) <= size:
        return b''
    return body[:size], body[size:].decode('utf-8', 'replace')


def plain_globals(made: dict[str, Any], mode: int) -> bytes:
    """Pickle setup's globals for the node, which accepts plain data only (numbers,
    strings, containers): say clearly which global is not."""
    for name, value in made.items():
        try:
            safe_loads(pickle.dumps(value, protocol=5))
        except Exception as exc:  # noqa: BLE001 - any unpicklable or non-plain value
            raise RuntimeError(
                f'setup returned {mode}, so its globals are handed to the node, which takes '
                f'plain data only (numbers, strings, lists, dicts, ...): {name!r} is a '
                f'{type(value).__name__} ({exc}); return 2 to keep jobs in the setup '
                'process instead') from None
    return pickle.dumps(made, protocol=5)


def main(argv: list[str]) -> int:
    set_parent_death_signal(signal.SIGKILL)
    if os.environ.pop(BIND_NOW_ADDED, None):   # (read by the dynamic linker at start only)
        os.environ.pop('LD_BIND_NOW', None)      # programs a job runs start as usual
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = int(argv[0])
    os.set_blocking(ctl, True)
    Zygote(ctl).serve()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
