"""Fuzz a live daemon over TCP and UDP while a legitimate client works (tests and bench).

::

    report = campaign(NODE, Plan(tcp_frames=3000, datagrams=5000), workdir)

A :class:`Target` is a daemon: a name, ``launch(secret, env)`` (a context
manager yielding an :class:`Endpoint`: host, TCP port, UDP port or None, pid,
log) and ``legit(endpoint, secret, run)`` (a legitimate client's work, called
on a thread: it must call ``run.record(latency, ok)`` per request and return
once ``run.stop`` is set).  Adding a daemon (dispyscheduler, dispynetrelay) is
one launch function and one workload; see :data:`NODE` and :data:`SCHEDULER`.

The campaign starts the daemon with ``DISPYLIKE_UNPICKLE_AUDIT`` set (see
:mod:`dispylike.security.audit`), waits for the legitimate client to work,
notes the daemon's descriptors and memory, sends the fuzz (TCP connections
from 127.0.0.2-5 when the daemon is on 127.0.0.1: before authentication,
with a wrong secret, and authenticated with garbage; datagrams to the UDP
port), lets the client finish a few more requests, notes descriptors and
memory again and stops the daemon, whose audit report it returns with the
counts.  Poison pickles would create ``workdir/POISONED`` if unpickled.
Everything goes to the target's own address: loopback or a test namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DispyError
from ..protocol import handshake as hs
from ..protocol.frames import PROTOCOL_VERSION, FrameDecoder, encode
from ..security.audit import ENV as AUDIT_ENV
from ..transport.connection import connect
from .daemons import NodeProcess, SchedulerProcess
from .fuzzcases import authed_frames, datagram, poison_pickle, preauth_frames


@dataclass(frozen=True)
class Endpoint:
    host: str
    tcp_port: int
    udp_port: int | None
    pid: int
    log: Callable[[], str]
    alive: Callable[[], bool]


@dataclass
class LegitRun:
    """What the legitimate client reports; ``stop`` tells it to finish."""

    stop: threading.Event = field(default_factory=threading.Event)
    fuzzing: bool = False
    latencies: dict[str, list[float]] = field(default_factory=lambda: {
        'before': [], 'during': [], 'after': []})
    ok: int = 0
    bad: list[str] = field(default_factory=list)
    _phase: str = 'before'

    def record(self, latency: float, ok: bool, why: str = '') -> None:
        self.latencies[self._phase].append(latency)
        if ok:
            self.ok += 1
        else:
            self.bad.append(why)


@dataclass(frozen=True)
class Target:
    name: str
    launch: Callable[[str, dict[str, str]], contextlib.AbstractContextManager[Endpoint]]
    legit: Callable[[Endpoint, str, LegitRun], None] | None = None


@dataclass(frozen=True)
class Plan:
    tcp_frames: int = 3000
    datagrams: int = 5000
    authed_share: float = 0.1       # connections that authenticate, then send garbage
    wrong_secret_share: float = 0.15
    concurrency: int = 16
    seed: int = 1
    legit_before: int = 10          # requests before the fuzz starts (and after it ends)


@dataclass
class FuzzStats:
    tcp_frames: int = 0
    tcp_connections: int = 0
    tcp_kinds: Counter = field(default_factory=Counter)
    tcp_failures: Counter = field(default_factory=Counter)   # how our side saw it end
    datagrams: int = 0
    datagram_kinds: Counter = field(default_factory=Counter)
    answers: int = 0


# --- the daemons ------------------------------------------------------------------

def fuzz_square(n):
    return n * n


@contextlib.contextmanager
def _launch_node(secret: str, env: dict[str, str]) -> Iterator[Endpoint]:
    with NodeProcess(cpus=2, secret=secret, env=env, extra=['--msg_timeout', '5']) as node:
        yield Endpoint(node.host, node.port, node.port, node.pid, node.log, node.alive)


def _node_jobs(ep: Endpoint, secret: str, run: LegitRun) -> None:
    import dispylike
    with dispylike.JobCluster(fuzz_square, nodes=[(ep.host, ep.tcp_port)],
                              secret=secret) as cluster:
        _one_at_a_time(cluster, run)


def _one_at_a_time(cluster: Any, run: LegitRun) -> None:
    n = 0
    while not run.stop.is_set():
        start = time.monotonic()
        job = cluster.submit(n)
        result = job(timeout=60)
        run.record(time.monotonic() - start, result == n * n,
                   f'job {n}: {result!r} {job.status} {job.exception}')
        n += 1


NODE = Target('dispynode', _launch_node, _node_jobs)


@contextlib.contextmanager
def _launch_scheduler(secret: str, env: dict[str, str]) -> Iterator[Endpoint]:
    """A dispyscheduler (clients' secret ``secret``) with one node of its own; only the
    scheduler is audited and fuzzed (its node list is explicit: no UDP port)."""
    with NodeProcess(cpus=2, secret=secret + '-nodes') as node, \
            SchedulerProcess([f'{node.host}:{node.port}'], node_secret=secret + '-nodes',
                             cluster_secret=secret, env=env,
                             extra=['--msg_timeout', '5']) as sched:
        yield Endpoint(sched.host, sched.port, None, sched.pid, sched.log, sched.alive)


def _shared_jobs(ep: Endpoint, secret: str, run: LegitRun) -> None:
    import dispylike
    with dispylike.SharedJobCluster(fuzz_square, scheduler_node=ep.host,
                                    scheduler_port=ep.tcp_port, secret=secret) as cluster:
        _one_at_a_time(cluster, run)


SCHEDULER = Target('dispyscheduler', _launch_scheduler, _shared_jobs)


# --- TCP --------------------------------------------------------------------------

def _sources(host: str) -> list[str | None]:
    if host == '127.0.0.1':   # other loopback addresses: the per-source caps see other hosts
        return [f'127.0.0.{i}' for i in range(2, 6)]
    return [None]


async def _open(ep: Endpoint, source: str | None):
    return await asyncio.wait_for(asyncio.open_connection(
        ep.host, ep.tcp_port, local_addr=(source, 0) if source else None), 10)


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the daemon sends until it closes (or ``timeout`` passes)."""
    got = bytearray()

    async def read_all() -> None:
        while data := await reader.read(65536):
            got.extend(data)
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(read_all(), timeout)
    return bytes(got)


async def _preauth(ep: Endpoint, source: str | None, frames: list[bytes]) -> None:
    reader, writer = await _open(ep, source)
    try:
        for frame in frames:
            writer.write(frame)
        writer.write_eof()      # a FIN, not a reset: the daemon reads all of it first
        await _until_closed(reader, 10)
    finally:
        writer.transport.abort()


async def _wrong_secret(ep: Endpoint, source: str | None, secret: str,
                        rng: random.Random, poison: bytes) -> None:
    """A full handshake with another secret (our PROOF is a forgery), data right after."""
    reader, writer = await _open(ep, source)
    try:
        side = hs.ClientHandshake(secret + '-wrong')
        writer.write(side.hello())
        decoder = FrameDecoder(1024, 1024)
        msgs: list = []
        while not msgs:
            data = await asyncio.wait_for(reader.read(4096), 10)
            if not data:
                return
            msgs = decoder.feed(data)
        ns = bytes(msgs[0].payload[:hs.NONCE_SIZE])
        transcript = b'client' + bytes((PROTOCOL_VERSION, int(side.role))) + side.nonce + ns
        proof = hmac.new(hs.derive_key(secret + '-wrong'), transcript, hashlib.sha256).digest()
        writer.write(b''.join(encode(hs.PROOF, proof)))
        for _ in range(rng.randint(1, 3)):
            writer.write(b''.join(encode(rng.choice((16, 19, 21, 28)), poison)))
        writer.write_eof()
        await _until_closed(reader, 10)
    finally:
        writer.transport.abort()


async def _authed(ep: Endpoint, source: str | None, secret: str, kind: str,
                  frames: list[tuple[int, bytes]], rng: random.Random) -> None:
    conn = await connect(ep.host, ep.tcp_port, secret, timeout=10,
                         local_addr=(source, 0) if source else None)
    try:
        if kind == 'unsealed':      # well-framed but not sealed: as if altered on the way
            for msg_type, body in frames:
                conn.stream.writelines(encode(msg_type, body))
        else:
            for msg_type, body in frames:
                conn.send_raw(encode(msg_type, body))
        with contextlib.suppress(DispyError, asyncio.TimeoutError):
            while True:             # answers, until the daemon hangs up (or we give up)
                await asyncio.wait_for(conn.recv_frame(), 1.0)
    finally:
        conn.abort()


async def _tcp(ep: Endpoint, secret: str, plan: Plan, rng: random.Random, stats: FuzzStats,
               poison_path: str) -> None:
    sources = _sources(ep.host)
    poison = poison_pickle(poison_path)
    slots = asyncio.Semaphore(plan.concurrency)
    tasks: set[asyncio.Task] = set()

    async def one(coro, kind: str) -> None:
        try:
            await coro
        except (OSError, DispyError, asyncio.TimeoutError) as exc:
            stats.tcp_failures[f'{kind}: {type(exc).__name__}'] += 1
        finally:
            slots.release()

    while stats.tcp_frames < plan.tcp_frames:
        source = sources[stats.tcp_connections % len(sources)]
        pick = rng.random()
        if pick < plan.authed_share:
            kind, frames = authed_frames(rng, poison_path)
            if rng.random() < 0.15:
                kind = 'unsealed'
            coro, kind, count = _authed(ep, source, secret, kind, frames, rng), f'authed {kind}', \
                len(frames)
        elif pick < plan.authed_share + plan.wrong_secret_share:
            coro, kind, count = _wrong_secret(ep, source, secret, rng, poison), 'wrong secret', 4
        else:
            kind, frames = preauth_frames(rng, secret, poison_path)
            coro, count = _preauth(ep, source, frames), len(frames)
        stats.tcp_frames += count
        stats.tcp_connections += 1
        stats.tcp_kinds[kind] += 1
        await slots.acquire()
        task = asyncio.get_running_loop().create_task(one(coro, kind))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(list(tasks))


# --- UDP --------------------------------------------------------------------------

async def _udp(ep: Endpoint, secret: str, plan: Plan, rng: random.Random,
               stats: FuzzStats) -> None:
    if ep.udp_port is None:
        return
    family = socket.AF_INET6 if ':' in ep.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        source = _sources(ep.host)[0]
        sock.bind((source or ('::' if family == socket.AF_INET6 else ''), 0))
        sock.setblocking(False)
        for i in range(plan.datagrams):
            kind, data = datagram(rng, secret)
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data, (ep.host, ep.udp_port))
            stats.datagrams += 1
            stats.datagram_kinds[kind] += 1
            if i % 20 == 19:     # paced, so the daemon reads them rather than the kernel drops
                await asyncio.sleep(0.001)
                stats.answers += _drain(sock)
        await asyncio.sleep(0.2)
        stats.answers += _drain(sock)


