"""When a node lets a job's reply wait for others (JobFlow._hold): only while the jobs
of its computation waiting on the node keep its CPUs busy for longer than the wait."""

import time
from types import SimpleNamespace

from dispylike.node.jobs import REPLY_HOLD_COVER, JobFlow
from dispylike.transport.session import REPLY_HOLD


def comp(queued=0, waiting_at_host=0, gap=0.0, since_last_end=None):
    now = time.monotonic()
    return SimpleNamespace(
        queued=set(range(queued)), host=SimpleNamespace(waiting=waiting_at_host), gap=gap,
        last_end=0.0 if since_last_end is None else now - since_last_end)


def test_held_only_while_the_waiting_jobs_cover_the_wait():
    gap = 2 * REPLY_HOLD_COVER * REPLY_HOLD          # jobs end this far apart
    assert JobFlow._hold(comp(queued=1, gap=gap, since_last_end=gap))
    assert JobFlow._hold(comp(waiting_at_host=1, gap=gap, since_last_end=gap))
    assert not JobFlow._hold(comp(gap=gap, since_last_end=gap))   # nothing waits (W2, W4)
    short = REPLY_HOLD / 10                          # many short jobs: more must wait
    assert not JobFlow._hold(comp(queued=REPLY_HOLD_COVER * 5, gap=short,
                                  since_last_end=short))
    assert JobFlow._hold(comp(queued=REPLY_HOLD_COVER * 20, gap=short, since_last_end=short))


def test_the_first_job_end_is_not_held_and_the_average_follows_the_ends():
    first = comp(queued=100)
    assert not JobFlow._hold(first)                  # no time between ends known yet
    assert first.gap == 0.0 and first.last_end > 0
    later = comp(queued=1, gap=0.0, since_last_end=0.8)
    JobFlow._hold(later)
    assert abs(later.gap - 0.1) < 0.01               # 1/8 of the way to 0.8 s


def test_a_cpu_still_counted_lent_is_no_waiting_job():
    gap = 2 * REPLY_HOLD_COVER * REPLY_HOLD
    # the ending job's CPU goes back after the reply is made: the process then reports
    # one job fewer waiting than none
    assert not JobFlow._hold(comp(waiting_at_host=-1, gap=gap, since_last_end=gap))
    assert JobFlow._hold(comp(queued=1, waiting_at_host=-1, gap=gap, since_last_end=gap))

