"""DispyJob: waiting, and what a finished job keeps."""

import threading

from dispylike.job import DispyJob
from dispylike.status import JobStatus


def test_a_finished_job_drops_what_only_a_running_job_needs():
    job = DispyJob(1, (2,), {}, b'payload', threading.Lock())
    job._id_hook = print
    results = []
    waiter = threading.Thread(target=lambda: results.append(job(timeout=10)))
    waiter.start()
    while job._event is None:          # the waiter made its event
        threading.Event().wait(0.01)
    job._finish(JobStatus.Finished, 4, '', '', None, 1.0)
    waiter.join(10)
    assert results == [4]                                     # the waiter still woke
    assert job._event is None and job._id_hook is None and job._payload is None
    assert job() == 4 and job.wait(0)                         # and later calls return at once