def _drain(sock: socket.socket) -> int:
    count = 0
    with contextlib.suppress(BlockingIOError, ConnectionError):
        while True:
            sock.recv(4096)
            count += 1
    return count


async def fuzz(ep: Endpoint, secret: str, plan: Plan, poison_path: str) -> FuzzStats:
    """Send the plan's frames and datagrams at ``ep`` (both at once); return what was sent."""
    stats = FuzzStats()
    rng_tcp, rng_udp = random.Random(plan.seed), random.Random(plan.seed + 1)
    await asyncio.gather(_tcp(ep, secret, plan, rng_tcp, stats, poison_path),
                         _udp(ep, secret, plan, rng_udp, stats))
    return stats


# --- a whole campaign -------------------------------------------------------------

def process_usage(pid: int) -> tuple[int, int]:
    """(open descriptors, resident bytes) of a process, from /proc."""
    fds = len(os.listdir(f'/proc/{pid}/fd'))
    with open(f'/proc/{pid}/status') as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmRSS:'))
    return fds, rss


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} did not happen in {timeout:.0f} s')
        time.sleep(0.05)


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {'count': 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {'count': len(ordered), 'median_ms': statistics.median(ordered) * 1000,
            'p99_ms': p99 * 1000, 'max_ms': ordered[-1] * 1000}


def campaign(target: Target, plan: Plan, workdir: str, secret: str = 'fuzz-secret',
             legit_timeout: float = 120.0) -> dict[str, Any]:
    """Run one fuzz campaign against a fresh daemon; return the report (see module doc)."""
    poison_path = os.path.join(workdir, 'POISONED')
    audit_path = os.path.join(workdir, 'unpickle-audit.json')
    run = LegitRun()
    report: dict[str, Any] = {'target': target.name}
    with target.launch(secret, {AUDIT_ENV: audit_path}) as ep:
        worker = None
        if target.legit is not None:
            worker = threading.Thread(target=target.legit, args=(ep, secret, run), daemon=True)
            worker.start()
            _wait_for(lambda: run.ok >= plan.legit_before or not worker.is_alive(),
                      legit_timeout, 'the legitimate client\'s first requests')
        before = process_usage(ep.pid)
        started = time.monotonic()
        run._phase = 'during'
        stats = asyncio.run(fuzz(ep, secret, plan, poison_path))
        report['fuzz_seconds'] = time.monotonic() - started
        run._phase = 'after'
        done = run.ok + len(run.bad)
        if worker is not None:
            _wait_for(lambda: run.ok + len(run.bad) >= done + plan.legit_before
                      or not worker.is_alive(), legit_timeout,
                      'the legitimate client\'s requests after the fuzz')
            run.stop.set()
            worker.join(legit_timeout)
        time.sleep(0.5)   # connections the fuzz closed last are being torn down
        alive = ep.alive()
        after = process_usage(ep.pid) if alive else (-1, -1)
        report.update(alive=alive, log=ep.log(), udp_port=ep.udp_port)
    report.update(
        stats=stats, fds_before=before[0], fds_after=after[0], rss_before=before[1],
        rss_after=after[1], legit_ok=run.ok, legit_bad=run.bad,
        legit_stuck=worker is not None and worker.is_alive(),
        latency={phase: _percentiles(v) for phase, v in run.latencies.items()},
        poisoned=os.path.exists(poison_path))
    try:
        with open(audit_path) as f:
            report['audit'] = json.load(f)
    except (OSError, ValueError) as exc:
        report['audit'] = {'error': f'no audit report: {exc}'}
    return report


def summary(report: dict[str, Any]) -> str:
    """A few lines for people (tests print it, the soak command shows it)."""
    stats: FuzzStats = report['stats']
    lat = report['latency']
    lines = [
        f"{report['target']}: {stats.tcp_frames} frames over {stats.tcp_connections} TCP "
        f"connections and {stats.datagrams} datagrams in {report['fuzz_seconds']:.1f} s; "
        f"{stats.answers} discovery answers",
        f"  alive after: {report['alive']}; poison unpickled: {report['poisoned']}; "
        f"unpickle audit: {report['audit']}",
        f"  fds {report['fds_before']} -> {report['fds_after']}; RSS "
        f"{report['rss_before'] / 2**20:.1f} -> {report['rss_after'] / 2**20:.1f} MiB",
        f"  legit requests ok {report['legit_ok']}, bad {len(report['legit_bad'])}; latency "
        + '; '.join(f"{phase} {v.get('median_ms', 0):.1f}/{v.get('p99_ms', 0):.1f} ms "
                    f"(median/p99, n={v['count']})" for phase, v in lat.items()),
        f'  tcp kinds: {dict(stats.tcp_kinds)}',
        f'  datagram kinds: {dict(stats.datagram_kinds)}',
        f'  our side saw: {dict(stats.tcp_failures)}',
    ]
    return '\n'.join(lines)
