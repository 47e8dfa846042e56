"""dispy's node management and file methods for the client engine (a mixin: state
lives in Engine, which runs them on the I/O loop)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from ..errors import ComputationError, DispyError, ProtocolError
from ..execution.staging import FileSink, StagingError
from ..job import DispyJob
from ..nodes import node_spec
from ..protocol import messages as m

if TYPE_CHECKING:
    from ..transport.connection import Connection
    from .links import NodeLink

log = logging.getLogger('dispylike')

FILE_CHUNK = 1 << 20
#: close() waits at most this long (seconds) for files sent by jobs still being saved.
FILE_SAVES_WAIT = 30.0


class NodeManagement:
    """node_jobs, set_node_cpus, (de)allocate, close/resetup, send_file, job files."""

    def node_jobs(self, node: Any) -> list[DispyJob]:
        key = self.find_node(node)
        if key is None:
            return []
        return [self.jobs[uid] for uid in self.sched.running_on(key) if uid in self.jobs]

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        key = self.find_node(node)
        if key is None:
            return -1
        link = self.links[key]
        total = link.node.avail_cpus   # what the node serves
        cpus = total + cpus if cpus < 0 else min(cpus, total)
        if cpus < 0:
            return -1
        link.node.cpus = cpus
        self._apply(self.sched.set_cpus(key, cpus))
        if link.prefetch_per_cpu:
            self._prefetch(link)
        return cpus

    def set_accepting(self, node: Any, accepting: bool) -> int:
        key = self.find_node(node)
        if key is None or self.links[key].releasing:
            return -1
        link = self.links[key]
        link.user_paused = not accepting
        self._apply(self.sched.set_accepting(key, link.accepting))
        return 0

    async def allocate_node(self, node: Any) -> int:
        if self.find_node(node) is not None:
            return self.set_accepting(node, True)
        await self.add_nodes([node_spec(node)])
        return 0

    def release_node(self, node: Any, terminate: bool, rejoin: bool) -> int:
        """close_node (rejoin=False) or resetup_node (rejoin=True), in the background."""
        key = self.find_node(node)
        if key is None or self.links[key].releasing:
            return -1
        link = self.links[key]
        link.releasing = True
        self._apply(self.sched.set_accepting(key, False))
        task = asyncio.get_running_loop().create_task(self._release(link, terminate, rejoin))
        self._joins.add(task)
        task.add_done_callback(self._joins.discard)
        return 0

    async def _release(self, link: NodeLink, terminate: bool, rejoin: bool) -> None:
        if terminate:
            for uid in self.sched.running_on(link.key):
                self._apply(self.sched.cancel(uid))
        await link.idle.wait()
        if link.key not in self.links:
            return
        link.conn.send(m.CloseComputation(self.cfg.comp_id, terminate))
        try:
            await asyncio.wait_for(link.closed.wait(), self.cfg.msg_timeout * 3)
        except asyncio.TimeoutError:
            log.warning('node %s did not confirm the close', link.node.name)
        self._closing_links.add(link.key)
        await link.conn.close()
        if link.reader is not None:
            await asyncio.wait([link.reader], timeout=5)
        self._closing_links.discard(link.key)
        log.info('node %s (%s) released', link.node.name, link.key)
        if rejoin and not self._closing:
            host, port = link.key.rsplit(':', 1)
            self._start_join(link.spec, host, int(port))

    async def _node_has(self, conn: Connection, path: str, relpath: str, mode: int) -> bool:
        """cleanup=False: ask whether the node kept this very file (size and SHA-256)
        from an earlier cluster with the same dest_path."""
        size, digest = await asyncio.to_thread(_size_and_sha256, path)
        conn.send(m.FileOffer(self.cfg.comp_id, relpath, size, digest, mode))
        while True:
            reply = await asyncio.wait_for(conn.recv(), self.cfg.msg_timeout)
            if isinstance(reply, m.FileOfferReply) and reply.relpath == relpath:
                return reply.have
            if isinstance(reply, m.FileStored) and reply.error:
                raise ComputationError(f'node refused file {reply.relpath!r}: {reply.error}')
            if not isinstance(reply, m.FileStored):
                raise ProtocolError(f'unexpected {type(reply).__name__} during setup')

    async def _send_file(self, conn: Connection, path: str, relpath: str, mode: int) -> int:
        return await stream_file(conn, self.cfg.comp_id, path, relpath, mode)

    def _on_job_file(self, link: NodeLink, msg: m.JobFile) -> None:
        """A job's dispy_send_file: saved under this directory, at its relative path."""
        if not self.sched.is_current(msg.uid, msg.attempt, link.key):
            return
        link.node.rx += len(msg.data)
        # saved on a thread: the reader goes on (replies, pulses) while the disk works.
        # Not one of _tasks, which shutdown cancels: a file sent by a job must be on disk
        # when close() returns (shutdown waits for these, see _wait_file_saves)
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(save_job_file, msg.relpath, msg.data, link.node.name))
        self._file_saves.add(task)
        task.add_done_callback(self._file_saves.discard)

    async def _wait_file_saves(self, timeout: float = FILE_SAVES_WAIT) -> None:
        """Until the files jobs sent are saved (at most ``timeout`` s: a save on a thread
        cannot be stopped, so one still running then is left to finish, with a warning)."""
        saves = list(self._file_saves)
        if not saves:
            return
        _, pending = await asyncio.wait(saves, timeout=timeout)
        if pending:
            log.warning('%d file(s) sent by jobs still being saved after %g s; closing anyway',
                        len(pending), timeout)

    async def send_file(self, path: str, node: Any) -> int:
        """cluster.send_file: into the computation's directory on ``node``; 0 if stored."""
        key = self.find_node(node)
        if key is None:
            return -1
        link = self.links[key]
        relpath = os.path.basename(path)
        waiter = asyncio.get_running_loop().create_future()
        self._file_waiters[(key, relpath)] = waiter
        try:
            link.node.tx += await self._send_file(link.conn, path, relpath, 0o644)
            error = await asyncio.wait_for(waiter, self.cfg.msg_timeout * 6)
        except (DispyError, OSError, asyncio.TimeoutError) as exc:
            log.warning('send_file %s to %s failed: %s', path, link.node.name, exc)
            return -1
        finally:
            self._file_waiters.pop((key, relpath), None)
        if error:
            log.warning('node %s refused %s: %s', link.node.name, path, error)
            return -1
        return 0


def _size_and_sha256(path: str) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.digest()


async def stream_file(conn: Connection, comp_id: str, path: str, relpath: str, mode: int) -> int:
    """Send the file at ``path`` as FileChunks of ``comp_id``; returns the bytes sent."""
    sent = 0
    f = await asyncio.to_thread(open, path, 'rb')  # disk I/O stays off the loop
    with f:
        size = os.fstat(f.fileno()).st_size
        while True:
            data = await asyncio.to_thread(f.read, FILE_CHUNK)
            final = sent + len(data) >= size or not data
            conn.send(m.FileChunk(comp_id, relpath, sent, data, final, mode))
            sent += len(data)
            await conn.drain()
            if final:
                return sent


def save_job_file(relpath: str, data: bytes, node_name: str) -> None:
    """A job's dispy_send_file, saved under the current directory (confined)."""
    try:
        sink = FileSink(os.getcwd(), relpath)
        sink.write(0, data)
        sink.finish(0o644)
    except (StagingError, OSError) as exc:
        log.error('refused file %r from node %s: %s', relpath, node_name, exc)
