"""The computation process ("zygote") and the job processes it forks.

::

    node daemon <──ctl socketpair──> zygote: loads the bundle, runs setup, then
                                      forks one child per job and reaps it
                                        ^        │ fork
                          result pipe   │        v
                                      job child: runs the function, writes
                                      its result to the pipe, exits

The zygote is single-threaded, so forking it is safe; every job inherits the
globals created by ``setup``.  To keep fork off a job's critical path the zygote
keeps "spare" job processes, forked ahead and blocked on their argument pipe;
each job still runs in a fresh process of its own.

The node lends the zygote a CPU with each job it may start at once; other
jobs wait in the zygote (:mod:`.jobqueue`), and when a job ends the next one
starts on its CPU before the node hears of the end.

The zygote is the only owner of job processes: it forks them, cancels them
(SIGINT, grace, SIGTERM, SIGKILL of the process group) and reaps them.  A job
is reported to the node exactly once: as 'done' at the end of its result pipe
when a result arrived (the process is exiting), otherwise when it is reaped, so
the report can say how it died; as 'cancelled' if it was cancelled (or the
computation closed) while it waited; as 'refused' if no process could be
forked for it.  Job processes and the zygote die with their parent
(parent-death signal).
"""

from __future__ import annotations

import _signal
import contextlib
import gc
import importlib
import io
import logging
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .. import config
from ..protocol.frames import FrameDecoder
from ..protocol.messages import safe_loads
from ..status import JobStatus
from . import channel
from .computation import JobDepends, Loaded, load, rebind
from .forking import LeanForks
from .jobqueue import JobQueue, WaitingJob
from .processes import kill_group, set_parent_death_signal
from .staging import FileSink

SETUP_OK = (0, 1, 2)
KILL_AFTER_TERM = 1.0
READ_SIZE = 1 << 20
_SIGKILL, _SIGCHLD, _SIGINT, _SIGTERM = (int(signal.SIGKILL), int(signal.SIGCHLD),
                                         int(signal.SIGINT), int(signal.SIGTERM))
_SIG_DFL = int(signal.SIG_DFL)


def _send(sock: socket.socket, *fields: Any) -> None:
    bufs = channel.pack(*fields)
    if sum(len(buf) for buf in bufs) < _SMALL:
        bufs = [b''.join(bufs)]  # one system call for the usual short message
    for buf in bufs:
        sock.sendall(buf)  # sendall: a signal (SIGCHLD) may interrupt a plain send


