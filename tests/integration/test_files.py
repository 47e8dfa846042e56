"""Files both ways: dispy_send_file from jobs, cluster.send_file to nodes; names confined,
sizes capped, on the node and on the client."""

import asyncio
import os
import sys
import threading
import time

import cloudpickle

import dispylike
from dispylike.driver import management
from dispylike.testing import NodeProcess, submit_unserved

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_and_send(name, size):
    import os
    os.makedirs(os.path.dirname(name) or '.', exist_ok=True)
    with open(name, 'wb') as f:
        f.write(b'x' * size)
    return dispy_send_file(name)  # noqa: F821


def send_outside(kind):
    import os
    if kind == 'absolute':
        return dispy_send_file('/etc/hostname')  # noqa: F821
    if kind == 'dotdot':
        with open('../escape.txt', 'w') as f:
            f.write('no')
        return dispy_send_file('../escape.txt')  # noqa: F821
    os.symlink('/etc/hostname', 'link')
    return dispy_send_file('link')  # noqa: F821


def test_dispy_send_file_lands_under_the_client_directory(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dispylike.JobCluster(make_and_send, nodes=[node.address]) as c:
        assert c.submit('out/result.bin', 1000)() == 0
    assert (tmp_path / 'out' / 'result.bin').read_bytes() == b'x' * 1000


def test_close_waits_for_files_sent_by_jobs_still_being_saved(node, tmp_path, monkeypatch):
    """A file sent by a job is saved on a thread of the client: close() right after the
    job's result must not return before it is on disk (a slow disk, here: the save
    starts once close() is called, and takes half a second more)."""
    monkeypatch.chdir(tmp_path)
    closing = threading.Event()
    save = management.save_job_file

    def slow_save(relpath, data, node_name):
        assert closing.wait(30)
        time.sleep(0.5)
        save(relpath, data, node_name)

    monkeypatch.setattr(management, 'save_job_file', slow_save)
    c = dispylike.JobCluster(make_and_send, nodes=[node.address])
    try:
        assert c.submit('result.bin', 1000)() == 0
    finally:
        closing.set()
        c.close()
    assert (tmp_path / 'result.bin').read_bytes() == b'x' * 1000


def test_dispy_send_file_refuses_paths_outside_the_job_directory(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dispylike.JobCluster(send_outside, nodes=[node.address]) as c:
        jobs = {kind: c.submit(kind) for kind in ('absolute', 'dotdot', 'symlink')}
        for kind, job in jobs.items():
            assert job() == -1, kind
            assert 'outside the job directory' in job.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_dispy_send_file_refuses_files_over_the_node_limit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with NodeProcess(cpus=1, extra=['--max_file_size', '1000']) as node:
        with dispylike.JobCluster(make_and_send, nodes=[node.address]) as c:
            big = c.submit('big.bin', 2000)
            small = c.submit('small.bin', 10)
            assert big() == -1 and 'larger than the limit' in big.stderr
            assert small() == 0
    assert sorted(os.listdir(tmp_path)) == ['small.bin']


def read_file(name):
    with open(name, 'rb') as f:
        return f.read()


def test_cluster_send_file_copies_by_base_name(tmp_path):
    src = tmp_path / 'sub' / 'data.bin'
    src.parent.mkdir()
    src.write_bytes(b'payload')
    big = tmp_path / 'big.bin'
    big.write_bytes(b'y' * 5000)
    with NodeProcess(cpus=1, extra=['--max_file_size', '1000']) as node:
        with dispylike.JobCluster(read_file, nodes=[node.address]) as c:
            assert c.submit('nothing-yet') is not None
            c.wait()
            assert c.send_file(str(src), '127.0.0.1') == 0
            assert c.submit('data.bin')() == b'payload'
            assert c.send_file(str(big), '127.0.0.1') == -1          # over the node's limit
            assert c.send_file(str(tmp_path / 'missing'), '127.0.0.1') == -1
            assert c.send_file(str(src), 'no-such-node') == -1
        assert 'refused file' in node.log()


def helper_for_one_job(x):
    return x * 100


def uses_job_depends(name):
    import os
    helper = globals().get('helper_for_one_job')   # by name: not captured with this function
    if helper is None:
        return 'no helper', None, os.getcwd()
    with open(name) as f:
        text = f.read()
    return text, helper(2), os.getcwd()


def lists_dir(_):
    import os
    return sorted(os.listdir('.'))


def test_job_depends_for_one_job_only_and_removed_after(node, tmp_path):
    data = tmp_path / 'job-input.txt'
    data.write_text('per job')
    with dispylike.JobCluster(uses_job_depends, nodes=[node.address], cleanup=False) as c:
        job = c.submit('job-input.txt', dispy_job_depends=[str(data), helper_for_one_job])
        text, helped, cwd = job()
        assert (text, helped) == ('per job', 200) and job.args == ('job-input.txt',)
        assert not os.path.exists(os.path.join(cwd, 'job-input.txt'))   # even cleanup=False
        assert c.submit('job-input.txt')()[0] == 'no helper'    # another job has neither
        helper_only = c.submit('job-input.txt', dispy_job_depends=[helper_for_one_job])
        assert helper_only() is None and 'FileNotFoundError' in helper_only.exception


async def _store_files(node, files, dest='hostile', cleanup=True):
    """Set up a computation over a raw connection and send ``files`` ((relpath, data)):
    returns the node's FileStored answers by relpath."""
    from dispylike.execution.computation import package
    from dispylike.protocol import messages as m
    from dispylike.transport.connection import connect
    comp_id = os.urandom(16).hex()
    conn = await connect(node.host, node.port, '')
    try:
        conn.send(m.SetupComputation(comp_id, 'read_file', 'tester', dest,
                                     package(read_file).code, cleanup, 0.0))
        for relpath, data in files:
            conn.send(m.FileChunk(comp_id, relpath, 0, data, True, 0o644))
        answers = {}
        while len(answers) < len(files):
            msg = await asyncio.wait_for(conn.recv(), 20)
            assert isinstance(msg, m.FileStored), msg
            answers[msg.relpath] = msg.error
        conn.send(m.CloseComputation(comp_id, True))  # frees the node for the next one
        assert isinstance(await asyncio.wait_for(conn.recv(), 20), m.ComputationClosed)
        return answers
    finally:
        conn.abort()


def test_node_confines_file_names_from_the_client(node, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    dest = os.path.join(node.prefix, 'hostile')
    os.makedirs(dest)
    os.symlink(outside, os.path.join(dest, 'dirlink'))            # planted by an earlier job
    os.symlink(outside / 'victim', os.path.join(dest, 'filelink'))
    os.mkfifo(os.path.join(dest, 'fifo'))
    bad = ['/etc/x', '../x', 'a/../../x', 'dirlink/x', 'filelink', 'fifo', 'fifo/x', '']
    answers = asyncio.run(_store_files(node, [(name, b'evil') for name in bad]
                                       + [('ok/good.txt', b'fine')], cleanup=False))
    assert answers.pop('ok/good.txt') == ''
    assert all(answers[name] for name in bad), answers
    assert os.listdir(outside) == []
    assert sorted(os.listdir(dest)) == ['dirlink', 'fifo', 'filelink', 'ok']
    assert 'refused file' in node.log() and node.alive()


def test_node_caps_files_per_computation():
    with NodeProcess(cpus=1, extra=['--max_files', '3', '--max_total_file_size', '100']) as node:
        answers = asyncio.run(_store_files(node, [(f'f{i}', b'x' * 10) for i in range(5)]))
        assert [answers[f'f{i}'] for i in range(3)] == ['', '', '']
        assert 'stored 3 files' in answers['f3'] and 'stored 3 files' in answers['f4']
        answers = asyncio.run(_store_files(node, [('big1', b'x' * 60), ('big2', b'x' * 60)],
                                           dest='other'))
        assert answers['big1'] == '' and '100 bytes in all' in answers['big2']
        assert 'refused file' in node.log() and node.alive()


def test_cluster_with_too_many_depends_fails_setup_clearly(tmp_path):
    files = []
    for i in range(4):
        path = tmp_path / f'dep{i}.txt'
        path.write_text(str(i))
        files.append(str(path))
    with NodeProcess(cpus=1, extra=['--max_files', '2']) as node:
        with dispylike.JobCluster(read_file, nodes=[node.address], depends=files) as c:
            submit_unserved(c, 'dep0.txt')
        assert 'stored 2 files' in node.log()
        with dispylike.JobCluster(read_file, nodes=[node.address], depends=files[:2]) as c:
            assert c.submit('dep1.txt')() == b'1'
