"""Cancel, crashes, programs, depends, setup/cleanup, secrets: on a real node."""

import os
import socket
import subprocess
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.protocol import handshake as hs
from dispylike.testing import NodeProcess, submit_unserved, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])
DEPS = os.path.join(os.path.dirname(__file__), 'deps')


def cluster_for(node, compute, **kw):
    return dispylike.JobCluster(compute, nodes=[(node.host, node.port)], **kw)


# --- cancel -----------------------------------------------------------------------

def sleeper(t, handle=False, ready=''):
    import time
    try:
        if ready:   # the test cancels once the job is inside this block
            open(ready, 'w').close()
        time.sleep(t)
    except KeyboardInterrupt:
        if handle:
            print('interrupted, saving state')
            return 'saved'
        raise
    return 'slept'


def test_cancel_queued_job(node1):
    with cluster_for(node1, sleeper) as c:
        running = c.submit(1.0)
        queued = c.submit(1.0)
        assert c.cancel(queued) == 0
        assert queued() is None and queued.status == DispyJob.Cancelled
        assert running() == 'slept'
        assert c.cancel(running) == -1             # already done


def test_cancel_running_job_gets_keyboard_interrupt(node1, tmp_path):
    ready = tmp_path / 'inside'
    with cluster_for(node1, sleeper) as c:
        job = c.submit(60, handle=True, ready=str(ready))
        wait_until(ready.exists, 30, 'the job inside its try block')
        c.cancel(job)
        assert job.wait(10)                        # a 60 s job: it was interrupted
        assert job.status == DispyJob.Cancelled and job.result == 'saved'
        assert 'interrupted' in job.stdout
        assert c.submit(0)() == 'slept'            # the CPU is free again


def test_cancel_kills_a_job_that_ignores_interrupts(node1, tmp_path):
    def stubborn(ready):
        import signal
        import time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        open(ready, 'w').close()
        time.sleep(120)

    ready = tmp_path / 'ignoring'
    with cluster_for(node1, stubborn) as c:
        job = c.submit(str(ready))
        wait_until(ready.exists, 30, 'the job ignoring SIGINT')
        t0 = time.time()
        c.cancel(job)
        assert job.wait(15)
        took = time.time() - t0
        assert job.status == DispyJob.Cancelled and 4 <= took < 12
        assert 'SIGTERM' in job.exception or 'SIGKILL' in job.exception


# --- crashes ----------------------------------------------------------------------

def crash(kind):
    import ctypes
    import os
    import threading
    if kind == 'exit':
        os._exit(3)
    if kind == 'segv':
        ctypes.string_at(0)
    if kind == 'unpicklable':
        return threading.Lock()
    return 'fine'


@pytest.mark.parametrize('kind, words', [('exit', 'exit status 3'), ('segv', 'SIGSEGV'),
                                         ('unpicklable', 'could not be serialised')])
def test_crashing_job_is_terminated_and_node_carries_on(node1, kind, words):
    with cluster_for(node1, crash) as c:
        job = c.submit(kind)
        assert job() is None
        assert job.status == DispyJob.Terminated and words in job.exception
        assert c.submit('ok')() == 'fine'


# --- programs ---------------------------------------------------------------------

def test_program_computation(node, tmp_path):
    prog = tmp_path / 'echo_args.sh'
    prog.write_text('#!/bin/sh\necho "args: $*"\necho oops >&2\nexit $2\n')
    with cluster_for(node, str(prog)) as c:
        job = c.submit('a', '7')
        assert job() == 7 and job.status == DispyJob.Finished
        assert job.stdout == 'args: a 7\n' and job.stderr == 'oops\n'
        with pytest.raises(TypeError):
            c.submit(1)


# --- depends, setup, cleanup --------------------------------------------------------

def _add(x):
    return x + 1


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return self.k * x


def uses_everything(x):
    import os
    s = Scaler(2)
    with open('data.txt') as f:
        data = f.read().strip()
    return (_add(x), s.apply(x), dlk_mod.triple(x), dlk_pkg.OFFSET, data,  # noqa: F821
            os.path.exists(os.path.join(dispy_job_path, 'data.txt')),  # noqa: F821
            dispy_node_name, dispy_node_ip_addr, dispynode_logger.name)  # noqa: F821


def test_each_kind_of_depends(node, tmp_path):
    sys.path.insert(0, DEPS)
    try:
        import dlk_mod
        import dlk_pkg
    finally:
        sys.path.remove(DEPS)
    data = tmp_path / 'data.txt'
    data.write_text('payload\n')
    depends = [_add, Scaler, Scaler(5), dlk_mod, dlk_pkg, str(data)]
    with cluster_for(node, uses_everything, depends=depends) as c:
        got = c.submit(4)()
    assert got[:6] == (5, 8, 12, 1000, 'payload', True)
    assert got[6] and got[7] == '127.0.0.1' and got[8] == 'dispynode'


