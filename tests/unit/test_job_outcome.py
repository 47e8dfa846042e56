"""Turning a job process's raw output into an outcome (the node's side, pure)."""

import pickle
import signal

from dispylike.execution import channel
from dispylike.execution.host import outcome_from_report
from dispylike.status import JobStatus

EXITED_0 = 0
KILLED_SEGV = signal.SIGSEGV  # a raw wait status for "killed by signal"


def output(status=JobStatus.Finished, body=b'payload', size=None):
    head = channel.RESULT_HEADER.pack(int(status), 1.0, 2.0, len(body) if size is None else size)
    return head + body


def test_complete_result():
    out = outcome_from_report(EXITED_0, 0.5, output())
    assert (out.status, out.start_time, out.end_time, out.payload) == (
        JobStatus.Finished, 1.0, 2.0, b'payload')
    assert channel.result_complete(output())


def test_terminated_by_exception_is_passed_on():
    assert outcome_from_report(EXITED_0, 0, output(JobStatus.Terminated)).status is \
        JobStatus.Terminated


def test_no_output_says_how_the_process_died():
    out = outcome_from_report(KILLED_SEGV, 0, b'')
    assert out.status is JobStatus.Terminated
    message = pickle.loads(out.payload)[3]
    assert 'SIGSEGV' in message and 'without a result' in message
    exit3 = outcome_from_report(3 << 8, 0, b'')
    assert 'exit status 3' in pickle.loads(exit3.payload)[3]


def test_truncated_output_is_no_result():
    cut = output(body=b'x' * 100)[:-10]
    assert not channel.result_complete(cut)
    out = outcome_from_report(KILLED_SEGV, 0, cut)
    assert out.status is JobStatus.Terminated and 'SIGSEGV' in pickle.loads(out.payload)[3]


def test_malformed_output_is_refused():
    for bad in (output(status=JobStatus.Running), output(body=b'abc', size=1), b'\x00' * 5):
        out = outcome_from_report(EXITED_0, 0, bad)
        assert out.status is JobStatus.Terminated
        assert out.payload != b'abc'
    assert outcome_from_report(EXITED_0, 0, 'not bytes').status is JobStatus.Terminated

