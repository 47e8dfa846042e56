"""dispynode's options and lifecycle: service hours (injected clock), zombie_interval
and results kept for a client that comes back, --serve, --ping_interval, the console,
config files, bad values, SIGTERM."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.execution.computation import package
from dispylike.node.options import NodeOptions
from dispylike.protocol import messages as m
from dispylike.testing import FakeClock, InProcessNode, NodeProcess
from dispylike.transport.connection import connect

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.05)
    return predicate()


def nap(t):
    import time
    time.sleep(t)
    return t


def square(n):
    return n * n


# --- service hours -------------------------------------------------------------------

def test_service_stop_then_end_then_start_again_next_day():
    day = dt.datetime(2026, 11, 21)
    clock = FakeClock(day.replace(hour=10, minute=0, second=30))
    opts = NodeOptions(cpus=2, service_start='10:00', service_stop='10:01',
                       service_end='10:02')
    with InProcessNode(opts, clock) as node:
        with dispylike.JobCluster(nap, nodes=[(node.host, node.port)]) as c:
            long_jobs = [c.submit(60) for _ in range(2)]
            assert wait_for(lambda: all(j.status == DispyJob.Running for j in long_jobs), 20)
            clock.set(day.replace(hour=10, minute=1, second=5))       # a minute on: stop
            time.sleep(1.0)
            late = c.submit(0.1)
            time.sleep(1.5)
            assert late.status == DispyJob.Created                   # no new jobs ...
            assert all(j.status == DispyJob.Running for j in long_jobs)   # ... the rest go on
            clock.set(day.replace(hour=10, minute=2, second=5))       # end: terminated
            assert wait_for(lambda: all(j.status in (DispyJob.Terminated, DispyJob.Abandoned)
                                        for j in long_jobs), 10), long_jobs
            assert late.status == DispyJob.Created
            clock.set(day.replace(day=22, hour=10, minute=0, second=1))   # next day: again
            assert late.wait(30) and late.status == DispyJob.Finished
            assert c.submit(0.2)() == 0.2


# --- a client that goes away and comes back ----------------------------------------------

def marked_nap(t, marks):
    """nap, leaving ``marks``/start-T and, once done, end-T behind (the tests wait on them)."""
    import os
    import time
    open(os.path.join(marks, f'start-{t}'), 'w').close()
    time.sleep(t)
    open(os.path.join(marks, f'end-{t}'), 'w').close()
    return t


async def _start_raw(node, comp_id, jobs, marks=None):
    """Set up a computation by hand, as a client would, and start ``jobs`` (uid, seconds):
    naps, or with ``marks`` (a directory) marked naps."""
    func = nap if marks is None else marked_nap
    extra = () if marks is None else (str(marks),)
    conn = await connect(node.host, node.port, '')
    conn.send(m.SetupComputation(comp_id, func.__name__, 'raw-client', '', package(func).code,
                                 True, 0.0))
    conn.send(m.StartComputation(comp_id, b''))
    while not isinstance(await asyncio.wait_for(conn.recv(), 20), m.ComputationReady):
        pass
    conn.send(m.RunJobs(comp_id, tuple((uid, 1, cloudpickle.dumps(((t, *extra), {})))
                                       for uid, t in jobs)))
    return conn


async def _until_exists(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f'{path} did not appear in {timeout:g} s'
        await asyncio.sleep(0.02)


async def _info(node):
    conn = await connect(node.host, node.port, '')
    conn.send(m.NodeInfoRequest(''))
    info = await asyncio.wait_for(conn.recv(), 10)
    conn.abort()
    return info


def test_results_are_kept_for_a_client_that_comes_back(node, tmp_path):
    async def scenario():
        conn = await _start_raw(node, 'cb' * 16, [(1, 0.2), (2, 30)], marks=tmp_path)
        await _until_exists(tmp_path / 'start-30')   # both jobs run on the node
        await _until_exists(tmp_path / 'start-0.2')
        conn.abort()                                   # the client vanishes mid-run
        await _until_exists(tmp_path / 'end-0.2')     # job 1 finishes meanwhile ...
        deadline = time.monotonic() + 30
        while (info := await _info(node)).avail_cpus != info.cpus - 1:   # ... the node has it
            assert time.monotonic() < deadline, 'the node did not record the end of job 1'
            await asyncio.sleep(0.02)
        assert 'raw-client' in info.busy_with and 'disconnected' in info.busy_with
        back = await connect(node.host, node.port, '')
        back.send(m.Attach('nope'))
        refused = await asyncio.wait_for(back.recv(), 10)
        assert isinstance(refused, m.Attached) and not refused.ok
        back.send(m.Attach('cb' * 16))
        attached = await asyncio.wait_for(back.recv(), 10)
        assert attached.ok and attached.running == ((2, 1),)
        replies = await asyncio.wait_for(back.recv(), 10)
        assert [r[:3] for r in replies.replies] == [(1, 1, int(DispyJob.Finished))]
        back.send(m.AckReplies(((1, 1),)))
        back.send(m.CloseComputation('cb' * 16, True))
        while not isinstance(await asyncio.wait_for(back.recv(), 20), m.ComputationClosed):
            pass
        back.abort()
        assert (await _info(node)).busy_with == ''
    asyncio.run(scenario())
    assert 'attached again (1 job(s) running, 1 kept replies)' in node.log()


def test_zombie_interval_frees_the_node_from_a_vanished_client():
    with NodeProcess(cpus=1, extra=['--zombie_interval', '0.02']) as node:   # 1.2 s
        async def scenario():
            conn = await _start_raw(node, 'cd' * 16, [(1, 60)])
            await asyncio.sleep(0.3)
            conn.abort()
            assert (await _info(node)).busy_with != ''
            for _ in range(100):
                await asyncio.sleep(0.1)
                if (await _info(node)).busy_with == '':
                    return
            raise AssertionError('node still held by the vanished client')
        asyncio.run(scenario())
        assert 'zombie_interval' in node.log()
        with dispylike.JobCluster(square, nodes=[node.address]) as c:
            assert c.submit(5)() == 25


# --- --serve, --ping_interval, SIGTERM ---------------------------------------------------

def test_serve_1_exits_after_one_client():
    with NodeProcess(cpus=1, extra=['--serve', '1']) as node:
        with dispylike.JobCluster(square, nodes=[node.address]) as c:
            assert c.submit(2)() == 4
        assert node.proc.wait(20) == 0
        assert 'served 1 client(s)' in node.log()


def _announcements(extra, seconds):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    base = sock.getsockname()[1]            # ClientPort = DispyPort: where nodes announce
    sock.settimeout(0.2)
    count = 0
    with NodeProcess(cpus=1, extra=['-p', str(base), '--scheduler_host', '127.0.0.1',
                                    *extra]):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                sock.recv(2048)
                count += 1
            except TimeoutError:
                pass
    sock.close()
    return count


def test_ping_interval_repeats_announcements():
    assert _announcements([], 2.5) == 1
    assert _announcements(['--ping_interval', '0.5'], 2.5) >= 3


def job_pid(t):
    import os
    import time
    with open(os.path.join(dispy_job_path, '..', f'pid-{os.getpid()}'), 'w'):  # noqa: F821
        pass
    time.sleep(t)


def test_sigterm_terminates_jobs_tells_the_client_and_cleans(caplog):
    node = NodeProcess(cpus=1, extra=['--clean'])
    try:
        with dispylike.JobCluster(job_pid, nodes=[node.address]) as c:
            job = c.submit(60)
            assert wait_for(lambda: any(f.startswith('pid-') for f in os.listdir(node.prefix)),
                            20)
            (pid_file,) = [f for f in os.listdir(node.prefix) if f.startswith('pid-')]
            pid = int(pid_file[4:])
            node.proc.send_signal(signal.SIGTERM)
            assert node.proc.wait(20) == 0
            assert job.wait(10) and job.status in (DispyJob.Terminated, DispyJob.Abandoned)
        assert any('shutting down' in r.getMessage() for r in caplog.records)
        assert wait_for(lambda: not os.path.exists(f'/proc/{pid}'), 10)
        assert not os.path.exists(node.prefix)                      # --clean
    finally:
        node.stop()


# --- console ---------------------------------------------------------------------------

def test_console_status_cpus_and_quit():
    with NodeProcess(cpus=2, console=True) as node:
        def ask(line, expect):
            node.proc.stdin.write(line + '\n')
            node.proc.stdin.flush()
            seen = []
            while not any(expect in s for s in seen):
                out = node.proc.stdout.readline()
                assert out, f'console closed; saw {seen}'
                seen.append(out)
            return ''.join(seen)
        assert 'CPUs served: 2' in ask('status', 'jobs done')
        ask('cpus 1', 'serving 1 CPU')
        assert asyncio.run(_info(node)).cpus == 1
        ask('cpus 99', 'more than')
        ask('bogus', 'unknown command')
        ask('quit', 'quitting')
        assert node.proc.wait(20) == 0


def span_marked(t):
    import os
    import time
    start = time.time()
    open(f'started-{os.getpid()}', 'w').close()
    time.sleep(t)
    return start, time.time()


def test_fewer_cpus_at_run_time_apply_to_jobs_waiting_in_the_computation_process():
    with InProcessNode(NodeOptions(cpus=2)) as node:
        with dispylike.JobCluster(span_marked, nodes=[(node.host, node.port)]) as c:
            short = [c.submit(0) for _ in range(30)]      # short jobs turn prefetch on:
            assert all(j() for j in short)
            jobs = [c.submit(0.6) for _ in range(6)]      # 2 run, 2 wait in the zygote

            def started():
                return sum(name.startswith('started-') for _, _, names in os.walk(node.prefix)
                           for name in names)
            assert wait_for(lambda: started() >= 32, 20)
            assert node.call(node.node.set_cpus, 1) == 1
            changed = time.time()
            spans = sorted(j() for j in jobs)
        before = [s for s in spans if s[0] < changed]
        after = [s for s in spans if s[0] >= changed]
        assert len(before) == 2 and len(after) == 4
        assert all(start >= max(end for _, end in before) - 0.01 for start, _ in after)
        for (_, end), (start, _) in zip(after, after[1:], strict=False):
            assert start >= end - 0.01, 'two jobs overlapped after the node went to 1 CPU'


# --- config files and bad values ---------------------------------------------------------

def _dispynode(*args):
    return subprocess.run([sys.executable, '-m', 'dispylike.node', *args], capture_output=True,
                          text=True, timeout=30)


def test_saved_config_runs_a_node_with_those_options(tmp_path):
    cfg = tmp_path / 'node.ini'
    saved = _dispynode('-c', '1', '--name', 'from-config', '--service_stop', '23:59',
                       '--save_config', str(cfg))
    assert saved.returncode == 0 and cfg.exists()
    assert (cfg.stat().st_mode & 0o777) == 0o600
    with NodeProcess(cpus=1, extra=['--config', str(cfg)]) as node:
        info = asyncio.run(_info(node))
        assert info.name == 'from-config'
        assert 'stop 23:59' in node.log()


@pytest.mark.parametrize('args, words', [
    (['--service_stop', '7pm'], 'not a time of day'),
    (['--service_start', '08:00', '--service_stop', '07:00', '--service_end', '09:00'],
     'between'),
    (['--config', '/nonexistent/node.ini'], 'cannot read config file'),
    (['--zombie_interval', '0'], 'zombie_interval'),
    (['--serve', '-1'], 'must not be negative'),
])
def test_bad_values_exit_non_zero_with_a_clear_message(args, words):
    proc = _dispynode(*args)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_config_file_with_an_unknown_option_is_refused(tmp_path):
    cfg = tmp_path / 'bad.ini'
    cfg.write_text('[dispynode]\ncpus = 1\nfrobnicate = yes\n')
    proc = _dispynode('--config', str(cfg))
    assert proc.returncode != 0 and "unknown option 'frobnicate'" in proc.stderr
