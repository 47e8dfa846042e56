"""Jobs waiting in a computation process for a CPU the node lent it (pure)."""

from dispylike.execution.jobqueue import JobQueue, WaitingJob


def queue_of(*uids):
    queue = JobQueue()
    for uid in uids:
        queue.add(WaitingJob(uid, 1, b''))
    return queue


def test_a_lent_cpu_starts_the_oldest_waiting_job():
    queue = queue_of(1, 2)
    assert queue.lend().uid == 1 and queue.running == 1


def test_an_ending_job_passes_its_cpu_on_then_gives_it_back():
    queue = queue_of(1, 2, 3)
    queue.lend()
    assert queue.ended().uid == 2
    assert queue.ended().uid == 3
    assert queue.ended() is None and queue.running == 0


def test_a_cpu_lent_with_nothing_waiting_goes_back():
    queue = JobQueue()
    assert queue.lend() is None and queue.running == 0


def test_cpus_taken_back_are_returned_as_jobs_end():
    queue = queue_of(1, 2, 3, 4)
    queue.lend()
    queue.lend()
    queue.give_back(1)
    assert queue.ended() is None             # given back, though jobs wait
    assert queue.ended().uid == 3            # the other CPU passes on
    assert queue.running == 1 and queue.owed == 0


def test_cancel_and_drop_remove_waiting_jobs_only():
    queue = queue_of(1, 2, 3)
    queue.lend()
    assert queue.cancel(1) is None           # running, not waiting
    assert queue.cancel(2).uid == 2
    assert queue.cancel(2) is None           # once
    assert [job.uid for job in queue.drop()] == [3]
    assert queue.ended() is None and not queue.waiting


def test_take_next_gives_the_oldest_small_inline_job_and_put_back_makes_it_first_again():
    q = JobQueue()
    q.add(WaitingJob(1, 0, b'x' * 10))
    q.add(WaitingJob(2, 0, b'y'))
    assert q.take_next(5) is None                 # too large to write ahead: it waits
    job = q.take_next(10)
    assert job.uid == 1 and list(q.waiting) == [2]
    q.put_back(job)
    assert list(q.waiting) == [1, 2]
    q.give_back(1)
    assert q.take_next(10) is None                # a CPU is owed: nothing more runs on it


def test_take_next_leaves_jobs_whose_arguments_are_in_a_file():
    q = JobQueue()
    q.add(WaitingJob(1, 0, '/dev/shm/some-transfer-file'))
    assert q.take_next(1 << 20) is None and list(q.waiting) == [1]
