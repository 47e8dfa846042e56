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
import os
import pickle
import select
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

import cloudpickle

from .. import config
from ..protocol.plain import Pieces
from ..status import JobStatus
from . import channel, xfer
from .computation import JobDepends, Loaded, rebind
from .staging import FileSink

if TYPE_CHECKING:
    import mmap

READ_SIZE = 1 << 20
#: Below this a message is joined into one buffer: one system call each way.
SMALL = 1 << 16
_LENGTH_SIZE = channel.LENGTH.size
_unpack_length = channel.LENGTH.unpack_from
_pack_head = channel.RESULT_HEADER.pack
_pack_record = channel.RECORD.pack
_loads, _dumps, _getsizeof = pickle.loads, pickle.dumps, sys.getsizeof
_StringIO, _time, _write = io.StringIO, time.time, os.write
_job_wfd = -1  # this job process's result pipe (for the senders below)
_xfer_dir = ''  # where large results go as files ('' : through the pipe)
_xfer_count = 0


def set_transfer_dir(path: str) -> None:
    """Large results of job processes forked from now on go to files in ``path``."""
    global _xfer_dir
    _xfer_dir = path


#: Status values written in a RESULT header (plain ints: an enum member is one more
#: object a job process would touch).
_FINISHED, _TERMINATED = int(JobStatus.Finished), int(JobStatus.Terminated)
#: A result whose own size (``sys.getsizeof``) is at least this is pickled as pieces
#: (:class:`Pieces`), so that a large bytes object or array in it is not copied;
#: smaller ones with ``pickle.dumps``, which touches fewer objects.  (A container of
#: large objects still pickles right, with one more copy.)
PIECES_MIN = 1 << 16


def _run_program(loaded: Loaded, args: tuple, out: io.StringIO, err: io.StringIO) -> int:
    """A program computation: run it with the job's arguments; its exit status is the
    result and its output the job's."""
    import subprocess  # programs only (imported ahead by Zygote.do_load)
    proc = subprocess.run([os.path.join('.', loaded.program), *args], check=False,
                          capture_output=True, text=True, errors='replace')
    out.write(proc.stdout)
    err.write(proc.stderr)
    return proc.returncode


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


def _serialize_reply(reply: tuple, status: int) -> tuple[int, list]:
    """The reply pickled as pieces (``messages.Pieces``), for a large result (a large
    bytes object in it is one of the pieces, not copied) or one that plain pickle
    refuses (then cloudpickle); a result neither can pickle becomes the reason."""
    for pickler in (pickle.Pickler, cloudpickle.CloudPickler):  # plain first: faster
        out = Pieces()
        try:
            pickler(out, protocol=5).dump(reply)
            return status, out.parts
        except Exception as exc:  # noqa: BLE001 - any failure means: unpicklable result
            error = exc
    msg = (f'the result could not be serialised ({type(error).__name__}: {error}); '
           'return picklable data (or save it to a file)')
    return _TERMINATED, [pickle.dumps((None, reply[1], reply[2], msg), protocol=5)]


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
    return _take_file(payload) if by_file else payload


