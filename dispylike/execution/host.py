"""Node-side owner of one computation process (see :mod:`.zygote` for the diagram).

:class:`ComputationHost` starts the zygote, loads the computation into it,
asks it to run jobs and turns each report into a :class:`JobOutcome`.  It also
keeps count of the CPUs the node lent the process (:mod:`.jobqueue`): a job
sent with a CPU starts at once, one sent without waits in the process for a
CPU that a job ending there passes on; ``on_release`` hears of each CPU that
comes back.
A job that ended without a result (crash, ``os._exit``, a signal) becomes
Terminated with a message that says how it died.  The node never unpickles
anything from the computation process but plain data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..errors import ComputationError, ProtocolError
from ..protocol.frames import FrameDecoder, Message
from ..protocol.plain import safe_loads
from ..status import JobStatus
from ..transport.stream import FrameStream
from . import channel, xfer
from .processes import BIND_NOW_ADDED, PACKAGE_ROOT, describe_wait_status

log = logging.getLogger('dispylike.node')
_FINAL_FROM_JOB = (JobStatus.Finished, JobStatus.Terminated)


@dataclass(slots=True)
class JobOutcome:
    status: JobStatus
    start_time: float
    end_time: float
    payload: bytes | str        # str: the path of the transfer file holding it
    cpu_time: float = 0.0


def failure_payload(message: str) -> bytes:
    """A reply payload (result, stdout, stderr, exception) made by the node itself."""
    return pickle.dumps((None, '', '', message), protocol=5)


#: Largest result taken from a transfer file (the node refuses larger ones anyway).
MAX_FILE_RESULT = 1 << 31


def outcome_from_file(header: bytes, payload: bytes | str, cpu_time: float) -> JobOutcome:
    """The outcome of a 'done' report whose payload came in a transfer file (pure)."""
    status, start, end, _size = channel.RESULT_HEADER.unpack(header)
    if status not in _FINAL_FROM_JOB:
        if isinstance(payload, str):
            xfer.discard(payload)
        return JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                          failure_payload('malformed result from the job process'), cpu_time)
    return JobOutcome(JobStatus(status), start, end, payload, cpu_time)


def outcome_from_report(wait_status: int, cpu_time: float, output: object) -> JobOutcome:
    """Build the outcome of a 'done' report from the job's raw output (pure; untrusted)."""
    head = channel.RESULT_HEADER
    if isinstance(output, bytes) and len(output) >= head.size:
        status, start, end, size = head.unpack_from(output)
        if status in _FINAL_FROM_JOB and len(output) == head.size + size:
            return JobOutcome(JobStatus(status), start, end, output[head.size:], cpu_time)
        if status not in _FINAL_FROM_JOB or len(output) > head.size + size:
            return JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                              failure_payload('malformed result from the job process'), cpu_time)
    how = describe_wait_status(wait_status)
    return JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                      failure_payload(f'job process ended without a result ({how})'), cpu_time)


def zygote_command(fd: int) -> list[str]:
    """The computation process runs without the ``site`` module: every job is a fork
    of it, and the modules that site processing imports (.pth hooks) double the
    cost of each fork and exit.  Its ``sys.path`` is the node's, resolved."""
    return [sys.executable, '-S', '-m', 'dispylike.execution.zygote', str(fd)]


