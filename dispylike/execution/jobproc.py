"""What runs inside a job process: read a job's arguments, run it, write its result.

A job process is forked from the computation process (:mod:`.zygote`) and
talks to it over two pipes (layout in :mod:`.channel`): arguments come in on
one as LENGTH + payload, the result goes out on the other as records.  Two
bodies share the code here:

* :func:`run_job` - dispy's contract: one job, then the process exits.
* :func:`serve_jobs` - a *warm worker* (``JobCluster(warm_workers=True)``):
  jobs one after another until the argument pipe ends; each job's RESULT
  record tells the computation process that it is done.

Every object touched here is shared with the computation process, and each
page written costs a copy-on-write fault, so the paths stay short.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import mmap
import os
import pickle
import subprocess
import sys
import time
import traceback
from typing import Any

import cloudpickle

from .. import config
from ..protocol.messages import Pieces
from ..status import JobStatus
from . import channel, xfer
from .computation import JobDepends, Loaded, rebind
from .staging import FileSink

READ_SIZE = 1 << 20
#: Below this a message is joined into one buffer: one system call each way.
SMALL = 1 << 16
_LENGTH_SIZE = channel.LENGTH.size
_unpack_length = channel.LENGTH.unpack_from
_job_wfd = -1  # this job process's result pipe (for the senders below)
_xfer_dir = ''  # where large results go as files ('' : through the pipe)
_xfer_count = 0


def set_transfer_dir(path: str) -> None:
    """Large results of job processes forked from now on go to files in ``path``."""
    global _xfer_dir
    _xfer_dir = path


def _capture_run(loaded: Loaded, payload: bytes | mmap.mmap,
                 ) -> tuple[Any, str, str, str | None, JobStatus]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    result: Any = None
    exception = None
    status = JobStatus.Finished
    installed: list[str] = []
    restore: dict[str, Any] | None = None
    try:
        args, kwargs, *extras = pickle.loads(payload)
        if extras:
            restore = {}
            installed = install_job_depends(loaded, extras[0], restore)
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
        if restore is not None:  # and so do its names (a warm worker runs more jobs)
            _restore_names(loaded.ns.__dict__, restore)
    return result, out.getvalue(), err.getvalue(), exception, status


_ABSENT = object()


def install_job_depends(loaded: Loaded, deps: JobDepends,
                        saved: dict[str, Any] | None = None) -> list[str]:
    """Put a job's dispy_job_depends in place: files (confined to the job directory,
    the node's size limit applies), modules, functions and classes.  Returns the
    files written, for removal after the job; ``saved`` gets the names' former
    values (``_ABSENT`` for new ones) so they can be put back."""
    ns = loaded.ns.__dict__
    saved = {} if saved is None else saved
    limit = ns.get('_dispy_max_file_size', 0)
    written = []
    for relpath, data, mode in deps.files:
        sink = FileSink(os.getcwd(), relpath, limit)
        written.append(sink.path)
        sink.write(0, data)
        sink.finish(mode)
    for name in deps.modules:
        top = name.split('.')[0]
        saved.setdefault(top, ns.get(top, _ABSENT))
        ns[top] = importlib.import_module(top)
        importlib.import_module(name)
    for name, obj in deps.namespace.items():
        saved.setdefault(name, ns.get(name, _ABSENT))
        ns[name] = rebind(obj, ns)
    return written


def _restore_names(ns: dict, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        if value is _ABSENT:
            ns.pop(name, None)
        else:
            ns[name] = value


def _serialize_reply(result: Any, stdout: str, stderr: str, exception: str | None,
                     status: JobStatus) -> tuple[JobStatus, list]:
    """The reply pickled as pieces (``messages.Pieces``): a large bytes object in the
    result is one of them, not copied into the pickle."""
    reply = (result, stdout, stderr, exception)
    for pickler in (pickle.Pickler, cloudpickle.CloudPickler):  # plain first: faster
        out = Pieces()
        try:
            pickler(out, protocol=5).dump(reply)
            return status, out.parts
        except Exception as exc:  # noqa: BLE001 - any failure means: unpicklable result
            error = exc
    msg = (f'the result could not be serialised ({type(error).__name__}: {error}); '
           'return picklable data (or save it to a file)')
    return JobStatus.Terminated, [pickle.dumps((None, stdout, stderr, msg), protocol=5)]


#: Largest pipe buffer asked for (Linux's default limit for unprivileged processes).
PIPE_MAX = 1 << 20


def widen_pipe(fd: int, size: int) -> None:
    """Before a large write: a pipe holds 64 KiB by default, so 20 MB cross it in 320
    pieces, each a wake-up of the reader; with 1 MiB, in 20.  Best effort (the
    system may refuse: the per-user pipe budget)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(size, PIPE_MAX))
    except OSError:
        pass


def write_all(fd: int, buf: bytes | memoryview) -> None:
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


