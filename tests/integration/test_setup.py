"""A computation's life on a node: setup return modes, --unsafe_setup, per-node
setup_args and depends, cleanup and dispynode_shutdown, file reuse with cleanup=False."""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike.testing import NodeProcess, submit_unserved

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def cluster_for(node, compute, **kw):
    return dispylike.JobCluster(compute, nodes=[(node.host, node.port)], **kw)


def make_setup(mode, data=None, unpicklable=False):
    """A setup that records its pid in a file and (optionally) in globals."""
    def setup():
        import os
        import threading
        global SETUP_PID, DATA, LOCK
        with open('setup_pid', 'w') as f:
            f.write(str(os.getpid()))
        if data is not None:
            SETUP_PID, DATA = os.getpid(), data
        if unpicklable:
            LOCK = threading.Lock()
        return mode
    return setup


def where(_):
    import os
    with open('setup_pid') as f:
        setup_pid = int(f.read())
    g = globals()
    return setup_pid, os.getppid(), g.get('SETUP_PID'), g.get('DATA')


@pytest.mark.parametrize('mode, data, forked_from_setup', [
    (2, None, True),          # 2: always the setup process
    (2, {'k': 1}, True),
    (0, {'k': [1, 2]}, True),  # 0 with globals: the setup process
    (0, None, False),         # 0 without globals: a fresh process
    (1, {'k': (3, 'x')}, False),  # 1: a fresh process, globals copied as plain data
])
def test_setup_return_value_picks_where_jobs_fork_from(node, mode, data, forked_from_setup):
    with cluster_for(node, where, setup=make_setup(mode, data)) as c:
        results = [c.submit(i)() for i in range(3)]
    for setup_pid, parent, global_pid, got in results:
        assert (parent == setup_pid) is forked_from_setup, (mode, setup_pid, parent)
        assert got == data
        if data is not None:
            assert global_pid == setup_pid      # the globals setup made, in every job


def test_setup_returning_1_with_a_global_that_is_not_plain_data_fails(node, caplog):
    statuses = []
    with cluster_for(node, where, setup=make_setup(1, {'k': 1}, unpicklable=True),
                     cluster_status=lambda s, n, j: statuses.append((s, n))) as c:
        submit_unserved(c, 1, wait=3)
    text = '\n'.join(r.getMessage() for r in caplog.records)
    assert "'LOCK' is a lock" in text and 'plain data' in text
    assert any(s == dispylike.DispyNode.Closed and n is not None for s, n in statuses)


@pytest.mark.parametrize('value', [5, None, 'ok'])
def test_setup_returning_anything_else_fails(node, caplog, value):
    with cluster_for(node, where, setup=make_setup(value)) as c:
        submit_unserved(c, 1, wait=3)
    assert any(f'setup returned {value!r}' in r.getMessage() for r in caplog.records)


def pid_file_cleanup():
    import os
    with open(os.path.join(dispy_job_path, '..', 'cleanup_pid'), 'w') as f:  # noqa: F821
        f.write(str(os.getpid()))


def test_unsafe_setup_runs_setup_and_cleanup_in_the_node_process():
    with NodeProcess(cpus=2, extra=['--unsafe_setup']) as node:
        with cluster_for(node, where, setup=make_setup(2, {'k': 'v'}),
                         cleanup=pid_file_cleanup) as c:
            setup_pid, parent, global_pid, data = c.submit(1)()
        assert setup_pid == global_pid == node.proc.pid     # setup ran in dispynode
        assert parent != node.proc.pid and data == {'k': 'v'}   # jobs: a forked process
        with open(os.path.join(node.prefix, 'cleanup_pid')) as f:
            assert int(f.read()) == node.proc.pid
        assert node.alive()


def test_default_setup_and_cleanup_never_run_in_the_node_process(node):
    with cluster_for(node, where, setup=make_setup(2, {'k': 'v'}),
                     cleanup=pid_file_cleanup) as c:
        setup_pid, parent, _, _ = c.submit(1)()
    with open(os.path.join(node.prefix, 'cleanup_pid')) as f:
        cleanup_pid = int(f.read())
    assert node.proc.pid not in (setup_pid, cleanup_pid)


