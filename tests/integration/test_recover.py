"""Crash recovery: a client killed with SIGKILL, then recover_jobs from another process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

import dispylike
from dispylike import DispyJob, RecoverFileError
from dispylike.protocol import messages as m
from dispylike.transport.connection import connect

CLIENT = textwrap.dedent('''
    import os, signal, sys, time
    import dispylike

    host, port, path, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    MARKS = sys.argv[5]                           # goes with work (by value)

    def work(n, pause=0.0):
        import os
        import time
        open(os.path.join(MARKS, f'started-{n}'), 'w').close()
        time.sleep(pause)
        return n * n

    cluster = dispylike.JobCluster(work, nodes=[(host, port)], recover_file=path,
                                   secret=secret)
    fast = [cluster.submit(i) for i in range(3)]
    for job in fast:
        job()                                   # seen by the client: not recovered
    slow = []
    for i in range(3, 7):
        job = cluster.submit(i, pause=1.5)
        job.id = f'slow-{i}'                    # ids set after submit are kept too
        slow.append(job)
    deadline = time.time() + 30                  # two run on the node, two wait here
    while (sum(os.path.exists(os.path.join(MARKS, f'started-{i}')) for i in range(3, 7)) < 2
           and time.time() < deadline):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)
''')


def crash_a_client(node, path, secret=''):
    marks = path.parent / f'{path.name}-started'
    marks.mkdir()
    proc = subprocess.run([sys.executable, '-c', CLIENT, node.host, str(node.port), str(path),
                           secret, str(marks)], capture_output=True, text=True, timeout=60)
    assert sum((marks / f'started-{i}').exists() for i in range(3, 7)) == 2, proc.stderr
    assert proc.returncode == -9, proc.stderr
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600


def assert_recovered(jobs):
    assert all(j.status == DispyJob.Finished for j in jobs), [j.exception for j in jobs]
    assert [j.result for j in jobs] == [int(j.id[5:]) ** 2 for j in jobs]


async def busy_with(node):
    conn = await connect(node.host, node.port, '')
    conn.send(m.NodeInfoRequest(''))
    info = await asyncio.wait_for(conn.recv(), 10)
    conn.abort()
    return info.busy_with


def test_recover_jobs_after_the_client_was_killed(node, tmp_path):
    path = tmp_path / 'rec'
    crash_a_client(node, path)
    assert 'disconnected' in asyncio.run(busy_with(node))
    jobs = dispylike.recover_jobs(str(path))
    assert [j.id for j in jobs] == [f'slow-{i}' for i in range(3, 7)]
    assert [(j.args, j.kwargs) for j in jobs] == [((i,), {'pause': 1.5}) for i in range(3, 7)]
    ran, unsent = jobs[:2], jobs[2:]
    assert_recovered(ran)
    assert all(j.ip_addr == node.host and j.end_time >= j.start_time for j in ran)
    assert all(j.status == DispyJob.Abandoned and 'never sent' in j.exception for j in unsent)
    assert asyncio.run(busy_with(node)) == ''            # released
    again = dispylike.recover_jobs(str(path))            # nothing left on the node
    assert all(j.status == DispyJob.Abandoned and 'no longer has' in j.exception
               for j in again[:2])


def test_recover_with_timeout_and_terminate_pending(node, tmp_path):
    path = tmp_path / 'rec'
    crash_a_client(node, path)
    jobs = dispylike.recover_jobs(str(path), timeout=0.1, terminate_pending=True)
    assert len(jobs) == 4 and all(j.done for j in jobs)
    assert all(j.status != DispyJob.Finished for j in jobs[:2])      # killed, not waited for
    assert asyncio.run(busy_with(node)) == ''


def test_recover_without_waiting_leaves_jobs_running_for_later(node, tmp_path):
    path = tmp_path / 'rec'
    crash_a_client(node, path)
    first = dispylike.recover_jobs(str(path), timeout=0.1)
    assert any(j.status == DispyJob.Running for j in first)
    assert asyncio.run(busy_with(node)) != ''            # still held: jobs run on
    later = dispylike.recover_jobs(str(path))
    assert_recovered(later[:2])


def test_recover_file_holds_no_secret_and_needs_it(node, tmp_path):
    secret = 'a-secret-not-in-the-file'
    with dispylike.testing.NodeProcess(cpus=2, secret=secret) as snode:
        path = tmp_path / 'rec'
        crash_a_client(snode, path, secret)
        assert secret.encode() not in path.read_bytes()
        with pytest.raises(dispylike.DispyError, match='secret'):
            dispylike.recover_jobs(str(path))
        assert_recovered(dispylike.recover_jobs(str(path), secret=secret)[:2])


def test_newest_default_file_is_used(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crash_a_client(node, tmp_path / '_dispy_20000101000000')
    jobs = dispylike.recover_jobs()
    assert len(jobs) == 4
    assert_recovered(jobs[:2])


def test_missing_or_corrupt_recover_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecoverFileError, match='no recover file|_dispy_'):
        dispylike.recover_jobs()
    (tmp_path / 'junk').write_bytes(b'not a recover file')
    with pytest.raises(RecoverFileError, match='not a dispylike recover file'):
        dispylike.recover_jobs(str(tmp_path / 'junk'))


def square(n):
    return n * n


def test_a_clean_close_removes_the_file_and_an_explicit_one_is_never_overwritten(node,
                                                                                 tmp_path):
    path = tmp_path / 'rec'
    with dispylike.JobCluster(square, nodes=[node.address], recover_file=str(path)) as c:
        assert path.exists()
        assert c.submit(3)() == 9
    assert not path.exists()
    path.write_bytes(b'left by a crash')
    with pytest.raises(RecoverFileError, match='exists'):
        dispylike.JobCluster(square, nodes=[node.address], recover_file=str(path))
    assert os.path.getsize(path) == len(b'left by a crash')


def test_default_files_of_clusters_made_in_one_second_do_not_clash(tmp_path, monkeypatch):
    from dispylike.client.recover import open_recover_file
    monkeypatch.chdir(tmp_path)
    kw = {'comp_id': 'c', 'name': 'n', 'client_name': 'me', 'secret': '',
          'tls_files': ('', '', '')}
    monkeypatch.setattr('dispylike.client.recover.default_recover_path',
                        lambda: './_dispy_20260101000000')
    first, j1 = open_recover_file(None, **kw)
    second, j2 = open_recover_file(None, **kw)
    assert first != second and second.startswith(first) and os.path.exists(second)
    j1.close(remove=True)
    j2.close(remove=True)
    with pytest.raises(RecoverFileError):
        open_recover_file(str(tmp_path / 'no-such-dir' / 'rec'), **kw)