def _read_job(fd: int) -> bytes | None:
    """One job's arguments (None at end of file or if cut short).  The computation
    process writes a small job with one write, so it usually takes one read."""
    data = os.read(fd, SMALL)
    if len(data) < _LENGTH_SIZE:
        if not data:
            return None
        rest = _read_exactly(fd, _LENGTH_SIZE - len(data))
        if rest is None:
            return None
        data += rest
    (size,) = _unpack_length(data)
    by_file = size & channel.BY_FILE
    size &= ~channel.BY_FILE
    have = len(data) - _LENGTH_SIZE
    if have == size:
        payload = data[_LENGTH_SIZE:]
    elif have > size:
        return None  # more than one job at once: not what the computation process does
    else:
        rest = _read_exactly(fd, size - have)
        if rest is None:
            return None
        payload = data[_LENGTH_SIZE:] + rest
    if by_file:
        try:
            return xfer.take_mapped(payload.decode())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
    return payload


def _run_one(loaded: Loaded, payload: bytes | mmap.mmap, wfd: int) -> None:
    start = time.time()
    try:
        result, out, err, exc, status = _capture_run(loaded, payload)
    finally:
        if isinstance(payload, mmap.mmap):
            payload.close()   # a warm worker runs on: unmap the argument now
    status, parts = _serialize_reply(result, out, err, exc, status)
    size = sum(len(part) for part in parts)
    head = channel.RESULT_HEADER.pack(int(status), start, time.time(), size)
    if size >= xfer.XFER_MIN and _xfer_dir and _result_to_file(head, parts, size, wfd):
        return
    record = channel.RECORD.pack(channel.RESULT, len(head) + size)
    if size < SMALL:
        write_all(wfd, b''.join([record, head, *parts]))  # one write for a small result
    else:
        widen_pipe(wfd, size)
        write_all(wfd, record + head)
        for part in parts:
            write_all(wfd, part)


def _result_to_file(head: bytes, body: list, size: int, wfd: int) -> bool:
    """A large result goes to a transfer file (a spare one reused if there is one) and
    the record names it (False if the file cannot be written: it goes through the
    pipe then)."""
    global _xfer_count
    _xfer_count += 1
    name = f'{os.getpid()}-{_xfer_count}.out'
    try:
        xfer.put_reusing(_xfer_dir, name, body, size)
    except OSError:
        xfer.discard(os.path.join(_xfer_dir, name))
        return False
    tail = head + name.encode()
    write_all(wfd, channel.RECORD.pack(channel.RESULT_FILE, len(tail)) + tail)
    return True


class _Rehearsal:
    """A stand-in computation for :func:`rehearse`: runs nothing."""
    kind = 'function'
    ns = None

    @staticmethod
    def func(*args: Any, **kwargs: Any) -> None:
        return None


_REHEARSAL_ARGS = pickle.dumps(((0,), {}), protocol=5)
_REHEARSAL_JOB = channel.LENGTH.pack(len(_REHEARSAL_ARGS)) + _REHEARSAL_ARGS


def rehearse() -> None:
    """Go through a job's path (read its arguments from a pipe, run, pickle the reply,
    write it to a pipe) with a job that does nothing, on a pipe of its own, so the
    pages that path writes are copied now: a fresh fork shares every page with the
    computation process, and each one first written costs a copy-on-write fault
    (~250 for a trivial job) that would otherwise be paid while the client waits.
    Only for spares forked while no job waits: on a busy node it is extra work."""
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return
    try:
        os.write(wfd, _REHEARSAL_JOB)
        payload = _read_job(rfd)
        if payload is not None:
            _run_one(_Rehearsal, payload, wfd)
    except Exception:  # noqa: BLE001 - a rehearsal must never cost the job itself
        pass
    finally:
        os.close(rfd)
        os.close(wfd)


def run_job(loaded: Loaded | None, afd: int, wfd: int, rehearsal: bool = False) -> int:
    """Body of a fork-per-job process: wait for its arguments on ``afd`` (after a
    :func:`rehearse` if ``rehearsal``), run, write the result to ``wfd``.  Returns
    the exit code."""
    global _job_wfd
    if rehearsal and loaded is not None:
        rehearse()
    payload = _read_job(afd)
    os.close(afd)
    if payload is None or loaded is None:
        return 71  # a spare that was never used, or a node that never loaded
    _job_wfd = wfd  # for dispy_provisional_result and dispy_send_file
    _run_one(loaded, payload, wfd)
    os.close(wfd)
    return 0


def serve_jobs(loaded: Loaded | None, afd: int, wfd: int) -> int:
    """Body of a warm worker: run jobs from ``afd`` one after another, each result a
    RESULT record on ``wfd``, until ``afd`` ends.  A job's changes to globals stay
    for the next (as in any process pool); its working directory, its own depends
    and its stdout/stderr capture do not.  Returns the exit code."""
    global _job_wfd
    if loaded is None:
        return 71
    _job_wfd = wfd
    home = os.getcwd()
    while True:
        payload = _read_job(afd)
        if payload is None:
            return 0
        _run_one(loaded, payload, wfd)
        if os.getcwd() != home:
            os.chdir(home)


def file_sender(ns: dict):
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
        write_all(_job_wfd, channel.RECORD.pack(channel.FILE, len(head) + len(data)))
        write_all(_job_wfd, head)
        write_all(_job_wfd, data)
        return 0
    return dispy_send_file


def provisional_sender():
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
        write_all(_job_wfd, channel.RECORD.pack(channel.PROVISIONAL, len(body)))
        write_all(_job_wfd, body)
        return 0
    return dispy_provisional_result
