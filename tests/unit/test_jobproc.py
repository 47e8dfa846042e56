"""A job's run in its process (jobproc._run_one): the RESULT record it writes for
each kind of outcome, in-process on a pipe (no fork)."""

import os
import pickle
import types

import pytest

from dispylike.execution import channel, jobproc
from dispylike.status import JobStatus


class Loaded:
    kind, program = 'function', ''

    def __init__(self, func):
        self.func = func
        self.ns = types.ModuleType('ns')


def run(func, *args, **kwargs):
    """Run ``func(*args, **kwargs)`` as a job; returns (status, reply tuple, writes)."""
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    writes = []
    real_write = jobproc._write
    jobproc._write = lambda fd, buf: writes.append(len(buf)) or real_write(fd, buf)
    try:
        payload = pickle.dumps((args, kwargs), protocol=5)
        data = b''
        jobproc.widen_pipe(wfd, 1 << 20)
        jobproc._run_one(Loaded(func), payload, wfd)
        os.close(wfd)
        while chunk := os.read(rfd, 1 << 20):
            data += chunk
    finally:
        jobproc._write = real_write
        os.close(rfd)
    kind, length = channel.RECORD.unpack_from(data)
    assert kind == channel.RESULT and len(data) == channel.RECORD.size + length
    body = data[channel.RECORD.size:]
    assert channel.result_complete(body)
    status, start, end, size = channel.RESULT_HEADER.unpack_from(body)
    assert start <= end
    return status, pickle.loads(body[channel.RESULT_HEADER.size:]), writes


def test_a_small_result_goes_in_one_write_with_its_output():
    def job(n):
        print('out', n)
        return n * n
    status, reply, writes = run(job, 7)
    assert status == JobStatus.Finished
    assert reply == (49, 'out 7\n', '', None)
    assert len(writes) == 1


def test_a_large_result_is_pickled_as_pieces_without_a_copy(monkeypatch):
    big = b'x' * (2 * jobproc.PIECES_MIN)
    seen = []
    real = jobproc._serialize_reply
    monkeypatch.setattr(jobproc, '_serialize_reply',
                        lambda reply, status: seen.append(reply[0]) or real(reply, status))
    status, reply, _writes = run(lambda: big)
    assert status == JobStatus.Finished and reply[0] == big
    assert seen and seen[0] is big


def test_a_result_plain_pickle_refuses_goes_by_cloudpickle():
    status, reply, _writes = run(lambda: (lambda x: x + 1))
    assert status == JobStatus.Finished
    assert reply[0](1) == 2


def test_a_result_nothing_can_pickle_ends_the_job_with_the_reason():
    def job():
        print('partial output')
        return (i for i in range(3))      # a generator: no pickler takes it
    status, reply, _writes = run(job)
    assert status == JobStatus.Terminated
    assert reply[0] is None and reply[1] == 'partial output\n'
    assert 'could not be serialised' in reply[3]


def test_a_failing_job_ends_terminated_with_its_traceback():
    def job():
        raise ValueError('bad input')
    status, reply, _writes = run(job)
    assert status == JobStatus.Terminated
    assert reply[0] is None and 'ValueError: bad input' in reply[3]


def test_stdout_is_restored_even_when_the_job_replaces_it(capsys):
    import io
    import sys

    def job():
        sys.stdout = io.StringIO()
        print('lost')
        return 1
    before = sys.stdout
    status, reply, _writes = run(job)
    assert status == JobStatus.Finished and sys.stdout is before and reply[1] == ''


@pytest.mark.parametrize('size', [jobproc.SMALL - 100, jobproc.SMALL + 100])
def test_results_around_the_one_write_limit_arrive_whole(size):
    status, reply, _writes = run(lambda: b'y' * size)
    assert status == JobStatus.Finished and reply[0] == b'y' * size