@dataclass(eq=False)
class _Child:
    pid: int
    uid: int
    attempt: int
    rfd: int
    afd: int                       # write end of the argument pipe (-1 once used)
    output: bytearray = field(default_factory=bytearray)   # records not yet complete
    final: bytes = b''                                     # the RESULT record's body
    eof: bool = False
    wait_status: int | None = None
    cpu_time: float = 0.0
    reported: bool = False


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.decoder = FrameDecoder(message_cap=channel.INTERNAL_MESSAGE_CAP)
        self.loaded: Loaded | None = None
        self.children: dict[int, _Child] = {}              # pid -> child
        self.pids: dict[int, int] = {}                      # uid -> pid
        self.spares: deque[_Child] = deque()
        self.queue = JobQueue()
        self.spare_low = 0    # fork more spares when fewer than this are left ...
        self.spare_high = 0   # ... up to this many, in one burst
        self.deadlines: dict[int, tuple[float, int]] = {}   # pid -> (when, next signal)
        self.sel = selectors.DefaultSelector()
        self._wake_r = -1
        self._wake_w = -1

    # --- loop -----------------------------------------------------------------------
    def serve(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self.ctl, selectors.EVENT_READ)
        self.sel.register(self._wake_r, selectors.EVENT_READ)
        while True:
            timeout = None
            if self.deadlines:
                timeout = max(0.0, min(d for d, _ in self.deadlines.values()) - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.fileobj is self.ctl:
                    data = self.ctl.recv(READ_SIZE)
                    if not data:
                        self.finish(run_cleanup=False)
                        return
                    for msg in self.decoder.feed(data):
                        if self.handle(channel.unpack(msg)):
                            return
                elif key.fileobj == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:
                    self.read_result(key.data)
            self.reap()
            self.escalate()

    def handle(self, msg: tuple) -> bool:
        """Handle one message from the node; True means exit the loop."""
        kind = msg[0]
        if kind == 'run':
            uid, attempt, payload, lend = msg[1:]
            self.queue.add(WaitingJob(uid, attempt, payload))
            if lend:
                self._lent()
        elif kind == 'lend':
            self._lent()
        elif kind == 'reclaim':
            self.queue.give_back(msg[1])
        elif kind == 'drop':
            for job in self.queue.drop():
                _send(self.ctl, 'cancelled', job.uid, job.attempt)
        elif kind == 'cancel':
            self.cancel(msg[1], msg[2])
        elif kind == 'load':
            self.do_load(*msg[1:])
        elif kind == 'close':
            self.finish(run_cleanup=msg[1])
            return True
        return False

    # --- computation ----------------------------------------------------------------
    def do_load(self, code: bytes, dest_path: str, node_globals: dict, setup_args: bytes,
                spares: int, run_setup: bool = True, handed: bytes = b'') -> None:
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
                    _send(self.ctl, 'handover', plain_globals(made, ret))
                    return
        except BaseException:  # noqa: BLE001 - any failure of user setup is reported
            _send(self.ctl, 'failed', traceback.format_exc())
            return
        ns = self.loaded.ns.__dict__  # bound once here, not in each job process
        ns['dispy_provisional_result'] = _provisional_sender()
        ns['dispy_send_file'] = _file_sender(ns)
        gc.freeze()  # jobs then leave the objects made so far alone: fewer copied pages
        self.spare_low = max(0, spares)
        self.spare_high = 3 * self.spare_low
        self._top_up()
        _send(self.ctl, 'ready', '')

    def _shutdown_node(self) -> None:
        """``dispynode_shutdown()`` for cleanup: ask the node to exit (it does so only
        if it was started with --client_shutdown)."""
        _send(self.ctl, 'shutdown')

    def finish(self, run_cleanup: bool) -> None:
        self.spare_low = self.spare_high = 0
        self.queue.drop()   # the node fails them: nothing may start now
        for pid in list(self.children):
            kill_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self.reap(block=True)
        error = ''
        if run_cleanup and self.loaded is not None and self.loaded.cleanup is not None:
            try:
                self.loaded.cleanup()
            except BaseException:  # noqa: BLE001 - reported to the node
                error = traceback.format_exc()
        try:
            _send(self.ctl, 'closed', error)
        except OSError:
            pass

    # --- jobs -----------------------------------------------------------------------
    # A job process is forked *before* its job arrives (a "spare" waiting on its
    # argument pipe), so the fork is off the job's critical path; each job still
    # gets a fresh process forked from the zygote after setup.
    def _lent(self) -> None:
        if not self._run_on_cpu(self.queue.lend()):
            _send(self.ctl, 'returned')

    def _run_on_cpu(self, job: WaitingJob | None) -> bool:
        """Start ``job`` on a lent CPU (the next waiting job if it cannot start).
        False: nothing started, the CPU goes back to the node."""
        while job is not None:
            if self.fork_job(job.uid, job.attempt, job.payload):
                return True
            job = self.queue.ended()
        return False

    def fork_job(self, uid: int, attempt: int, payload: bytes) -> bool:
        try:
            child = self.spares.popleft() if self.spares else self._spawn()[0]
        except OSError as exc:  # out of processes or descriptors: fail this job only
            _send(self.ctl, 'refused', uid, attempt, f'could not start a job process: {exc}')
            return False
        child.uid, child.attempt = uid, attempt
        self.pids[uid] = child.pid
        try:
            if len(payload) < _SMALL:  # one write (and one read in the child)
                _write_all(child.afd, channel.LENGTH.pack(len(payload)) + payload)
            else:
                _write_all(child.afd, channel.LENGTH.pack(len(payload)))
                _write_all(child.afd, payload)
        except OSError:
            pass  # the spare died: reaping reports the job as ended without a result
        os.close(child.afd)
        child.afd = -1
        return True

    def _top_up(self) -> None:
        """Refill the spares in bursts, after a job's report (so a fork never delays a
        result).  A fork write-protects every page of this process and each page it
        then writes costs a fault: forking several spares back to back pays for this
        process's own working set once per burst instead of once per job."""
        if len(self.spares) >= self.spare_low:
            return
        with contextlib.suppress(OSError):  # spares are an optimisation: a job forks
            self.spares.extend(self._spawn(self.spare_high - len(self.spares)))

    def _spawn(self, count: int = 1) -> list[_Child]:
        """Fork up to ``count`` job processes (at least one, else OSError).  Between two
        forks this process runs as little Python as possible: each page it writes
        then costs a copy-on-write fault, so the pipes are made before the burst and
        the bookkeeping is done after it."""
        pipes: list[tuple[int, int, int, int]] = []   # (rfd, wfd, afd_r, afd_w)
        try:
            for _ in range(count):
                pipes.append(os.pipe() + os.pipe())
        except OSError:
            if not pipes:
                raise
        pids: list[int] = []
        error: OSError | None = None
        with LeanForks() as forks:
            for index in range(len(pipes)):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = exc
                    break
                if pid == 0:
                    forks.restore()
                    self._child_main(pipes, index)
                pids.append(pid)
        spawned = []
        for index, fds in enumerate(pipes):
            rfd, wfd, afd_r, afd_w = fds
            os.close(wfd)
            os.close(afd_r)
            if index >= len(pids):  # its fork failed
                os.close(rfd)
                os.close(afd_w)
                continue
            pid = pids[index]
            try:
                os.setpgid(pid, pid)  # also done in the child; whoever runs first wins
            except OSError:
                pass
            os.set_blocking(rfd, False)
            child = _Child(pid, -1, -1, rfd, afd_w)
            self.children[pid] = child
            self.sel.register(rfd, selectors.EVENT_READ, child)
            spawned.append(child)
        if not spawned:
            raise error or OSError('no job process could be forked')
        return spawned

    def _child_main(self, pipes: list[tuple[int, int, int, int]], index: int) -> None:
        """Body of a forked job process; never returns."""
        code = 70
        try:
            rfd, wfd, afd_r, afd_w = pipes[index]
            os.close(rfd)
            os.close(afd_w)
            for other, fds in enumerate(pipes):  # the other job processes' pipes
                if other != index:
                    for fd in fds:
                        os.close(fd)
            self._child_setup()
            code = run_job(self.loaded, afd_r, wfd)
        finally:
            os._exit(code)

    def _child_setup(self) -> None:
        # Every object this touches is shared with the zygote, and each page written
        # costs a copy-on-write fault: so the C functions of _signal (signal.signal
        # wraps them in enum conversions that touch ~60 pages), plain ints, and the
        # selector's and the control socket's descriptors closed without tearing
        # down their Python objects (this process never returns to the zygote loop,
        # and it ends with os._exit).
        os.setpgid(0, 0)
        set_parent_death_signal(_SIGKILL)
        _signal.set_wakeup_fd(-1)
        _signal.signal(_SIGCHLD, _SIG_DFL)
        _signal.signal(_SIGINT, _signal.default_int_handler)
        _signal.signal(_SIGTERM, _SIG_DFL)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for other in self.children.values():
            if other.rfd >= 0:
                os.close(other.rfd)
            if other.afd >= 0:
                os.close(other.afd)
        os.close(self.sel.fileno())
        os.close(self.ctl.detach())

    def read_result(self, child: _Child, block: bool = False) -> None:
        """Read what the child wrote to its pipe; at EOF, report the job."""
        if block:
            os.set_blocking(child.rfd, True)
        while True:
            try:
                data = os.read(child.rfd, READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                break
            child.output += data
            self._records(child)
        self.sel.unregister(child.rfd)
        os.close(child.rfd)
        child.rfd = -1  # the number may be reused at once: never close it again
        child.eof = True
        self._report(child)

    def _records(self, child: _Child) -> None:
        """Relay provisional results at once; keep the final one."""
        buf = child.output
        while len(buf) >= channel.RECORD.size:
            kind, length = channel.RECORD.unpack_from(buf)
            end = channel.RECORD.size + length
            if len(buf) < end:
                return
            body = bytes(buf[channel.RECORD.size:end])
            del buf[:end]
            if kind == channel.PROVISIONAL and child.uid >= 0:
                _send(self.ctl, 'provisional', child.uid, child.attempt, body)
            elif kind == channel.RESULT:
                child.final = body
            elif kind == channel.FILE and child.uid >= 0 and len(body) >= channel.FILE_NAME.size:
                (size,) = channel.FILE_NAME.unpack_from(body)
                name = body[channel.FILE_NAME.size:channel.FILE_NAME.size + size]
                _send(self.ctl, 'file', child.uid, child.attempt,
                      name.decode('utf-8', 'replace'), body[channel.FILE_NAME.size + size:])

    def _report(self, child: _Child) -> None:
        """Tell the node a job ended: at EOF with a result (the process is exiting), else
        once it is reaped (so the report can say how it died)."""
        if child.reported or child.uid < 0 or not child.eof:
            return
        if child.wait_status is None and not channel.result_complete(child.final):
            return  # no whole result: wait until it is reaped to say how it ended
        child.reported = True
        self.pids.pop(child.uid, None)
        self.deadlines.pop(child.pid, None)
        kept = self._run_on_cpu(self.queue.ended())  # first: the CPU waits for no one
        _send(self.ctl, 'done', child.uid, child.attempt, child.wait_status or 0,
              child.cpu_time, child.final, not kept)
        self._top_up()

    def cancel(self, uid: int, grace: float) -> None:
        job = self.queue.cancel(uid)
        if job is not None:
            _send(self.ctl, 'cancelled', job.uid, job.attempt)
            return
        pid = self.pids.get(uid)
        if pid is None or pid in self.deadlines:
            return
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
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            kill_group(pid, signal.SIGKILL)  # leftovers the job spawned in its group
            if child in self.spares:
                self.spares.remove(child)
            if child.afd >= 0:
                os.close(child.afd)
                child.afd = -1
            child.wait_status = status
            child.cpu_time = usage.ru_utime + usage.ru_stime
            if not child.eof:
                self.read_result(child)  # the pipe may hold the last bytes: drain it
            self._report(child)
            if block:
                return


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


def _capture_run(loaded: Loaded, payload: bytes) -> tuple[Any, str, str, str | None, JobStatus]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    result: Any = None
    exception = None
    status = JobStatus.Finished
    installed: list[str] = []
    try:
        args, kwargs, *extras = cloudpickle.loads(payload)
        if extras:
            installed = install_job_depends(loaded, extras[0])
        if loaded.kind == 'program':
            proc = subprocess.run([os.path.join('.', loaded.program), *args], check=False,
                                  capture_output=True, text=True, errors='replace')
            result = proc.returncode
            out.write(proc.stdout)
            err.write(proc.stderr)
        else:
            result = loaded.func(*args, **kwargs)
    except BaseException:  # noqa: BLE001 - the job's own failure is its result
        status = JobStatus.Terminated
        exception = traceback.format_exc()
        result = None
    finally:
        sys.stdout, sys.stderr = saved
        for path in installed:  # a job's own depends go with it, whatever cleanup says
            with contextlib.suppress(OSError):
                os.unlink(path)
    return result, out.getvalue(), err.getvalue(), exception, status


def install_job_depends(loaded: Loaded, deps: JobDepends) -> list[str]:
    """Put a job's dispy_job_depends in place: files (confined to the job directory,
    the node's size limit applies), modules, functions and classes.  Returns the
    files written, for removal after the job."""
    ns = loaded.ns.__dict__
    limit = ns.get('_dispy_max_file_size', 0)
    written = []
    for relpath, data, mode in deps.files:
        sink = FileSink(os.getcwd(), relpath, limit)
        written.append(sink.path)
        sink.write(0, data)
        sink.finish(mode)
    for name in deps.modules:
        ns[name.split('.')[0]] = importlib.import_module(name.split('.')[0])
        importlib.import_module(name)
    for name, obj in deps.namespace.items():
        ns[name] = rebind(obj, ns)
    return written


def _serialize_reply(result: Any, stdout: str, stderr: str, exception: str | None,
                     status: JobStatus) -> tuple[JobStatus, bytes]:
    reply = (result, stdout, stderr, exception)
    try:
        return status, pickle.dumps(reply, protocol=5)
    except Exception:  # noqa: BLE001 - plain pickle failed: try by value below
        pass
    try:
        return status, cloudpickle.dumps(reply, protocol=5)
    except Exception as exc:  # noqa: BLE001 - any failure means: unpicklable result
        msg = (f'the result could not be serialised ({type(exc).__name__}: {exc}); '
               'return picklable data (or save it to a file)')
        return JobStatus.Terminated, pickle.dumps((None, stdout, stderr, msg), protocol=5)


def _write_all(fd: int, buf: bytes | memoryview) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view):]  # a pipe may take a large write in parts


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts = []
    while size > 0:
        data = os.read(fd, min(size, READ_SIZE))
        if not data:
            return None
        parts.append(data)
        size -= len(data)
    return b''.join(parts)


