"""Large arguments and results go between node and job process as transfer files in
/dev/shm (not through the computation process): correct both ways, fork per job and
warm, cleaned up, confined to the transfer directory.  A client on the node's host
(these tests: the node runs here) also writes large arguments into that directory
and reads large results from it, unless it cannot reach it: then the socket."""

import glob
import os
import sys
import time

import cloudpickle
import pytest

import dispylike
from dispylike import DispyJob
from dispylike.execution import xfer
from dispylike.testing import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.skipif(not os.path.isdir(xfer.SHM), reason='no /dev/shm')

MB = 1_000_000


def grow(data, factor):
    return data * factor


def node_files(node):
    """The files in the node's transfer directories (but the token)."""
    return [f for d in glob.glob(os.path.join(xfer.SHM, f'dispylike-xfer-{node.pid}-*'))
            for f in os.listdir(d) if f != xfer.TOKEN]


def counted(func, results):
    """``func`` (a function or method of the client's) that also records what each call
    returned."""
    def wrapper(*args):
        result = func(*args)
        results.append(result)
        return result
    return wrapper


@pytest.mark.parametrize('shared', [True, False], ids=['same-host', 'socket'])
@pytest.mark.parametrize('warm', [False, True])
def test_large_arguments_and_results_arrive_whole_and_leave_nothing(node, warm, shared,
                                                                    monkeypatch):
    from dispylike.driver import samehost
    if not shared:            # as for a node on another host: everything by socket
        monkeypatch.setenv('DISPYLIKE_SAMEHOST', '0')
    args, mapped = [], []
    monkeypatch.setattr(samehost.SharedDir, 'arguments',
                        counted(samehost.SharedDir.arguments, args))
    monkeypatch.setattr(samehost.xfer, 'map_result', counted(samehost.xfer.map_result, mapped))
    big = os.urandom(1000) * 3000                                 # 3 MB: by file
    with dispylike.JobCluster(grow, nodes=[node.address], warm_workers=warm) as c:
        jobs = [c.submit(big, 2), c.submit(b'ab', 2 * MB), c.submit(b'small', 1)]
        assert jobs[0]() == big * 2
        assert jobs[1]() == b'ab' * 2 * MB
        assert jobs[2]() == b'small'
        assert glob.glob(os.path.join(xfer.SHM, f'dispylike-xfer-{node.pid}-*'))
        wait_until(lambda: all(f.startswith((xfer.SPARE, xfer.KEPT_ARGUMENTS))
                               for f in node_files(node)),
                   10, 'only files kept for reuse are left once results are acknowledged')
    assert glob.glob(os.path.join(xfer.SHM, f'dispylike-xfer-{node.pid}-*')) == []
    # the large argument (only) went as a file name, the two large results as paths
    by_name = [r for r in args if isinstance(r, str)]
    assert len(by_name) == (1 if shared else 0) and len(args) == (3 if shared else 0)
    assert len(mapped) == (2 if shared else 0)


def nap_then(data, seconds):
    import time
    time.sleep(seconds)
    return len(data)


def test_a_cancelled_waiting_job_leaves_no_transfer_file(node1):
    big = b'z' * (2 * MB)
    with dispylike.JobCluster(nap_then, nodes=[node1.address]) as c:
        for job in [c.submit(b'', 0) for _ in range(30)]:
            job()                              # short jobs: the next ones are prefetched
        running = c.submit(b'', 1.5)
        waiting = c.submit(big, 0)
        deadline = time.time() + 10
        while not node_files(node1) and time.time() < deadline:
            time.sleep(0.02)                   # its argument is in a file on the node
        assert len(node_files(node1)) == 1
        c.cancel(waiting)
        assert waiting() is None and waiting.status == DispyJob.Cancelled
        assert running() == 0
        assert node_files(node1) == []


def forge(kind):
    """Write a RESULT_FILE record by hand naming a file outside the transfer directory."""
    import os
    if kind == 'ok':
        return 'fine'

    from dispylike.execution import channel, jobproc
    head = channel.RESULT_HEADER.pack(11, 0.0, 0.0, 10)
    name = b'../../etc/passwd' if kind == 'outside' else b'missing.out'
    tail = head + name
    os.write(jobproc._job_wfd, channel.RECORD.pack(channel.RESULT_FILE, len(tail)) + tail)
    os._exit(0)


@pytest.mark.parametrize('kind', ['outside', 'missing'])
def test_a_forged_result_file_is_refused(node1, kind):
    with dispylike.JobCluster(forge, nodes=[node1.address]) as c:
        job = c.submit(kind)
        assert job() is None and job.status == DispyJob.Terminated
        assert 'malformed result' in job.exception
        assert c.submit('ok')() == 'fine'      # and the node carries on


@pytest.mark.parametrize('name', ['../../etc/passwd', 'c-missing.in', 'not-a-client-file'])
def test_a_bad_argument_file_fails_its_job_and_the_node_serves_on(node1, name, monkeypatch):
    """A RunJobs entry naming an argument file the node must not take (outside its
    directory, missing, not a client's) fails that job with a clear reason."""
    from dispylike.driver import samehost
    real = samehost.SharedDir.arguments
    monkeypatch.setattr(samehost.SharedDir, 'arguments', lambda self, uid, attempt, payload: (
        name if uid == 1 else real(self, uid, attempt, payload)))
    with dispylike.JobCluster(grow, nodes=[node1.address]) as c:
        bad = c.submit(b'x', 1)
        assert bad() is None and bad.status == DispyJob.Terminated
        assert 'did not reach the node' in bad.exception
        assert c.submit(b'y', 2)() == b'yy'
    assert os.path.exists('/etc/passwd')