def zygote_env() -> dict[str, str]:
    """The computation process's environment: this one, the package importable, and
    glibc's malloc asked to back large blocks with huge pages where the system lets a
    program ask (THP "madvise"): a job unpickling a 20 MB argument then takes ~10
    page faults instead of ~5,000 (issue 8, W3).  ``DISPYLIKE_HUGEPAGES=0`` or a
    GLIBC_TUNABLES naming the setting leaves it alone.

    The dynamic linker binds every symbol at start (``LD_BIND_NOW``): bound lazily,
    each job process would resolve again, into copied pages, the symbols its parent
    never called (W1: 0.05 ms of CPU per job).  The computation process takes the
    variable out of its environment again (:data:`BIND_NOW_ADDED`), so that programs
    a job runs start as usual.  ``DISPYLIKE_BIND_NOW=0`` leaves it out."""
    paths = [PACKAGE_ROOT] + [p for p in sys.path if p and os.path.isdir(p)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    tunables = env.get('GLIBC_TUNABLES', '')
    if env.get('DISPYLIKE_HUGEPAGES', '1') != '0' and 'glibc.malloc.hugetlb' not in tunables:
        env['GLIBC_TUNABLES'] = ':'.join(filter(None, [tunables, 'glibc.malloc.hugetlb=1']))
    if env.get('DISPYLIKE_BIND_NOW', '1') != '0' and 'LD_BIND_NOW' not in env:
        env['LD_BIND_NOW'] = env[BIND_NOW_ADDED] = '1'
    return env


class ComputationHost:
    """One computation's process on this node.  Use :meth:`start`, :meth:`run`, :meth:`close`."""

    def __init__(self, comp_id: str, name: str, dest_path: str,
                 on_broken: Callable[[str], None] | None = None,
                 on_provisional: Callable[[int, int, bytes], None] | None = None,
                 on_file: Callable[[int, int, str, bytes], None] | None = None,
                 on_shutdown: Callable[[], None] | None = None,
                 on_release: Callable[[], None] | None = None) -> None:
        self.comp_id = comp_id
        self._on_release = on_release
        self.lent = 0   # CPUs lent to the process: jobs running there
        self._on_file = on_file
        self._on_broken = on_broken
        self._on_provisional = on_provisional
        self._on_shutdown = on_shutdown
        self._closing = False
        self.name = name
        self.dest_path = dest_path
        self._proc: asyncio.subprocess.Process | None = None
        self._stream: FrameStream | None = None
        self._runs: dict[int, tuple[int, Callable]] = {}   # uid -> (attempt, on_done)
        self._ready: asyncio.Future | None = None
        self._closed_fut: asyncio.Future | None = None
        self._in_process: InProcessSetup | None = None
        self._outbox: list[tuple] = []   # messages for the process, sent once per loop turn
        self._loop: asyncio.AbstractEventLoop | None = None   # kept: see stream._loop
        self.xfer_dir = ''               # large arguments and results as files (see .xfer)
        self.broken = ''

    # --- lifecycle --------------------------------------------------------------
    async def start(self, code: bytes, node_globals: dict, setup_args: bytes = b'',
                    timeout: float | None = None, spares: int = 1,
                    in_process: bool = False) -> None:
        """Start the process, load the computation, run setup; ComputationError on failure.

        Setup runs in the computation's process, whose forks run the jobs; if setup
        returns 1 (or 0 without making globals) its globals, plain data only, go to a
        fresh process instead.  ``in_process`` (dispynode --unsafe_setup): setup and
        cleanup run in this (the node's) process; jobs still fork from a computation
        process, never from the multi-threaded node, and get setup's globals."""
        try:
            if in_process:
                self._in_process = InProcessSetup(code, node_globals, self.dest_path,
                                                  self._shutdown_from_thread())
                handed = await asyncio.to_thread(self._in_process.setup, setup_args)
                kind, data = await self._launch(code, node_globals, b'', spares, timeout,
                                                run_setup=False, handed=handed)
            else:
                kind, data = await self._launch(code, node_globals, setup_args, spares, timeout)
                if kind == 'handover':
                    handed = _check_handover(data)
                    await self.close(run_cleanup=False)
                    self._closing, self.broken = False, ''
                    kind, data = await self._launch(code, node_globals, b'', spares, timeout,
                                                    run_setup=False, handed=handed)
        except BaseException:
            xfer.remove_dir(self.xfer_dir)
            self.xfer_dir = ''
            raise
        if kind != 'ready':
            await self.close(run_cleanup=False)
            raise ComputationError(data if kind == 'error' else f'setup failed:\n{data}')

    async def _launch(self, code: bytes, node_globals: dict, setup_args: bytes, spares: int,
                      timeout: float | None, run_setup: bool = True,
                      handed: bytes = b'') -> tuple[str, Any]:
        """Start a computation process and load the computation into it: returns
        ('ready', ''), ('failed', traceback), ('handover', globals) or ('error', why)."""
        loop = self._loop = asyncio.get_running_loop()
        self.xfer_dir = self.xfer_dir or xfer.make_dir()
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *zygote_command(child.fileno()), env=zygote_env(),
                pass_fds=(child.fileno(),), cwd=self.dest_path, stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        self._ready = loop.create_future()
        self._closed_fut = loop.create_future()
        decoder = FrameDecoder(message_cap=channel.INTERNAL_MESSAGE_CAP)
        stream = FrameStream(decoder)
        stream.on_message = partial(self._on_message, stream)
        stream.on_lost = partial(self._on_lost, stream)
        self._stream = stream
        await loop.create_unix_connection(lambda: stream, sock=parent)
        self._send('load', code, self.dest_path, node_globals, setup_args, spares, run_setup,
                   handed, self.xfer_dir)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            return 'error', f'setup did not finish within {timeout} s'

    def _shutdown_from_thread(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()

        def shutdown() -> None:
            if self._on_shutdown is not None:
                loop.call_soon_threadsafe(self._on_shutdown)
        return shutdown

    async def close(self, run_cleanup: bool, timeout: float = 30.0) -> str:
        """Kill remaining jobs, run cleanup (if asked), stop the process.  Returns cleanup error."""
        error = ''
        self._closing = True
        if self._in_process is not None and run_cleanup:
            self._fail_all('the computation was closed on the node')   # jobs end first
            error = await asyncio.to_thread(self._in_process.cleanup)
            run_cleanup = False
        if self._proc is not None and self._proc.returncode is None and not self.broken:
            try:
                self._send('close', run_cleanup)
                error = await asyncio.wait_for(asyncio.shield(self._closed_fut), timeout)
            except (asyncio.TimeoutError, ConnectionError):
                error = 'cleanup did not finish in time'
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._fail_all('the computation was closed on the node')
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.close()
        xfer.remove_dir(self.xfer_dir)
        self.xfer_dir = ''
        return error or ''

    # --- jobs -------------------------------------------------------------------
    def run(self, uid: int, attempt: int, payload: bytes | str, lend: bool = True,
            on_done: Callable[[JobOutcome], None] | None = None) -> asyncio.Future | None:
        """Send a job, with a CPU lent to start it at once or to wait for one in the
        process.  Its :class:`JobOutcome` goes to ``on_done`` (called as the process's
        report is read, or on a later turn of the loop if the process is lost); without
        ``on_done`` a future is returned that resolves to it (never raises)."""
        fut = None
        if on_done is None:
            fut = asyncio.get_running_loop().create_future()
            on_done = fut.set_result
        if self.broken:
            asyncio.get_running_loop().call_soon(on_done, JobOutcome(
                JobStatus.Terminated, 0.0, 0.0, failure_payload(self.broken)))
            return fut
        self._runs[uid] = (attempt, on_done)
        self.lent += lend
        if isinstance(payload, str):
            pass         # a transfer file already (written by a client on this host)
        elif len(payload) >= xfer.XFER_MIN and self.xfer_dir:
            path = os.path.join(self.xfer_dir, f'{uid}-{attempt}.in')
            try:
                xfer.put(path, payload)
                payload = path   # the job process reads (and removes) it
            except OSError:
                pass             # no room: through the computation process then
        self._send('run', uid, attempt, payload, lend)
        return fut

    @property
    def waiting(self) -> int:
        """Jobs sent that wait in the process for a CPU."""
        return len(self._runs) - self.lent

    def lend(self) -> None:
        """Lend a CPU to the oldest waiting job (it comes back if none waits)."""
        if not self.broken:
            self.lent += 1
            self._send('lend')

    def take_back(self, count: int) -> None:
        """Have ``count`` CPUs come back as jobs end, whatever waits."""
        if not self.broken and count > 0:
            self._send('reclaim', count)

    def drop_waiting(self) -> None:
        """Cancel every job still waiting in the process."""
        if not self.broken:
            self._send('drop')

    def cancel(self, uid: int, grace: float = 5.0) -> None:
        """A waiting job ends Cancelled at once; a running one is interrupted."""
        if uid in self._runs and not self.broken:
            self._send('cancel', uid, grace)

    # --- internals --------------------------------------------------------------
    def _send(self, *fields) -> None:
        """Queue a message for the process; the messages of one turn of the event loop
        go out together as one ('batch', ...) message."""
        if self._gone():
            raise ConnectionError('computation process is gone')
        self._outbox.append(fields)
        if len(self._outbox) == 1:
            (self._loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _flush(self) -> None:
        msgs, self._outbox = self._outbox, []
        if not msgs or self._gone():
            return
        self._stream.writelines(channel.pack(*(msgs[0] if len(msgs) == 1
                                               else ('batch', tuple(msgs)))))

    def _gone(self) -> bool:
        return (self._stream is None or self._stream.transport is None
                or self._stream.transport.is_closing())

    def _on_message(self, stream: FrameStream, msg: Message) -> None:
        if stream is not self._stream:
            return   # from a process replaced after setup handed its globals over
        try:
            self._on_ctl(channel.unpack(msg))
        except ProtocolError as exc:
            log.error('computation %s: bad message from its process: %s', self.name, exc)
            stream.transport.abort()

    def _on_lost(self, stream: FrameStream, exc: BaseException | None) -> None:
        """The channel to the process ended (it exited, or sent garbage)."""
        if stream is not self._stream:
            return
        if exc is not None and not isinstance(exc, (EOFError, ConnectionError)):
            log.error('computation %s: bad message from its process: %s', self.name, exc)
        self.broken = self.broken or 'the computation process exited'
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(('error', 'the computation process exited during setup'))
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result('')
        self._fail_all('the computation process died')
        if not self._closing and self._on_broken is not None:
            self._on_broken(self.broken)

    def _on_ctl(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == 'batch' and len(msg) == 2 and isinstance(msg[1], tuple):
            for inner in msg[1]:
                if not isinstance(inner, tuple) or not inner or inner[0] == 'batch':
                    raise ProtocolError('malformed batch')
                self._on_ctl(inner)
        elif kind == 'done' and len(msg) == 7:
            _, uid, attempt, wait_status, cpu_time, result, released = msg
            entry = self._runs.get(uid)
            if entry is not None and entry[0] == attempt:
                del self._runs[uid]
                if isinstance(result, tuple):
                    outcome = self._file_outcome(result, float(cpu_time))
                else:
                    outcome = outcome_from_report(wait_status, float(cpu_time), result)
                entry[1](outcome)
            elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
                stale = self._file_outcome(result, 0.0)   # a stale report: its file goes
                if isinstance(stale.payload, str):
                    xfer.discard(stale.payload)
            if released:
                self._release(1)
        elif kind == 'returned' and len(msg) == 1:
            self._release(1)
        elif kind == 'cancelled' and len(msg) == 3:
            entry = self._runs.get(msg[1])
            if entry is not None and entry[0] == msg[2]:
                del self._runs[msg[1]]
                entry[1](JobOutcome(JobStatus.Cancelled, 0.0, 0.0,
                                    failure_payload('cancelled before it started')))
        elif kind == 'provisional' and len(msg) == 4:
            entry = self._runs.get(msg[1])
            if (entry is not None and entry[0] == msg[2] and isinstance(msg[3], bytes)
                    and self._on_provisional is not None):
                self._on_provisional(msg[1], msg[2], msg[3])
        elif kind == 'file' and len(msg) == 5:
            entry = self._runs.get(msg[1])
            if (entry is not None and entry[0] == msg[2] and isinstance(msg[3], str)
                    and isinstance(msg[4], bytes) and self._on_file is not None):
                self._on_file(msg[1], msg[2], msg[3], msg[4])
        elif kind == 'refused' and len(msg) == 4:
            entry = self._runs.pop(msg[1], None)
            if entry is not None and entry[0] == msg[2]:
                entry[1](JobOutcome(JobStatus.Terminated, 0.0, 0.0, failure_payload(str(msg[3]))))
        elif kind in ('ready', 'failed', 'handover') and len(msg) == 2:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result((kind, msg[1]))
        elif kind == 'shutdown' and len(msg) == 1:
            if self._on_shutdown is not None:
                self._on_shutdown()
        elif kind == 'closed' and len(msg) == 2:
            if self._closed_fut is not None and not self._closed_fut.done():
                self._closed_fut.set_result(str(msg[1]))
        else:
            raise ProtocolError(f'unknown message {kind!r}')

    def _file_outcome(self, result: tuple, cpu_time: float) -> JobOutcome:
        """A result left in a transfer file: checked and left there (the outcome's
        payload is its path: the node reads it, or a client on this host does)."""
        try:
            header, name = result
            if not (isinstance(header, bytes) and len(header) == channel.RESULT_HEADER.size
                    and isinstance(name, str)):
                raise ProtocolError('malformed transfer file report')
            size = channel.RESULT_HEADER.unpack(header)[3]
            payload = xfer.take_confined(self.xfer_dir, name, size, MAX_FILE_RESULT, keep=True)
        except (ProtocolError, ValueError) as exc:
            return JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                              failure_payload(f'malformed result from the job process: {exc}'),
                              cpu_time)
        return outcome_from_file(header, payload, cpu_time)

    def _release(self, count: int) -> None:
        self.lent = max(0, self.lent - count)
        if count and self._on_release is not None:
            self._on_release()

    def _fail_all(self, reason: str) -> None:
        runs, self._runs = self._runs, {}
        self._release(self.lent)
        loop = asyncio.get_running_loop()
        for _attempt, on_done in runs.values():   # on later turns: the caller is mid-way
            loop.call_soon(on_done, JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                                               failure_payload(reason)))


def _check_handover(data: object) -> bytes:
    """Globals handed over by setup (returned 1): plain data only, checked here too."""
    if isinstance(data, bytes):
        try:
            value = safe_loads(data)
        except ProtocolError as exc:
            raise ComputationError(f'setup\'s globals are not plain data: {exc}') from None
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return data
    raise ComputationError('malformed globals from setup')


class InProcessSetup:
    """``--unsafe_setup``: the computation's setup and cleanup run in the node process
    (in a worker thread, in a namespace of their own).  Their globals are handed to
    the computation process the jobs fork from, so they must pickle."""

    def __init__(self, code: bytes, node_globals: dict, dest_path: str,
                 shutdown: Callable[[], None]) -> None:
        self.code = code
        self.node_globals = dict(node_globals, dispynode_shutdown=shutdown,
                                 dispynode_logger=logging.getLogger('dispynode'))
        self.dest_path = dest_path
        self.loaded = None

    def setup(self, setup_args: bytes) -> bytes:
        import cloudpickle  # the node imports it only when --unsafe_setup is used

        from .computation import load
        with _cwd(self.dest_path):
            try:
                self.loaded = load(self.code, self.dest_path, self.node_globals,
                                   own_process=False)
                ns = self.loaded.ns.__dict__
                if self.loaded.setup is None:
                    return b''
                before = {name: id(value) for name, value in ns.items()}
                args = pickle.loads(setup_args) if setup_args else ()
                ret = self.loaded.setup(*args)
            except BaseException:  # noqa: BLE001 - user code: any failure is reported
                raise ComputationError(f'setup failed:\n{traceback.format_exc()}') from None
        if ret not in (0, 1, 2):
            raise ComputationError(f'setup failed: it returned {ret!r}; it must return 0, '
                                   '1 or 2')
        made = {name: value for name, value in ns.items()
                if not name.startswith('__') and before.get(name) != id(value)}
        try:
            return cloudpickle.dumps(made, protocol=5)
        except Exception as exc:  # noqa: BLE001 - any unpicklable global
            raise ComputationError(f'setup\'s globals cannot be handed to the jobs\' '
                                   f'process: {exc}') from None

    def cleanup(self) -> str:
        if self.loaded is None or self.loaded.cleanup is None:
            return ''
        with _cwd(self.dest_path):
            try:
                self.loaded.cleanup()
            except BaseException:  # noqa: BLE001 - reported to the node's log
                return traceback.format_exc()
        return ''


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _cwd(path: str):
    """Run in ``path``: the node process has one working directory, so one at a time."""
    with _CWD_LOCK:
        old = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(old)