# --- per-node setup_args and depends ------------------------------------------------------

def remember(tag):
    global TAG
    TAG = tag
    return 0


def tag_and_file(_):
    import os
    return TAG, sorted(f for f in os.listdir('.') if f.startswith('only-'))  # noqa: F821


def test_node_allocate_setup_args_and_depends_are_per_node(node, node1, tmp_path):
    files = []
    for name in ('only-a', 'only-b'):
        (tmp_path / name).write_text(name)
        files.append(str(tmp_path / name))
    specs = [dispylike.NodeAllocate(node.host, node.port, setup_args=('A',), depends=[files[0]]),
             dispylike.NodeAllocate(node1.host, node1.port, setup_args=('B',),
                                    depends=[files[1]])]
    with dispylike.JobCluster(tag_and_file, nodes=specs, setup=remember) as c:
        deadline = time.time() + 20
        while len(c.status()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        by_port = {n.port: n for n in c.status()}
        got_a = c.submit_node(by_port[node.port], 0)()
        got_b = c.submit_node(by_port[node1.port], 0)()
    assert got_a == ('A', ['only-a']) and got_b == ('B', ['only-b'])


# --- dispynode_shutdown ------------------------------------------------------------------

def shutdown_cleanup():
    dispynode_shutdown()  # noqa: F821


def square(n):
    return n * n


def test_cleanup_may_shut_down_a_node_started_with_client_shutdown():
    with NodeProcess(cpus=1, extra=['--client_shutdown']) as node:
        with cluster_for(node, square, cleanup=shutdown_cleanup) as c:
            assert c.submit(3)() == 9
        node.proc.wait(20)
        assert node.proc.returncode == 0
        assert 'dispynode_shutdown() called' in node.log()


def test_dispynode_shutdown_is_ignored_without_client_shutdown(node):
    with cluster_for(node, square, cleanup=shutdown_cleanup) as c:
        assert c.submit(3)() == 9
    time.sleep(0.5)
    assert node.alive() and 'dispynode_shutdown() ignored' in node.log()
    with cluster_for(node, square) as c:
        assert c.submit(4)() == 16


# --- cleanup=False: files kept and reused -----------------------------------------------

def read_blob(_):
    with open('blob.bin', 'rb') as f:
        data = f.read()
    return len(data), data[:4]


def run_and_measure(node, blob, **kw):
    with cluster_for(node, read_blob, depends=[str(blob)], **kw) as c:
        result = c.submit(0)()
        (info,) = c.status()
        return result, info.tx


def test_cleanup_false_with_the_same_dest_path_does_not_resend_unchanged_files(node, tmp_path):
    blob = tmp_path / 'blob.bin'
    blob.write_bytes(b'AAAA' + os.urandom(1 << 20))
    kw = {'cleanup': False, 'dest_path': 'kept'}
    first, sent_first = run_and_measure(node, blob, **kw)
    second, sent_second = run_and_measure(node, blob, **kw)
    assert first == second == ((1 << 20) + 4, b'AAAA')
    assert sent_first >= 1 << 20 and sent_second < 64 * 1024      # not sent again
    blob.write_bytes(b'BBBB' + os.urandom(1 << 20))                # same size, new content
    third, sent_third = run_and_measure(node, blob, **kw)
    assert third == ((1 << 20) + 4, b'BBBB') and sent_third >= 1 << 20


def test_force_cleanup_removes_files_kept_by_cleanup_false(tmp_path):
    blob = tmp_path / 'blob.bin'
    blob.write_bytes(os.urandom(1000))
    with NodeProcess(cpus=1, extra=['--force_cleanup']) as node:
        run_and_measure(node, blob, cleanup=False, dest_path='kept')
        assert not os.path.exists(os.path.join(node.prefix, 'kept'))
    with NodeProcess(cpus=1) as node:
        run_and_measure(node, blob, cleanup=False, dest_path='kept')
        assert os.path.exists(os.path.join(node.prefix, 'kept', 'blob.bin'))