def _take_file(name: bytes) -> mmap.mmap | None:
    """The arguments in the transfer file ``name`` (mapped; the file is removed), or
    None if it cannot be read."""
    try:
        return xfer.take_mapped(name.decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _run_one(loaded: Loaded, payload: bytes | mmap.mmap, wfd: int) -> None:
    """Run one job (its arguments in ``payload``) and write its RESULT record to ``wfd``:
    its status, start and end times, and the pickled (result, stdout, stderr,
    exception text).

    The usual path is this one frame, the rare ones (a job's own depends, a program,
    a large or cloudpickle-only result) helpers.  In a fork-per-job process every
    object touched here is shared with the computation process and each page written
    costs a copy-on-write fault: the path that called a helper per step took ~100 more
    faults per job (0.3-0.4 ms of CPU on the VM of docs/PERFORMANCE.md)."""
    start = _time()
    out, err = _StringIO(), _StringIO()
    saved_out, saved_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    status, result, exception = _FINISHED, None, None
    installed: list[str] | tuple = ()
    names: dict[str, Any] | None = None
    try:
        job = _loads(payload)   # (args, kwargs) or (args, kwargs, the job's own depends)
        if len(job) > 2:
            names = {}
            installed = install_job_depends(loaded, job[2], names)
        if loaded.func is None:
            result = _run_program(loaded, job[0], out, err)
        else:
            result = loaded.func(*job[0], **job[1])
    except BaseException:  # noqa: BLE001 - the job's own failure is its result
        status, result, exception = _TERMINATED, None, traceback.format_exc()
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        if names is not None:   # a job's own depends go with it, whatever cleanup says
            _uninstall(loaded, installed, names)
        close = getattr(payload, 'close', None)   # a mapped argument file (a warm
        if close is not None:                     # worker runs on: unmap it now)
            close()
    reply = (result, out.getvalue(), err.getvalue(), exception)
    parts = None
    try:
        if _getsizeof(result) < PIECES_MIN:
            parts = [_dumps(reply, 5)]
    except Exception:  # noqa: BLE001 - not plain-picklable: the helper says why
        pass
    if parts is None:
        status, parts = _serialize_reply(reply, status)
    size = len(parts[0]) if len(parts) == 1 else sum(len(part) for part in parts)
    head = _pack_head(status, start, _time(), size)
    if size >= xfer.XFER_MIN and _xfer_dir and _result_to_file(head, parts, size, wfd):
        return
    record = _pack_record(channel.RESULT, len(head) + size)
    if size < SMALL:
        buf = b''.join((record, head, *parts))   # one write for a small result
        done = _write(wfd, buf)
        if done < len(buf):
            write_all(wfd, memoryview(buf)[done:])
    else:
        widen_pipe(wfd, size)
        write_all(wfd, record + head)
        for part in parts:
            write_all(wfd, part)


def _uninstall(loaded: Loaded, installed: list[str] | tuple, names: dict[str, Any]) -> None:
    """Undo :func:`install_job_depends` after the job: remove its files and put its
    names back (a warm worker runs more jobs)."""
    for path in installed:
        with contextlib.suppress(OSError):
            os.unlink(path)
    _restore_names(loaded.ns.__dict__, names)


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


def _next_job(fd: int, pending: bytearray) -> tuple[int, bytes] | None:
    """A warm worker's next job from its argument pipe: (LENGTH word, payload), None at
    end of file.  The pipe may hold a second job (written ahead): ``pending`` keeps
    what was read beyond the first."""
    while len(pending) < _LENGTH_SIZE:
        data = os.read(fd, SMALL)
        if not data:
            return None
        pending += data
    (length,) = _unpack_length(pending)
    end = _LENGTH_SIZE + (length & ~(channel.BY_FILE | channel.AHEAD))
    if len(pending) >= end:
        payload = bytes(pending[_LENGTH_SIZE:end])
        del pending[:end]
    else:   # a large job: the rest, and no more, straight from the pipe
        have = bytes(pending[_LENGTH_SIZE:])
        pending.clear()
        rest = _read_exactly(fd, end - _LENGTH_SIZE - len(have))
        if rest is None:
            return None
        payload = have + rest
    return length, payload


def _passes_gate(gate: int) -> bool:
    """Take a job-written-ahead's token from the gate pipe: True for GO (run it), False
    for SKIP (the computation process took it back: cancelled, or put back in line).
    The pipe is non-blocking: empty only while GO is being swapped for SKIP."""
    while True:
        try:
            return os.read(gate, 1) == channel.GO
        except BlockingIOError:
            select.select([gate], [], [])


def serve_jobs(loaded: Loaded | None, afd: int, wfd: int, gate: int = -1) -> int:
    """Body of a warm worker: run jobs from ``afd`` one after another, each result a
    RESULT record on ``wfd``, until ``afd`` ends.  A job written ahead (while the one
    before ran: :data:`.channel.AHEAD`) runs only if its token in ``gate`` says GO.  A
    job's changes to globals stay for the next (as in any process pool); its working
    directory, its own depends and its stdout/stderr capture do not.  Returns the
    exit code."""
    global _job_wfd
    if loaded is None:
        return 71
    _job_wfd = wfd
    home = os.getcwd()
    pending = bytearray()
    while True:
        job = _next_job(afd, pending)
        if job is None:
            return 0
        length, payload = job
        if length & channel.AHEAD and not _passes_gate(gate):
            continue
        if length & channel.BY_FILE:
            payload = _take_file(payload)
            if payload is None:
                return 0   # as a fork-per-job process does with an unreadable transfer file
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
