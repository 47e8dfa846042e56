"""SharedJobCluster: JobCluster's API for programs that share nodes through dispyscheduler."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import config
from ..job import DispyJob
from ..nodes import NodeAllocate, _resolve
from ..security.tls import maybe_client_context
from .cluster import JobCluster
from .loopthread import LoopThread
from .recover import open_recover_file
from .schedulerlink import SharedConfig, SharedEngine

log = logging.getLogger('dispylike')


class SharedJobCluster(JobCluster):
    """Run ``computation`` on the nodes of a dispyscheduler, alongside other programs.

    dispy's arguments and meaning; as in dispy, ``scheduler_node`` (or its alias
    ``scheduler_host``, the name dispy 4.15's code uses) is the scheduler's host,
    by default this one, and ``secret``/``certfile``/``keyfile`` must match the
    scheduler's ``--cluster_secret``/``--cluster_certfile``/``--cluster_keyfile``.
    ``exclusive=True`` waits until the other computations close, then has every
    node alone.  The client only dials out to the scheduler (port
    ``SharedSchedulerPort`` of ``dispy_port``, or ``scheduler_port``); ``client_port``,
    ``ext_host`` and ``poll_interval`` are accepted for compatibility.

    Differences from JobCluster, as dispy documents them: ``nodes`` entries travel
    as host, port, cpus and setup_args (a NodeAllocate subclass's own code does
    not run on the scheduler); ``resetup_node`` is not supported (-1);
    ``set_node_cpus`` works only with a ``--cooperative`` scheduler (else -1);
    pulses and rescheduling are the scheduler's (its ``--pulse_interval``).
    Jobs' ``dispy_send_file`` files come through the scheduler's link whatever
    ``relay`` says, since this client takes no inbound connections.
    """

    def __init__(self, computation: Callable | str, nodes: Any = None, depends: list = (),
                 job_status: Callable | None = None, cluster_status: Callable | None = None,
                 host: str | None = None, client_port: int = 0, dispy_port: int | None = None,
                 scheduler_node: str | None = None, ext_host: str | None = None,
                 loglevel: int = logging.INFO, setup: Callable | None = None,
                 cleanup: Any = True, dest_path: str | None = None, reentrant: bool = False,
                 poll_interval: float | None = None, exclusive: bool = False,
                 secret: str = '', keyfile: str | None = None, certfile: str | None = None,
                 recover_file: str | None = None, cafile: str | None = None,
                 scheduler_host: str | None = None, scheduler_port: int | None = None) -> None:
        specs = self._prepare(computation, nodes, depends, setup, cleanup, job_status,
                              cluster_status, loglevel)
        sched_host = scheduler_node or scheduler_host or host or socket.gethostname()
        sched_host = _resolve(sched_host)
        port = scheduler_port or config.port_of('SharedSchedulerPort',
                                                dispy_port or config.DispyPort)
        comp_id, client_name = uuid.uuid4().hex, f'{socket.gethostname()}:{os.getpid()}'
        tls_files = tuple(os.path.abspath(f) if f else '' for f in (certfile, keyfile, cafile))
        self.recover_file, journal = open_recover_file(
            recover_file, comp_id=comp_id, name=self.name, client_name=client_name,
            secret=secret or '', tls_files=tls_files)
        cfg = SharedConfig(comp_id=comp_id, package=self._package, client_name=client_name,
                           host=sched_host, port=port, secret=secret or '',
                           dest_path=(dest_path or '').strip('/'),
                           cleanup=cleanup is not False, reentrant=bool(reentrant),
                           exclusive=bool(exclusive), nodes=_node_entries(specs),
                           local_addr=host if host and host != sched_host else None,
                           ssl_context=maybe_client_context(certfile, keyfile, cafile),
                           journal=journal)
        self._io = LoopThread(f'dispylike-io-{next(self._ids)}')
        self._engine = SharedEngine(cfg, self._job_done, self._status, self._job_update)
        try:
            self._io.run(self._engine.start(), timeout=cfg.msg_timeout * 6)
        except BaseException:
            self._closed = True
            self._io.stop()
            if self._callbacks is not None:
                self._callbacks.stop()
            if journal is not None:
                journal.close(remove=True)
            raise

    # --- node management, answered by the scheduler ------------------------------------
    def _request(self, op: str, node: Any = '', number: int = 0) -> Any:
        return self._io.run(self._engine.request(op, node, number), timeout=None)

    def _result(self, op: str, node: Any = '', number: int = 0) -> int:
        done = self._request(op, node, number)
        return done.result if done is not None else -1

    def discover_nodes(self, nodes: Any) -> None:
        """Ask the scheduler to probe for nodes again (it decides which it uses)."""
        self._result('discover')

    def allocate_node(self, node: Any) -> int:
        return self._result('allocate', node)

    def deallocate_node(self, node: Any) -> int:
        return self._result('deallocate', node)

    def close_node(self, node: Any, terminate: bool = False) -> int:
        return self._result('close', node, int(bool(terminate)))

    def resetup_node(self, node: Any) -> int:
        """Not supported with a shared scheduler (as dispy): -1."""
        log.warning('resetup_node is not supported by SharedJobCluster')
        return -1

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        """Only with a ``--cooperative`` scheduler; else -1 (as dispy)."""
        return self._result('cpus', node, cpus)

    def node_jobs(self, node: Any, from_node: bool = False) -> list[DispyJob]:
        done = self._request('jobs', node)
        if done is None:
            return []
        jobs = self._engine.jobs
        return [jobs[uid] for uid in done.uids if uid in jobs]


def _node_entries(specs: list[NodeAllocate]) -> tuple:
    """``nodes`` as sent to the scheduler: (host, port, cpus, pickled setup_args)."""
    out = []
    for spec in specs:
        blob = cloudpickle.dumps(spec.setup_args, protocol=5) if spec.setup_args else b''
        out.append((spec.host if spec.is_pattern else spec.ip_addr, spec.port or 0,
                    int(spec.cpus), blob))
    return tuple(out)
