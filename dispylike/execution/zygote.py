"""The computation process ("zygote") and the job processes it forks.

::

    node daemon ──ctl socketpair──> zygote: loads the bundle, runs setup, then
        ^                             forks one child per job and reaps it
        |                                     │ fork
        └──── Unix socket (token) ──── job child: runs the function, sends
                                         its result, exits

The zygote is single-threaded, so forking it is safe; every job inherits the
globals created by ``setup``.  The zygote is the only owner of job processes:
it forks them, cancels them (SIGINT, grace, SIGTERM, SIGKILL of the process
group) and reaps them, reporting each exit to the node.  Job processes and the
zygote die with their parent (parent-death signal).
"""

from __future__ import annotations

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
from typing import Any

import cloudpickle

from ..protocol.frames import FrameDecoder
from ..status import JobStatus
from . import channel
from .computation import Loaded, load
from .processes import kill_group, set_parent_death_signal

SETUP_OK = (0, 1, 2)
KILL_AFTER_TERM = 1.0


def _send(sock: socket.socket, *fields: Any) -> None:
    for buf in channel.pack(*fields):
        sock.sendall(buf)  # sendall: a signal (SIGCHLD) may interrupt a plain send


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.decoder = FrameDecoder(message_cap=channel.INTERNAL_MESSAGE_CAP)
        self.loaded: Loaded | None = None
        self.job_addr = ''
        self.token = b''
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (uid, attempt)
        self.pids: dict[int, int] = {}                  # uid -> pid
        self.deadlines: dict[int, tuple[float, int]] = {}  # pid -> (when, next signal)
        self._wake_r = -1
        self._wake_w = -1

    # --- loop -----------------------------------------------------------------------
    def serve(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel = selectors.DefaultSelector()
        sel.register(self.ctl, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        while True:
            timeout = None
            if self.deadlines:
                timeout = max(0.0, min(d for d, _ in self.deadlines.values()) - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.fileobj is self.ctl:
                    data = self.ctl.recv(1 << 20)
                    if not data:
                        self.finish(run_cleanup=False)
                        return
                    for msg in self.decoder.feed(data):
                        if self.handle(channel.unpack(msg)):
                            return
                else:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
            self.reap()
            self.escalate()

    def handle(self, msg: tuple) -> bool:
        """Handle one message from the node; True means exit the loop."""
        kind = msg[0]
        if kind == 'run':
            self.fork_job(*msg[1:])
        elif kind == 'cancel':
            self.cancel(msg[1], msg[2])
        elif kind == 'load':
            self.do_load(*msg[1:])
        elif kind == 'close':
            self.finish(run_cleanup=msg[1])
            return True
        return False

    # --- computation ----------------------------------------------------------------
    def do_load(self, code: bytes, dest_path: str, node_globals: dict, job_addr: str,
                token: bytes, setup_args: bytes) -> None:
        self.job_addr, self.token = job_addr, token
        node_globals = dict(node_globals)
        node_globals['dispynode_logger'] = logging.getLogger('dispynode')
        try:
            self.loaded = load(code, dest_path, node_globals)
            args = pickle.loads(setup_args) if setup_args else ()
            if self.loaded.setup is not None:
                ret = self.loaded.setup(*args)
                if ret not in SETUP_OK:
                    raise RuntimeError(f'setup returned {ret!r}; it must return 0, 1 or 2')
        except BaseException:
            _send(self.ctl, 'failed', traceback.format_exc())
            return
        _send(self.ctl, 'ready', '')

    def finish(self, run_cleanup: bool) -> None:
        for pid in list(self.children):
            kill_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self.reap(block=True)
        error = ''
        if run_cleanup and self.loaded is not None and self.loaded.cleanup is not None:
            try:
                self.loaded.cleanup()
            except BaseException:
                error = traceback.format_exc()
        try:
            _send(self.ctl, 'closed', error)
        except OSError:
            pass

    # --- jobs -----------------------------------------------------------------------
    def fork_job(self, uid: int, attempt: int, payload: bytes) -> None:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                self._child_setup()
                code = run_job(self.loaded, uid, attempt, payload, self.job_addr, self.token)
            finally:
                os._exit(code)
        try:
            os.setpgid(pid, pid)  # also done in the child; whoever runs first wins
        except OSError:
            pass
        self.children[pid] = (uid, attempt)
        self.pids[uid] = pid
        _send(self.ctl, 'started', uid, attempt, pid)

    def _child_setup(self) -> None:
        os.setpgid(0, 0)
        set_parent_death_signal(signal.SIGKILL)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self.ctl.close()

    def cancel(self, uid: int, grace: float) -> None:
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
            entry = self.children.pop(pid, None)
            self.deadlines.pop(pid, None)
            if entry is None:
                continue
            uid, attempt = entry
            self.pids.pop(uid, None)
            kill_group(pid, signal.SIGKILL)  # leftovers the job spawned in its group
            try:
                _send(self.ctl, 'exited', uid, attempt, status,
                      usage.ru_utime + usage.ru_stime)
            except OSError:
                return
            if block:
                return


def _capture_run(loaded: Loaded, payload: bytes) -> tuple[Any, str, str, str | None, JobStatus]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    result: Any = None
    exception = None
    status = JobStatus.Finished
    try:
        args, kwargs = cloudpickle.loads(payload)
        if loaded.kind == 'program':
            proc = subprocess.run([os.path.join('.', loaded.program), *args],
                                  capture_output=True, text=True, errors='replace')
            result = proc.returncode
            out.write(proc.stdout)
            err.write(proc.stderr)
        else:
            result = loaded.func(*args, **kwargs)
    except BaseException:  # the job's own failure is its result: report, never crash
        status = JobStatus.Terminated
        exception = traceback.format_exc()
        result = None
    finally:
        sys.stdout, sys.stderr = saved
    return result, out.getvalue(), err.getvalue(), exception, status


def _serialize_reply(result: Any, stdout: str, stderr: str, exception: str | None,
                     status: JobStatus) -> tuple[JobStatus, bytes]:
    reply = (result, stdout, stderr, exception)
    try:
        return status, pickle.dumps(reply, protocol=5)
    except Exception:
        pass
    try:
        return status, cloudpickle.dumps(reply, protocol=5)
    except Exception as exc:
        msg = (f'the result could not be serialised ({type(exc).__name__}: {exc}); '
               'return picklable data or send a file with dispy_send_file')
        return JobStatus.Terminated, pickle.dumps((None, stdout, stderr, msg), protocol=5)


def run_job(loaded: Loaded | None, uid: int, attempt: int, payload: bytes,
            job_addr: str, token: bytes) -> int:
    """Body of a job process: returns its exit code (0 = result delivered)."""
    start = time.time()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(job_addr)
    _send(sock, 'hello', token, uid, attempt)
    if loaded is None:
        return 71
    result, out, err, exc, status = _capture_run(loaded, payload)
    status, body = _serialize_reply(result, out, err, exc, status)
    _send(sock, 'result', int(status), start, time.time(), body)
    sock.shutdown(socket.SHUT_WR)
    return 0


def main(argv: list[str]) -> int:
    set_parent_death_signal(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(argv[0]))
    ctl.setblocking(True)
    Zygote(ctl).serve()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
