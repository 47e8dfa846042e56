"""Joining nodes for the client engine (a mixin: state lives in Engine, which runs
it on the I/O loop): dial a node, take back a computation it kept for us or set one
up (files, setup), then hand the node to the scheduler."""

from __future__ import annotations

import asyncio
import logging
import time

import cloudpickle

from .. import config
from ..errors import ComputationError, DispyError, ProtocolError
from ..execution.computation import classify_depends
from ..nodes import DispyNode, DispyNodeAvailInfo, LocalNode, NodeAllocate
from ..protocol import messages as m
from ..status import NodeStatus
from ..transport.connection import Connection, connect
from . import samehost
from .links import NodeLink
from .local import LocalNodeProcess

log = logging.getLogger('dispylike')


class NodeJoining:
    """add_nodes, join_node and the join itself: _attach (a node that kept our
    computation) or _setup (a fresh one)."""

    async def add_nodes(self, specs: list[NodeAllocate]) -> None:
        """Dial listed nodes; if any entry is a pattern, discover the rest by UDP."""
        self.specs += specs
        for spec in specs:
            if not spec.is_pattern:
                self._start_join(spec, None, None)
        if any(spec.is_pattern for spec in self.specs) and self.beacon is None:
            await self._start_discovery()

    def join_node(self, spec: NodeAllocate, host: str, port: int, quiet: bool = False) -> None:
        """Dial this node (found by someone else, e.g. a dispyscheduler) and set it up;
        ``quiet``: a failure is logged at debug level (a retry)."""
        self._start_join(spec, host, port, quiet)

    def _start_join(self, spec: NodeAllocate, host: str | None, port: int | None,
                    quiet: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._join(spec, host, port, quiet))
        self._joins.add(task)
        task.add_done_callback(self._join_done)

    def _join_done(self, task: asyncio.Task) -> None:
        self._joins.discard(task)
        if not self._joins and not self.links and not self._closing and self.beacon is None:
            log.warning('no node could be used for "%s"; %d job(s) wait for one',
                        self.cfg.package.name, len(self.jobs))

    async def _join(self, spec: NodeAllocate, host: str | None, port: int | None,
                    quiet: bool = False) -> None:
        host = host or spec.ip_addr
        port = port or spec.port or config.port_of('NodePort', self.cfg.dispy_port)
        # an embedded node gets its port when it starts: it is its own key until then
        key = f'local-{id(spec)}' if isinstance(spec, LocalNode) else f'{host}:{port}'
        if key in self._known:
            return
        self._known.add(key)
        try:
            await self._connect_and_setup(spec, host, port, quiet)
        finally:
            if key not in self.links or isinstance(spec, LocalNode):
                self._known.discard(key)

    async def _connect_and_setup(self, spec: NodeAllocate, host: str, port: int,
                                 quiet: bool = False) -> None:
        warn = log.debug if quiet else log.warning
        try:
            if isinstance(spec, LocalNode):
                local = await LocalNodeProcess.launch(spec.node_cpus, self.cfg.secret, spec.debug,
                                                      tls_files=self.cfg.tls_files)
                self._locals.append(local)
                host, port = local.host, local.port
            source = None
            if self.cfg.local_addr and (':' in self.cfg.local_addr) == (':' in host):
                source = (self.cfg.local_addr, 0)
            conn = await connect(host, port, self.cfg.secret, timeout=self.cfg.msg_timeout,
                                 local_addr=source, ssl_context=self.cfg.ssl_context)
        except DispyError as exc:
            warn('node %s:%s is not used: %s', host, port, exc)
            return
        try:
            link = await self._attach(conn, spec, f'{host}:{port}')
            if link is None:
                link = await self._setup(conn, spec, f'{host}:{port}')
        except (DispyError, OSError, asyncio.TimeoutError) as exc:
            warn('node %s:%s is not used: %s', host, port, exc)
            conn.abort()
            return
        except asyncio.CancelledError:
            conn.abort()
            raise
        if link is None:
            await conn.close()
            return
        # joined even if the cluster is closing: shutdown then releases the node
        # properly (CloseComputation), so the next client finds it free at once
        self.links[link.key] = link
        self.nodes.append(link.node)
        link.last_rx = time.monotonic()
        link.reader = asyncio.get_running_loop().create_task(self._read(link))
        if self.cfg.pulse_interval:
            self._tasks.add(asyncio.get_running_loop().create_task(self._pulse(link)))
        self._on_status(NodeStatus.Initialized, link.node, None)
        if self.journal is not None:
            self.journal.node(link.key, host, port, link.node.name)
        log.info('node %s (%s) joined with %d CPU(s)', link.node.name, link.key, link.node.cpus)
        self._apply(self.sched.add_node(link.key, self._cpus_at_join(link)))

    def _cpus_at_join(self, link: NodeLink) -> int:
        """CPUs a node that just joined is given (a dispyscheduler gives 0 and then its
        share)."""
        return link.node.cpus

    async def _attach(self, conn: Connection, spec: NodeAllocate, key: str) -> NodeLink | None:
        """A node we lost may still hold our computation (its link broke, then healed):
        take it over again.  The jobs it ran for us were rescheduled or abandoned when
        it was lost, so what still runs there is cancelled and late replies dropped."""
        node = self._former.get(key)
        if node is None or isinstance(spec, LocalNode):
            return None
        conn.send(m.Attach(self.cfg.comp_id))
        reply = await asyncio.wait_for(conn.recv(), self.cfg.msg_timeout)
        if not isinstance(reply, m.Attached):
            raise ProtocolError(f'expected Attached, got {type(reply).__name__}')
        if not reply.ok:
            log.debug('node %s no longer has our computation (%s): setting it up again',
                      key, reply.reason)
            del self._former[key]
            return None
        del self._former[key]
        for uid, attempt in reply.running:
            if not self.sched.is_current(uid, attempt, key):
                conn.send(m.CancelJob(uid, attempt))
        node.busy = 0
        log.info('node %s (%s) is back with our computation: %d stale job(s) cancelled there',
                 node.name, key, len(reply.running))
        return NodeLink(key, conn, node, spec=spec)

    async def _setup(self, conn: Connection, spec: NodeAllocate, key: str) -> NodeLink | None:
        timeout = self.cfg.msg_timeout
        conn.send(m.NodeInfoRequest(self.cfg.group))
        info = await asyncio.wait_for(conn.recv(), timeout)
        if not isinstance(info, m.NodeInfo):
            raise ProtocolError(f'expected NodeInfo, got {type(info).__name__}')
        if info.busy_with:
            raise ComputationError(f'node {info.name} is in use by {info.busy_with}')
        avail = DispyNodeAvailInfo(*info.avail)
        cpus = spec.allocate(self.cluster, info.ip_addr, info.name, info.cpus, avail,
                             info.platform)
        if not isinstance(cpus, int) or cpus <= 0:
            log.info('node %s (%s) skipped: allocate() returned %r', info.name, key, cpus)
            return None
        cpus = min(cpus, info.cpus)
        cfg = self.cfg
        conn.send(m.SetupComputation(cfg.comp_id, cfg.package.name, cfg.client_name,
                                     cfg.dest_path, cfg.package.code, cfg.remove_files,
                                     float(cfg.pulse_interval or 0.0)))
        node = DispyNode(info.ip_addr, info.port, info.name, cpus, info.platform)
        node.avail_cpus, node.avail_info = info.cpus, avail
        files = list(cfg.package.files) + classify_depends(spec.depends)[2]
        for path, relpath, mode in files:
            if not cfg.remove_files and await self._node_has(conn, path, relpath, mode):
                continue
            node.tx += await self._send_file(conn, path, relpath, mode)
        conn.send(m.StartComputation(cfg.comp_id, self._setup_args(spec)))
        while True:
            reply = await conn.recv()
            if isinstance(reply, m.Refused):
                raise ComputationError(f'node {info.name} refused: {reply.reason}')
            if isinstance(reply, m.FileStored):
                if reply.error:
                    raise ComputationError(f'node {info.name} refused file '
                                           f'{reply.relpath!r}: {reply.error}')
                continue
            if isinstance(reply, m.ComputationReady):
                break
            raise ProtocolError(f'unexpected {type(reply).__name__} during setup')
        if not reply.ok:
            self._on_status(NodeStatus.Closed, node, None)   # the node failed: say so
            raise ComputationError(f'on {info.name}: {reply.error}')
        shared = samehost.shared_dir(reply.xfer_dir, reply.xfer_token)
        if shared is not None and self.LOCAL_RESULTS:
            conn.send(m.LocalResults(cfg.comp_id))
        return NodeLink(key, conn, node, spec=spec, shared=shared)

    def _setup_args(self, spec: NodeAllocate) -> bytes:
        return cloudpickle.dumps(spec.setup_args, protocol=5) if spec.setup_args else b''
