"""The recover file of a JobCluster, and ``recover_jobs`` after the client crashed.

::

    JobCluster ──append──> recover file (persistence.journal: nodes, jobs, dispatches)
                                 │ client killed
                                 v
    recover_jobs() ── read ──> per node: connect, Attach(comp_id)
                                 │   <── Attached (running, kept) + kept replies
                                 │   wait for the running ones (timeout)
                                 └── CloseComputation: the node is free again

The file holds no secret: only a salted check value, so ``recover_jobs`` can say
clearly that the ``secret`` it was given is not the cluster's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import threading
import time
from typing import Any

import cloudpickle

from .. import config
from ..driver.engine import decode_reply
from ..errors import DispyError
from ..job import DispyJob
from ..persistence.journal import (
    PendingJob,
    RecoverFileError,
    RecoverJournal,
    RecoverState,
    default_recover_path,
    latest_recover_file,
    read_journal,
)
from ..protocol import messages as m
from ..security.tls import maybe_client_context
from ..status import JobStatus
from ..transport.connection import Connection, connect

log = logging.getLogger('dispylike')

#: After terminate_pending cancels jobs, how long to wait for the nodes to confirm.
CANCEL_WAIT = 10.0


def _secret_check(secret: str, salt: bytes) -> bytes:
    return hmac.new(secret.encode(), b'dispylike recover file' + salt, hashlib.sha256).digest()


def open_recover_file(path: str | None, *, comp_id: str, name: str, client_name: str,
                      secret: str, tls_files: tuple[str, str, str]
                      ) -> tuple[str, RecoverJournal | None]:
    """Create the cluster's recover file (mode 0600).  ``path`` None: ``_dispy_<time>``
    here, or no file (with a warning) if this directory is not writable.  An explicit
    path that exists is an error (it holds the jobs of a run that did not end), as is
    one that cannot be created."""
    if path is None:
        journal = _create_default()
        if journal is None:
            return '', None
    elif os.path.exists(path):
        raise RecoverFileError(f'recover file {path!r} exists (a run that did not end '
                               'cleanly?): recover_jobs() it, or remove it')
    else:
        journal = RecoverJournal.create(path)   # the program asked for it: errors are raised
    salt = os.urandom(16)
    journal.cluster({'comp_id': comp_id, 'name': name, 'client_name': client_name,
                     'created': time.time(), 'salt': salt,
                     'secret_check': _secret_check(secret, salt), 'tls_files': tls_files,
                     'msg_timeout': config.MsgTimeout})
    journal.flush(sync=True)
    return journal.path, journal


def _create_default() -> RecoverJournal | None:
    base = default_recover_path()
    for suffix in ['', *(f'.{n}' for n in range(1, 100))]:   # clusters made in one second
        try:
            return RecoverJournal.create(base + suffix)
        except RecoverFileError as exc:
            if not os.path.exists(base + suffix):       # not writable here: go on without
                log.warning('no recover file: %s', exc)
                return None
    return None


def recover_jobs(recover_file: str | None = None, timeout: float | None = None,
                 terminate_pending: bool = False, secret: str = '',
                 certfile: str | None = None, keyfile: str | None = None,
                 cafile: str | None = None) -> list[DispyJob]:
    """Fetch the results of the jobs a crashed client left on its nodes (dispy's API).

    ``recover_file`` None: the newest ``_dispy_*`` file here.  Waits for running jobs
    up to ``timeout`` seconds (None: until they end); ``terminate_pending`` kills the
    ones still running then.  Returns a DispyJob for every job the client had not seen
    end, with ``id``, ``args`` and ``kwargs`` as submitted (None if they took more
    than 1 MiB serialised: the file does not keep those): Finished/Terminated/
    Cancelled with the node's result, Running if still running after ``timeout``,
    Abandoned (``exception`` says why) if it cannot be recovered.  Nodes are released
    once none of their jobs is left running.  ``secret`` (and TLS files, by default
    those the cluster used) must be the cluster's: the file does not keep the secret.
    """
    path = recover_file or latest_recover_file('.')
    state = read_journal(path)
    meta = state.meta
    if not meta.get('comp_id'):
        raise RecoverFileError(f'recover file {path!r} has no cluster record')
    if not hmac.compare_digest(_secret_check(secret, meta.get('salt', b'')),
                               meta.get('secret_check', b'')):
        raise DispyError(f'the secret given is not the one the cluster of {path!r} used: '
                         'pass secret=... to recover_jobs')
    tls = meta.get('tls_files', ('', '', ''))
    ssl_context = maybe_client_context(certfile or tls[0] or None, keyfile or tls[1] or None,
                                       cafile or tls[2] or None)
    jobs = {uid: _restored(pending) for uid, pending in state.jobs.items()}
    log.info('recovering %d job(s) of "%s" from %s', len(jobs), meta.get('name', '?'), path)
    result: dict[int, Any] = {}

    def run() -> None:
        try:
            asyncio.run(_recover(state, jobs, secret, ssl_context, timeout, terminate_pending))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            result['error'] = exc
    thread = threading.Thread(target=run, name='dispylike-recover')   # any caller's loop
    thread.start()
    thread.join()
    if 'error' in result:
        raise result['error']
    return [jobs[uid] for uid in sorted(jobs)]


def _restored(pending: PendingJob) -> DispyJob:
    args = kwargs = None
    if pending.args_blob:   # b'': too large to be kept in the file
        try:
            value = cloudpickle.loads(pending.args_blob)
            args, kwargs = value[0], value[1]
        except Exception as exc:  # noqa: BLE001 - classes of the crashed program may be missing
            log.warning('arguments of job %r cannot be restored: %r', pending.job_id, exc)
    job = DispyJob(pending.uid, args, kwargs, None, threading.Lock())
    job.id = pending.job_id
    if pending.node_key is None:
        _end(job, JobStatus.Abandoned, 'it was never sent to a node before the client ended')
    else:
        job.status = JobStatus.Running
    return job


def _end(job: DispyJob, status: JobStatus, reason: str, result: Any = None,
         stdout: str | None = None, stderr: str | None = None) -> None:
    job._finish(status, result, stdout, stderr, reason, time.time())


async def _recover(state: RecoverState, jobs: dict[int, DispyJob], secret: str,
                   ssl_context: Any, timeout: float | None, terminate: bool) -> None:
    by_node: dict[str, dict[int, PendingJob]] = {}
    for uid, pending in state.jobs.items():
        if pending.node_key is not None:
            by_node.setdefault(pending.node_key, {})[uid] = pending
    deadline = None if timeout is None else time.monotonic() + timeout
    tasks = [_recover_node(state, key, pendings, jobs, secret, ssl_context, deadline, terminate)
             for key, pendings in by_node.items()]
    if tasks:
        await asyncio.gather(*tasks)


async def _recover_node(state: RecoverState, key: str, pendings: dict[int, PendingJob],
                        jobs: dict[int, DispyJob], secret: str, ssl_context: Any,
                        deadline: float | None, terminate: bool) -> None:
    record = state.nodes.get(key)
    comp_id = state.meta['comp_id']
    msg_timeout = state.meta.get('msg_timeout', config.MsgTimeout)

    def abandon(uids, why: str) -> None:
        for uid in uids:
            if not jobs[uid].done:
                _end(jobs[uid], JobStatus.Abandoned, why)

    if record is None:
        abandon(pendings, f'node {key} is not in the recover file')
        return
    try:
        conn = await connect(record.host, record.port, secret, timeout=msg_timeout,
                             ssl_context=ssl_context)
    except DispyError as exc:
        abandon(pendings, f'node {record.name} ({key}) cannot be reached: {exc}')
        return
    try:
        conn.send(m.Attach(comp_id))
        reply = await asyncio.wait_for(conn.recv(), msg_timeout)
        if not isinstance(reply, m.Attached) or not reply.ok:
            why = reply.reason if isinstance(reply, m.Attached) else 'bad reply'
            abandon(pendings, f'node {record.name} ({key}) no longer has the computation '
                              f'({why}); its results are lost')
            return
        running = {uid for uid, attempt in reply.running
                   if uid in pendings and pendings[uid].attempt == attempt}
        waiting = await _collect(conn, pendings, jobs, record.host, reply.kept, running,
                                 deadline)
        if waiting and terminate:
            for uid in waiting:
                conn.send(m.CancelJob(uid, pendings[uid].attempt))
            waiting = await _collect(conn, pendings, jobs, record.host, 0, waiting,
                                     time.monotonic() + CANCEL_WAIT)
            abandon(waiting, 'terminated by recover_jobs(terminate_pending=True)')
            waiting = set()
        if not waiting:     # nothing of ours left there: release the node
            conn.send(m.CloseComputation(comp_id, True))
            await _until(conn, m.ComputationClosed, msg_timeout * 3)
    except (DispyError, OSError, asyncio.TimeoutError) as exc:
        abandon(pendings, f'recovery from node {key} failed: {exc}')
    finally:
        conn.abort()


async def _collect(conn: Connection, pendings: dict[int, PendingJob], jobs: dict[int, DispyJob],
                   host: str, kept: int, running: set[int], deadline: float | None) -> set[int]:
    """Read ``kept`` replies, then replies for ``running`` jobs until all ended or the
    deadline.  Jobs neither kept nor running are lost: abandoned.  Returns the uids
    still running."""
    waiting = set(running)
    lost = set(pendings) - running
    while kept > 0 or waiting:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0 and kept <= 0:
            break
        try:
            msg = await asyncio.wait_for(conn.recv(), left if kept <= 0 else 30)
        except asyncio.TimeoutError:
            break
        if not isinstance(msg, m.JobReplies):
            continue
        acks = []
        for uid, attempt, status, start, _end_time, payload in msg.replies:
            acks.append((uid, attempt))
            kept -= 1
            pending = pendings.get(uid)
            if pending is None or pending.attempt != attempt or jobs[uid].done:
                continue
            result, stdout, stderr, exc = decode_reply(payload)
            job = jobs[uid]
            job.ip_addr, job.start_time = host, start or None
            _end(job, JobStatus(status), exc, result, stdout, stderr)
            job.end_time = _end_time or job.end_time
            waiting.discard(uid)
            lost.discard(uid)
        conn.send(m.AckReplies(tuple(acks)))
    for uid in lost:
        if not jobs[uid].done:
            _end(jobs[uid], JobStatus.Abandoned, 'the node has no record of it: it was lost '
                                                  'before it could run (node restarted?)')
    return waiting


async def _until(conn: Connection, kind: type, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(conn.recv(), max(0.1, deadline - time.monotonic()))
        if isinstance(msg, kind):
            return
