"""The node under misuse: protocol violations, dying computation processes, shutdown."""

import asyncio
import os
import sys

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.errors import ConnectionClosed
from dispylike.execution.computation import package
from dispylike.protocol import messages as m
from dispylike.testing import NodeProcess
from dispylike.transport.connection import connect

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(n):
    return n * n


def cluster_for(node, compute=square, **kw):
    return dispylike.JobCluster(compute, nodes=[(node.host, node.port)], **kw)


def test_close_without_jobs_releases_the_node_at_once(node):
    with cluster_for(node):
        pass                                  # joined, ran nothing, closed
    with cluster_for(node) as c:
        job = c.submit(3)
        assert job.wait(20) and job.result == 9


async def _node_info(node):
    conn = await connect(node.host, node.port, '')
    conn.send(m.NodeInfoRequest(''))
    info = await conn.recv()
    await conn.close()
    return info


async def _misbehave(node, messages):
    conn = await connect(node.host, node.port, '')
    for msg in messages:
        conn.send(msg)
    try:
        with pytest.raises(ConnectionClosed):
            while True:                       # the node hangs up on the violation
                await asyncio.wait_for(conn.recv(), 20)
    finally:
        conn.abort()


def test_protocol_violations_close_only_that_client_and_leak_nothing(node):
    code = package(square).code
    c1 = 'c1' * 16
    setup = [m.SetupComputation(c1, 'square', 'bad', '', code, True, 0.0),
             m.StartComputation(c1, b'')]
    payload = cloudpickle.dumps(((2,), {}))
    cases = [
        [m.RunJobs('nope', ((1, 1, payload),))],                        # unknown computation
        [m.SetupComputation(c1, 'x', 'bad', '', code, True, 0.0)] * 2,  # set up twice
        setup + [m.RunJobs(c1, ((1, 1, payload), (1, 2, payload)))],    # job sent twice
        setup + [m.StartComputation(c1, b'')],                           # started twice
        [m.SetupComputation('/../../x' + '0' * 24, 'x', 'bad', '', code, True, 0.0)],  # a path
    ]
    for messages in cases:
        asyncio.run(_misbehave(node, messages))
    info = asyncio.run(_node_info(node))
    assert info.busy_with == '' and info.avail_cpus == info.cpus == 2
    with cluster_for(node) as c:
        assert [c.submit(i)() for i in range(4)] == [0, 1, 4, 9]


def kill_my_zygote(_):
    import os
    import signal
    os.kill(os.getppid(), signal.SIGKILL)


def test_dead_computation_process_drops_the_link_instead_of_failing_jobs(node):
    with cluster_for(node, kill_my_zygote) as c:
        jobs = [c.submit(i) for i in range(2)]      # one per CPU: both are on the node
        assert c.wait(30)
        assert all(j.status == DispyJob.Abandoned for j in jobs), [j.exception for j in jobs]
    assert 'disconnecting the client' in node.log()
    with cluster_for(node) as c:
        assert c.submit(5)() == 25


def loud(n):
    import os
    os.write(1, b'x' * n)                     # straight to fd 1, past sys.stdout
    return n


def test_embedded_node_survives_jobs_writing_to_fd1():
    with dispylike.JobCluster(loud, nodes=[dispylike.LocalNode(cpus=1)]) as c:
        job = c.submit(200_000)
        assert job.wait(30) and job.result == 200_000


def where(_):
    return dispy_job_path  # noqa: F821


def test_sigterm_terminates_jobs_and_removes_files():
    node = NodeProcess(cpus=1)
    try:
        c = cluster_for(node, where)
        path = c.submit(0)()
        assert os.path.isdir(path)
        assert node.stop() == 0
        assert not os.path.exists(path)
        c.close(timeout=5, terminate=True)
    finally:
        node.stop()