def run_job(loaded: Loaded | None, afd: int, wfd: int) -> int:
    """Body of a job process: wait for its arguments on ``afd``, run, write the result
    to ``wfd`` (see :mod:`.channel` for the layout).  Returns the exit code.  Every
    object touched here is shared with the zygote, and each page written costs a
    copy-on-write fault, so the path stays short."""
    global _job_wfd
    head = os.read(afd, _LENGTH_SIZE)
    if 0 < len(head) < _LENGTH_SIZE:
        rest = _read_exactly(afd, _LENGTH_SIZE - len(head))
        head = head + rest if rest is not None else b''
    payload = None
    if head:
        (size,) = _unpack_length(head)
        payload = os.read(afd, min(size, READ_SIZE)) if size else b''
        if payload and len(payload) < size:  # a large payload comes in parts
            rest = _read_exactly(afd, size - len(payload))
            payload = None if rest is None else payload + rest
        elif size and not payload:
            payload = None
    os.close(afd)
    if payload is None or loaded is None:
        return 71  # a spare that was never used, or a node that never loaded
    start = time.time()
    _job_wfd = wfd  # for dispy_provisional_result and dispy_send_file
    result, out, err, exc, status = _capture_run(loaded, payload)
    status, body = _serialize_reply(result, out, err, exc, status)
    head = channel.RESULT_HEADER.pack(int(status), start, time.time(), len(body))
    record = channel.RECORD.pack(channel.RESULT, len(head) + len(body))
    if len(body) < _SMALL:
        _write_all(wfd, record + head + body)  # one write for the usual small result
    else:
        _write_all(wfd, record + head)
        _write_all(wfd, body)
    os.close(wfd)
    return 0


