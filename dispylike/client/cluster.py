"""JobCluster: dispy's synchronous API over the asyncio engine."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import config
from ..driver.engine import Engine, EngineConfig
from ..errors import ClusterClosed
from ..execution.computation import job_depends, package
from ..job import DispyJob
from ..log import setup_logging
from ..nodes import DispyNode, node_spec
from ..protocol.payload import dumps_payload
from ..security.tls import maybe_client_context
from .callbacks import CallbackRunner
from .loopthread import LoopThread
from .recover import open_recover_file
from .status import format_status

log = logging.getLogger('dispylike')


class JobCluster:
    """Run ``computation`` on dispynode daemons.  dispy's arguments and meaning.

    ``recover_file``: the journal :func:`dispylike.recover_jobs` reads after a
    crash (default ``_dispy_YYYYMMDDHHMMSS`` here; an existing explicit path is an
    error; removed at a clean close).  ``self.recover_file`` is its path ('' if it
    could not be created).

    ``submit(..., dispy_job_depends=[...])`` gives one job its own files,
    modules, functions and classes, removed after it (the keyword never reaches
    the computation).  Jobs can call
    ``dispy_provisional_result(result)`` (the job's status becomes
    ProvisionalResult, ``job.result`` is set and ``job_status`` is called, each
    time) and ``dispy_send_file(path)`` (saved under the client's working
    directory at the same relative path).

    ``pulse_interval`` (1-600 s): nodes and client pulse each other; a node silent
    for 5 intervals is a zombie: its jobs are rescheduled (``reentrant=True``) or
    abandoned, and the client keeps dialling it until it is back.  A node whose
    client is silent that long ends the client's session and frees itself.

    ``nodes=None`` (or ``'*'``, or entries with ``*`` wildcards) finds nodes by
    UDP: IPv4 broadcast, IPv4 multicast with ``ipv4_udp_multicast=True``, IPv6
    multicast when ``host`` is an IPv6 address; ``ping_interval`` probes again
    periodically.  Listed host names and addresses are dialled directly.

    ``certfile``/``keyfile``: TLS (1.2 or newer) to every node, which must be
    started with the same certificate (``dispynode --certfile``); ``cafile``
    (an extension) names the CA that node certificates must chain to, by
    default the certificate itself.  The secret handshake still runs inside TLS.

    ``warm_workers=True`` (an extension): on each node a job process runs this
    computation's jobs one after another instead of a fresh process per job
    (dispy's way), which costs far less per job.  Each job still runs in a
    process of its own, apart from the node; cancelling a job kills its process
    (SIGINT, then the process group after the node's grace time) and a crash
    fails only that job; a fresh process takes the place of either.  What a job
    leaves behind stays for the next jobs of that process: globals it changed,
    modules it imported, processes it started in the background (killed with the
    process).  Its working directory, its ``dispy_job_depends`` and its
    stdout/stderr capture do not carry over.  Provisional results and
    ``dispy_send_file`` work as usual.

    ``nodes`` entries: host names, IP addresses, ``(host, port)`` tuples,
    :class:`NodeAllocate` objects, and :class:`LocalNode` for an embedded
    node that the cluster starts on 127.0.0.1 and stops at close.

    The client only dials out to nodes (one authenticated TCP connection each,
    used both ways), so it needs no inbound port: ``host`` is the source address
    for those connections (the first one, if a list), and ``ext_host`` is
    accepted for compatibility.  ``dest_path`` is relative to each node's
    ``--dest_path_prefix``.
    """

    _ids = itertools.count(1)

    def __init__(self, computation: Callable | str, nodes: Any = None, depends: list = (),
                 job_status: Callable | None = None, cluster_status: Callable | None = None,
                 host: str | list | None = None, ext_host: str | list | None = None,
                 dispy_port: int | None = None, ipv4_udp_multicast: bool = False,
                 dest_path: str | None = None, loglevel: int = logging.INFO,
                 setup: Callable | None = None, cleanup: Any = True,
                 ping_interval: float | None = None, pulse_interval: float | None = None,
                 reentrant: bool = False, secret: str = '', keyfile: str | None = None,
                 certfile: str | None = None, recover_file: str | None = None,
                 cafile: str | None = None, warm_workers: bool = False) -> None:
        if pulse_interval is not None and not 1 <= pulse_interval <= 600:
            raise ValueError('pulse_interval must be between 1 and 600 seconds')
        specs = self._prepare(computation, nodes, depends, setup, cleanup, job_status,
                              cluster_status, loglevel, warm_workers)
        addresses = list(host) if isinstance(host, (list, tuple)) else [host] if host else []
        host = addresses[0] if addresses else None
        comp_id, client_name = uuid.uuid4().hex, f'{socket.gethostname()}:{os.getpid()}'
        tls_files = tuple(os.path.abspath(f) if f else '' for f in (certfile, keyfile, cafile))
        self.recover_file, journal = open_recover_file(
            recover_file, comp_id=comp_id, name=self.name, client_name=client_name,
            secret=secret or '', tls_files=tls_files)
        cfg = EngineConfig(comp_id=comp_id, package=self._package, client_name=client_name,
                           secret=secret or '', dest_path=(dest_path or '').strip('/'),
                           local_addr=host if len(addresses) == 1 else None,
                           client_addresses=addresses,
                           ipv4_multicast=bool(ipv4_udp_multicast),
                           ping_interval=ping_interval,
                           pulse_interval=float(pulse_interval or 0.0),
                           ssl_context=maybe_client_context(certfile, keyfile, cafile),
                           tls_files=tls_files, journal=journal,
                           remove_files=cleanup is not False, reentrant=bool(reentrant),
                           dispy_port=dispy_port or config.DispyPort)
        self._io = LoopThread(f'dispylike-io-{next(self._ids)}')
        self._engine = Engine(cfg, self, self._job_done, self._status, self._job_update)
        self._io.run(self._engine.add_nodes(specs), timeout=30)

    def _prepare(self, computation: Callable | str, nodes: Any, depends: list,
                 setup: Callable | None, cleanup: Any, job_status: Callable | None,
                 cluster_status: Callable | None, loglevel: int,
                 warm_workers: bool = False) -> list:
        """What every cluster does first (JobCluster, SharedJobCluster): returns the
        ``nodes`` entries as NodeAllocate specs."""
        setup_logging(loglevel)
        if nodes is None:
            nodes = ['*']
        if isinstance(nodes, (str, tuple)) or not hasattr(nodes, '__iter__'):
            nodes = [nodes]
        specs = [node_spec(entry) for entry in nodes]
        self._package = package(computation, list(depends or ()), setup, cleanup,
                                warm_workers=warm_workers)
        self.name = self._package.name
        self._job_status = job_status
        self._cluster_status = cluster_status
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0
        self._uids = itertools.count(1)
        self._closed = False
        self._start_time = time.time()
        self._callbacks = CallbackRunner() if (job_status or cluster_status) else None
        return specs

    # --- engine callbacks (I/O loop thread) ----------------------------------------
    def _job_done(self, job: DispyJob) -> None:
        if self._job_status is not None:
            self._callbacks.put(self._job_status, job)
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def _job_update(self, job: DispyJob) -> None:
        if self._job_status is not None:
            self._callbacks.put(self._job_status, job)

    def _status(self, status: int, node: DispyNode | None, job: DispyJob | None) -> None:
        if self._cluster_status is not None:
            self._callbacks.put(self._cluster_status, status, node, job)

    # --- dispy API ----------------------------------------------------------------
    def submit(self, *args: Any, **kwargs: Any) -> DispyJob:
        """Schedule ``computation(*args, **kwargs)`` on any node; returns its DispyJob."""
        return self._submit(None, args, kwargs)

    def submit_node(self, node: Any, *args: Any, **kwargs: Any) -> DispyJob:
        """Like submit, but only on ``node`` (DispyNode, IP address or host name)."""
        return self._submit(node, args, kwargs)

    def _submit(self, node: Any, args: tuple, kwargs: dict) -> DispyJob:
        if self._closed:
            raise ClusterClosed('the cluster is closed')
        deps = kwargs.pop('dispy_job_depends', None)
        if self._package.is_program and (kwargs or not all(isinstance(a, str) for a in args)):
            raise TypeError('arguments of a program computation must be strings')
        payload = dumps_payload((args, kwargs, job_depends(deps)) if deps else (args, kwargs),
                                cloudpickle.Pickler)
        job = DispyJob(next(self._uids), args, kwargs, payload, self._lock)
        if self.recover_file:
            job._id_hook = self._journal_id
        with self._idle:
            self._pending += 1
        self._io.call(self._engine.submit, job, node)
        return job

    def _journal_id(self, job: DispyJob) -> None:
        self._io.call(self._engine.journal_id, job)

    def cancel(self, job: DispyJob) -> int:
        """Cancel a job: dropped if queued, interrupted then killed if running.  0 = ok."""
        if job.done:
            return -1
        self._io.call(self._engine.cancel, job)
        return 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has ended; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = None, terminate: bool = False) -> bool:
        """Wait for jobs, then release the nodes.  See dispy's manual for the rules."""
        if self._closed:
            return True
        finished = self.wait(timeout)
        if not finished and not terminate:
            return False
        if not finished:
            self._io.call(self._engine.cancel_all)
            self.wait(15)
        self._closed = True
        try:
            self._io.run(self._engine.shutdown(terminate=not finished), timeout=120)
        finally:
            self._io.stop()
            if self._callbacks is not None:
                self._callbacks.stop()
        return True

    # --- node management (dispy's) ----------------------------------------------
    # ``node`` is a DispyNode, an IP address or a host name.  0 means done (or, for
    # close/resetup, started), -1 an unknown node, as in dispy.
    def discover_nodes(self, nodes: Any) -> None:
        """Dial these nodes (host, (host, port), NodeAllocate, or '*' to probe again)."""
        if isinstance(nodes, (str, tuple)) or not hasattr(nodes, '__iter__'):
            nodes = [nodes]
        self._io.run(self._engine.add_nodes([node_spec(n) for n in nodes]), timeout=30)

    def allocate_node(self, node: Any) -> int:
        """Use ``node`` again after deallocate_node, or add a new one."""
        return self._io.run(self._engine.allocate_node(node), timeout=30)

    def deallocate_node(self, node: Any) -> int:
        """Send no new jobs to ``node``; its jobs and set-up stay (allocate_node resumes)."""
        return self._on_loop(self._engine.set_accepting, node, False)

    def close_node(self, node: Any, terminate: bool = False) -> int:
        """Stop using ``node``: its running jobs finish (or are cancelled with
        ``terminate``), then cleanup runs there and the node is free for others."""
        return self._on_loop(self._engine.release_node, node, terminate, False)

    def resetup_node(self, node: Any) -> int:
        """Close ``node`` for this computation (cleanup), then set it up again with a
        fresh ``allocate()`` and ``setup``."""
        return self._on_loop(self._engine.release_node, node, False, True)

    def node_jobs(self, node: Any, from_node: bool = False) -> list[DispyJob]:
        """Jobs running on ``node`` now."""
        return self._on_loop(self._engine.node_jobs, node)

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        """Use ``cpus`` CPUs of ``node`` (negative: all but that many).  Returns the CPUs
        now used, or -1."""
        return self._on_loop(self._engine.set_node_cpus, node, cpus)

    def send_file(self, path: str, node: Any) -> int:
        """Copy the file at ``path`` into the computation's directory on ``node`` (base
        name only).  0 once the node has stored it; -1 otherwise (reason logged)."""
        if not os.path.isfile(path):
            log.warning('send_file: %r is not a file', path)
            return -1
        return self._io.run(self._engine.send_file(path, node), timeout=None)

    def _on_loop(self, fn: Callable, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)
        return self._io.run(call(), timeout=30)

    def print_status(self, wall_time: float | None = None) -> None:
        """Print dispy's per-node table: CPUs, jobs, time per job, data sent/received."""
        wall = wall_time if wall_time is not None else time.time() - self._start_time
        print(format_status(list(self._engine.nodes), wall))

    def status(self) -> list[DispyNode]:
        """The nodes used so far (DispyNode records)."""
        return list(self._engine.nodes)

    def __enter__(self) -> JobCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # leaving on an error (or Ctrl-C): do not wait for the jobs
            self.close(timeout=0, terminate=True)

    def __del__(self) -> None:
        if not getattr(self, '_closed', True):
            try:
                self._io.stop()
            except Exception:
                pass
