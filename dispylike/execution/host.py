"""Node-side owner of one computation process (see :mod:`.zygote` for the diagram).

:class:`ComputationHost` starts the zygote, loads the computation into it,
asks it to run jobs and collects each job's outcome: the result a job sends
over the job socket, and its exit reported by the zygote.  A job that exits
without a result (crash, ``os._exit``, a signal) becomes Terminated with a
message that says how it died.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import pickle
import socket
import sys
from dataclasses import dataclass, field

from ..errors import ComputationError, ProtocolError
from ..protocol.frames import FrameDecoder
from ..status import JobStatus
from . import channel
from .processes import describe_wait_status

log = logging.getLogger('dispylike.node')

#: How long a job that exited normally may take to hand over its result.
RESULT_GRACE = 5.0


@dataclass(slots=True)
class JobOutcome:
    status: JobStatus
    start_time: float
    end_time: float
    payload: bytes
    cpu_time: float = 0.0


def failure_payload(message: str) -> bytes:
    """A reply payload (result, stdout, stderr, exception) made by the node itself."""
    return pickle.dumps((None, '', '', message), protocol=5)


@dataclass
class _Run:
    uid: int
    attempt: int
    future: asyncio.Future
    pid: int = 0
    result: tuple | None = None
    exit_status: int | None = None
    cpu_time: float = 0.0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ComputationHost:
    """One computation's process on this node.  Use :meth:`start`, :meth:`run`, :meth:`close`."""

    def __init__(self, comp_id: str, name: str, dest_path: str, run_dir: str) -> None:
        self.comp_id = comp_id
        self.name = name
        self.dest_path = dest_path
        self.sock_path = os.path.join(run_dir, f'{comp_id[:12]}.sock')
        self.token = os.urandom(32)
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._job_server: asyncio.base_events.Server | None = None
        self._runs: dict[int, _Run] = {}
        self._ready: asyncio.Future | None = None
        self._closed_fut: asyncio.Future | None = None
        self.broken = ''

    # --- lifecycle --------------------------------------------------------------
    async def start(self, code: bytes, node_globals: dict, setup_args: bytes = b'',
                    timeout: float | None = None) -> None:
        """Start the process, load the computation, run setup; ComputationError on failure."""
        loop = asyncio.get_running_loop()
        self._job_server = await asyncio.start_unix_server(self._on_job, path=self.sock_path)
        os.chmod(self.sock_path, 0o600)
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, '-m', 'dispylike.execution.zygote', str(child.fileno()),
                pass_fds=(child.fileno(),), cwd=self.dest_path, stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._ready = loop.create_future()
        self._closed_fut = loop.create_future()
        self._reader_task = loop.create_task(self._read_ctl(reader))
        self._send('load', code, self.dest_path, node_globals, self.sock_path, self.token,
                   setup_args)
        try:
            error = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            error = f'setup did not finish within {timeout} s'
        if error:
            await self.close(run_cleanup=False)
            raise ComputationError(error)

    async def close(self, run_cleanup: bool, timeout: float = 30.0) -> str:
        """Kill remaining jobs, run cleanup (if asked), stop the process.  Returns cleanup error."""
        error = ''
        if self._proc is not None and self._proc.returncode is None and not self.broken:
            try:
                self._send('close', run_cleanup)
                error = await asyncio.wait_for(asyncio.shield(self._closed_fut), timeout)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                error = 'cleanup did not finish in time'
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._fail_all('the computation was closed on the node')
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._job_server is not None:
            self._job_server.close()
            self._job_server = None
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        return error or ''

    # --- jobs -------------------------------------------------------------------
    def run(self, uid: int, attempt: int, payload: bytes) -> asyncio.Future:
        """Start a job; the future resolves to a :class:`JobOutcome` (never raises)."""
        fut = asyncio.get_running_loop().create_future()
        if self.broken:
            fut.set_result(JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                                      failure_payload(self.broken)))
            return fut
        self._runs[uid] = _Run(uid, attempt, fut)
        self._send('run', uid, attempt, payload)
        return fut

    def cancel(self, uid: int, grace: float = 5.0) -> None:
        if uid in self._runs and not self.broken:
            self._send('cancel', uid, grace)

    @property
    def running(self) -> int:
        return len(self._runs)

    # --- internals --------------------------------------------------------------
    def _send(self, *fields) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError('computation process is gone')
        self._writer.writelines(channel.pack(*fields))

    async def _read_ctl(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(message_cap=1 << 24)
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for msg in decoder.feed(data):
                    self._on_ctl(channel.unpack(msg))
        except (ProtocolError, ConnectionError) as exc:
            log.error('computation %s: bad message from its process: %s', self.name, exc)
        finally:
            self.broken = self.broken or 'the computation process exited'
            if self._ready is not None and not self._ready.done():
                self._ready.set_result('the computation process exited during setup')
            if self._closed_fut is not None and not self._closed_fut.done():
                self._closed_fut.set_result('')
            self._fail_all('the computation process died')

    def _on_ctl(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == 'exited' and len(msg) == 5:
            self._on_exit(*msg[1:])
        elif kind == 'started' and len(msg) == 4:
            run = self._runs.get(msg[1])
            if run is not None:
                run.pid = msg[3]
        elif kind in ('ready', 'failed') and len(msg) == 2:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result('' if kind == 'ready' else f'setup failed:\n{msg[1]}')
        elif kind == 'closed' and len(msg) == 2:
            if self._closed_fut is not None and not self._closed_fut.done():
                self._closed_fut.set_result(str(msg[1]))
        else:
            raise ProtocolError(f'unknown message {kind!r}')

    def _on_exit(self, uid: int, attempt: int, status: int, cpu_time: float) -> None:
        run = self._runs.get(uid)
        if run is None or run.attempt != attempt:
            return
        run.exit_status, run.cpu_time = status, float(cpu_time)
        if run.result is not None:
            self._complete(run)
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            run.timer = asyncio.get_running_loop().call_later(RESULT_GRACE, self._complete, run)
        else:
            self._complete(run)

    async def _on_job(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(message_cap=channel.INTERNAL_MESSAGE_CAP)
        run: _Run | None = None
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                for msg in decoder.feed(data):
                    fields = channel.unpack(msg)
                    if run is None:
                        run = self._job_hello(fields)
                    elif fields[0] == 'result' and len(fields) == 5:
                        run.result = fields[1:]
        except (ProtocolError, ConnectionError, ValueError) as exc:
            log.warning('computation %s: bad job channel: %s', self.name, exc)
        finally:
            writer.close()
        if run is not None and run.result is not None and run.exit_status is not None:
            self._complete(run)

    def _job_hello(self, fields: tuple) -> _Run:
        if (fields[0] != 'hello' or len(fields) != 4 or not isinstance(fields[1], bytes)
                or not hmac.compare_digest(fields[1], self.token)):
            raise ProtocolError('job channel without a valid token')
        run = self._runs.get(fields[2])
        if run is None or run.attempt != fields[3]:
            raise ProtocolError(f'job channel for unknown job {fields[2]}')
        return run

    def _complete(self, run: _Run) -> None:
        if run.future.done():
            return
        if run.timer is not None:
            run.timer.cancel()
        self._runs.pop(run.uid, None)
        if run.result is not None:
            status, start, end, payload = run.result
            try:
                outcome = JobOutcome(JobStatus(status), float(start), float(end), payload,
                                     run.cpu_time)
            except (ValueError, TypeError):
                outcome = JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                                     failure_payload('malformed result from the job process'))
        else:
            how = describe_wait_status(run.exit_status) if run.exit_status is not None \
                else 'lost'
            outcome = JobOutcome(JobStatus.Terminated, 0.0, 0.0, failure_payload(
                f'job process {run.pid or "?"} ended without a result ({how})'), run.cpu_time)
        run.future.set_result(outcome)

    def _fail_all(self, reason: str) -> None:
        for run in list(self._runs.values()):
            if run.result is not None:
                self._complete(run)
            else:
                self._fail(run, reason)

    def _fail(self, run: _Run, reason: str) -> None:
        self._runs.pop(run.uid, None)
        if not run.future.done():
            run.future.set_result(JobOutcome(JobStatus.Terminated, 0.0, 0.0,
                                             failure_payload(reason)))
