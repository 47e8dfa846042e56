"""How many spares the computation process forks at a time (fork per job): a large
burst while jobs wait there, a small one otherwise, and the reports made so far go
out before the burst.  No process is forked: Zygote._spawn is replaced."""

import pytest

from dispylike.execution import zygote
from dispylike.execution.jobqueue import WaitingJob


@pytest.fixture
def zyg():
    z = zygote.Zygote(ctl=-1)
    z.spare_low = 2
    z.spare_high = zygote.IDLE_SPARES_PER_CPU * 2
    z.spare_burst = zygote.BUSY_SPARES_PER_CPU * 2
    z.events = []
    z.flush = lambda: z.events.append('flush')

    def spawn(count, rehearsal=False):
        z.events.append(('spawn', count, rehearsal))
        return [object()] * count
    z._spawn = spawn
    yield z
    z.poller.close()


def test_with_no_job_waiting_the_refill_is_small_and_rehearsed(zyg):
    zyg._top_up(rehearsal=True)
    assert zyg.events == ['flush', ('spawn', zyg.spare_high, True)]


def test_with_jobs_waiting_the_refill_is_a_large_burst_after_the_reports(zyg):
    zyg.queue.add(WaitingJob(1, 0, b''))
    zyg.spares.append(object())
    zyg._top_up()
    assert zyg.events == ['flush', ('spawn', zyg.spare_burst - 1, False)]
    assert zyg.spare_burst > zyg.spare_high


def test_an_idle_refill_stays_small_even_with_jobs_queued(zyg):
    zyg.queue.add(WaitingJob(1, 0, b''))
    zyg._top_up(idle=True)
    assert zyg.events == ['flush', ('spawn', zyg.spare_high, True)]


def test_no_refill_while_enough_spares_are_left(zyg):
    zyg.spares.extend([object()] * zyg.spare_low)
    zyg._top_up()
    assert zyg.events == []