_LENGTH_SIZE = channel.LENGTH.size
_unpack_length = channel.LENGTH.unpack
_SMALL = 1 << 16
_job_wfd = -1  # this job process's result pipe


def _file_sender(ns: dict):
    """``dispy_send_file`` for jobs (writing to their result pipe)."""
    def dispy_send_file(path: str, relay: bool = False,
                        timeout: float = config.MsgTimeout) -> int:
        """Send the file at ``path`` (inside the job's directory) to the client, which
        saves it at the same relative path under its working directory.  0 if sent;
        -1 (with the reason on stderr) for a path outside the job's directory, a file
        over the node's --max_file_size, or a file that cannot be read."""
        base = os.path.realpath(ns.get('dispy_job_path', os.getcwd()))
        real = os.path.realpath(path)
        limit = ns.get('_dispy_max_file_size', 0)
        try:
            if os.path.commonpath([base, real]) != base or real == base:
                raise ValueError(f'{path!r} is outside the job directory {base}')
            if limit and os.path.getsize(real) > limit:
                raise ValueError(f'{path!r} is larger than the limit of {limit} bytes')
            with open(real, 'rb') as f:
                data = f.read()
        except (OSError, ValueError) as exc:
            print(f'dispy_send_file: refused: {exc}', file=sys.stderr)
            return -1
        if _job_wfd < 0:
            return -1  # not in a job
        name = os.path.relpath(real, base).replace(os.sep, '/').encode('utf-8')
        head = channel.FILE_NAME.pack(len(name)) + name
        _write_all(_job_wfd, channel.RECORD.pack(channel.FILE, len(head) + len(data)))
        _write_all(_job_wfd, head)
        _write_all(_job_wfd, data)
        return 0
    return dispy_send_file


def _provisional_sender():
    """``dispy_provisional_result`` for jobs (writing to their result pipe)."""
    def dispy_provisional_result(result: Any, relay: bool = False,
                                 timeout: float = config.MsgTimeout) -> int:
        """Send ``result`` to the client now; the job goes on.  0 if sent, -1 if the
        result cannot be serialised.  (``relay`` and ``timeout`` are dispy's; the
        result is handed to the node at once.)"""
        if _job_wfd < 0:
            return -1  # not in a job
        try:
            body = pickle.dumps(result, protocol=5)
        except Exception:  # noqa: BLE001 - fall back to by-value pickling
            try:
                body = cloudpickle.dumps(result, protocol=5)
            except Exception:  # noqa: BLE001 - unpicklable: tell the caller
                return -1
        _write_all(_job_wfd, channel.RECORD.pack(channel.PROVISIONAL, len(body)))
        _write_all(_job_wfd, body)
        return 0
    return dispy_provisional_result


def main(argv: list[str]) -> int:
    set_parent_death_signal(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(argv[0]))
    ctl.setblocking(True)
    Zygote(ctl).serve()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