def init_globals():
    global TABLE
    TABLE = {i: i * i for i in range(10)}
    return 0


def lookup(i):
    return TABLE[i], dispy_job_path  # noqa: F821


@pytest.mark.parametrize('cleanup', [True, False])
def test_setup_globals_and_cleanup_of_files(node, tmp_path, cleanup):
    data = tmp_path / 'f.txt'
    data.write_text('x')
    with cluster_for(node, lookup, setup=init_globals, depends=[str(data)],
                     cleanup=cleanup) as c:
        results = [c.submit(i)() for i in range(3)]
    assert [r[0] for r in results] == [0, 1, 4]
    path = results[0][1]
    assert path.startswith(node.prefix)
    assert os.path.exists(os.path.join(path, 'f.txt')) is (not cleanup)


def bad_setup():
    raise RuntimeError('setup exploded')


def test_failing_setup_means_no_jobs_and_a_clear_log(node, caplog):
    with cluster_for(node, lookup, setup=bad_setup) as c:
        submit_unserved(c, 1, wait=3)
    assert any('setup exploded' in r.getMessage() for r in caplog.records)


def cleaner():
    with open(os.path.join(dispy_job_path, '..', 'cleanup-ran'), 'w') as f:  # noqa: F821
        f.write('yes')


def test_cleanup_function_runs_on_the_node(node):
    with cluster_for(node, lookup, setup=init_globals, cleanup=cleaner) as c:
        c.submit(1)()
    with open(os.path.join(node.prefix, 'cleanup-ran')) as f:
        assert f.read() == 'yes'


# --- secrets and raw peers ------------------------------------------------------------

def square(n):
    return n * n


def test_wrong_secret_is_refused_and_node_keeps_serving(caplog):
    with NodeProcess(cpus=1, secret='right') as node:
        with cluster_for(node, square, secret='wrong') as c:
            submit_unserved(c, 2)
        assert any('secret mismatch' in r.getMessage() for r in caplog.records)
        assert 'secret mismatch' in node.log()
        with cluster_for(node, square, secret='right') as c:
            assert c.submit(3)() == 9


def _raw(node, data: bytes) -> bytes:
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(4096):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b''.join(chunks)


def test_incompatible_peer_is_told_why(node):
    hello = hs.ClientHandshake('').hello()
    old = hello[:3] + bytes([99]) + hello[4:12] + bytes([99]) + hello[13:]
    reply = _raw(node, old)
    assert b'incompatible peer' in reply


def test_garbage_and_pickles_before_auth_are_dropped(node):
    import pickle
    assert _raw(node, b'GET / HTTP/1.0\r\n\r\n') == b'' or b'magic' in _raw(node, b'xx' * 20)
    evil = pickle.dumps(('x', 1))
    reply = _raw(node, b'DLK\x01\x00\x10\x00\x00' + len(evil).to_bytes(4, 'big') + evil)
    assert b'expected HELLO' in reply
    with cluster_for(node, square) as c:
        assert c.submit(4)() == 16


# --- embedded node and CLI ------------------------------------------------------------

def test_local_node_needs_no_daemon():
    with dispylike.JobCluster(square, nodes=[dispylike.LocalNode(cpus=2)]) as c:
        assert [c.submit(i)() for i in range(5)] == [0, 1, 4, 9, 16]
        (node,) = c.status()
        assert node.ip_addr == '127.0.0.1' and node.cpus == 2


@pytest.mark.parametrize('args, words', [(['-c', '999'], 'more than'),
                                         (['--bogus'], 'unrecognized'),
                                         (['-c', '-999'], 'leaves no CPU')])
def test_dispynode_bad_options_exit_non_zero(args, words):
    proc = subprocess.run([sys.executable, '-m', 'dispylike.node', *args], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0 and words in proc.stderr


# --- memory of the computation process -------------------------------------------------

def medium_result(n):
    return b'm' * n


def resident_anon_kb(pid):
    with open(f'/proc/{pid}/smaps_rollup') as f:
        return int(f.read().split('Anonymous:')[1].split('kB')[0])


def test_memory_freed_after_medium_results_goes_back_before_the_next_forks():
    """Results under 1 MiB pass through the computation process; the memory that held
    them is kept for reuse while busy but returned once idle, since each page it
    holds is copied at every fork and torn down at every exit of a job process."""
    with NodeProcess(cpus=2) as node, cluster_for(node, medium_result) as c:
        assert c.submit(10)() == b'm' * 10
        with open(f'/proc/{node.proc.pid}/task/{node.proc.pid}/children') as f:
            zygote = int(f.read().split()[0])
        base = resident_anon_kb(zygote)
        jobs = [c.submit(900_000) for _ in range(120)]
        assert all(len(job()) == 900_000 for job in jobs)
        wait_until(lambda: resident_anon_kb(zygote) < base + 3000, 20,
                   f'the computation process back near {base} kB (it holds '
                   f'{resident_anon_kb(zygote)} kB)')
