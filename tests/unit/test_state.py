"""The job/node state machine: every transition, stale and duplicate replies."""

from collections import Counter

import pytest

from dispylike.scheduling.state import Dispatch, Finalize, Requeued, Scheduler, SendCancel
from dispylike.status import JobStatus as S


def dispatches(actions):
    return [a for a in actions if isinstance(a, Dispatch)]


def test_created_then_running_then_finished():
    s = Scheduler()
    assert s.submit(1) == []                       # no node yet: stays Created
    assert s.status(1) is S.Created
    (d,) = s.add_node('a', 1)
    assert (d.uid, d.node) == (1, 'a') and s.status(1) is S.Running
    final, actions = s.reply(1, d.attempt, 'a', S.Finished)
    assert final is S.Finished and actions == [] and s.pending() == 0


def test_terminated_reply_is_final():
    s = Scheduler()
    s.add_node('a', 1)
    (d,) = s.submit(1)
    assert s.reply(1, d.attempt, 'a', S.Terminated)[0] is S.Terminated


def test_duplicate_reply_is_dropped():
    s = Scheduler()
    s.add_node('a', 1)
    (d,) = s.submit(1)
    assert s.reply(1, d.attempt, 'a', S.Finished)[0] is S.Finished
    assert s.reply(1, d.attempt, 'a', S.Finished) == (None, [])


def test_stale_attempt_and_wrong_node_dropped():
    s = Scheduler(reentrant=True)
    s.add_node('a', 1)
    s.add_node('b', 1)
    (d,) = s.submit(1)
    other = 'b' if d.node == 'a' else 'a'
    assert s.reply(1, d.attempt, other, S.Finished) == (None, [])
    assert s.reply(1, d.attempt + 100, d.node, S.Finished) == (None, [])
    assert s.status(1) is S.Running


def test_one_job_per_cpu_and_work_conserving():
    s = Scheduler()
    s.add_node('a', 2)
    ds = dispatches(sum((s.submit(i) for i in range(5)), []))
    assert len(ds) == 2
    final, actions = s.reply(ds[0].uid, ds[0].attempt, 'a', S.Finished)
    (nxt,) = dispatches(actions)
    assert nxt.uid == 2                              # FIFO order


def test_cancel_queued_job():
    s = Scheduler()
    s.submit(1)
    (f,) = s.cancel(1)
    assert f == Finalize(1, S.Cancelled, 'cancelled before it ran')
    assert s.add_node('a', 1) == []                  # the cancelled job never runs
    assert s.cancel(1) == []


def test_cancel_running_job_needs_node_reply():
    s = Scheduler()
    s.add_node('a', 1)
    (d,) = s.submit(1)
    (c,) = s.cancel(1)
    assert c == SendCancel(1, 'a', d.attempt)
    assert s.cancel(1) == []                         # not sent twice
    assert s.reply(1, d.attempt, 'a', S.Terminated)[0] is S.Cancelled


def test_node_lost_not_reentrant_abandons():
    s = Scheduler(reentrant=False)
    s.add_node('a', 2)
    s.submit(1)
    s.submit(2)
    out = s.remove_node('a')
    assert sorted((f.uid, f.status) for f in out) == [(1, S.Abandoned), (2, S.Abandoned)]
    assert s.pending() == 0


def test_node_lost_reentrant_reschedules_with_new_attempt_and_drops_late_reply():
    s = Scheduler(reentrant=True)
    s.add_node('a', 1)
    (d1,) = s.submit(1)
    assert s.remove_node('a') == [Requeued(1)]       # back in the queue, nowhere to run
    assert s.status(1) is S.Created
    (d2,) = s.add_node('b', 1)
    assert d2.uid == 1 and d2.attempt != d1.attempt
    assert s.reply(1, d1.attempt, 'a', S.Finished) == (None, [])   # late reply from 'a'
    assert s.reply(1, d2.attempt, 'b', S.Finished)[0] is S.Finished


def test_poison_pill_fails_after_max_losses():
    s = Scheduler(reentrant=True, max_losses=3)
    for n in range(3):
        s.add_node(f'n{n}', 1)
        if n == 0:
            s.submit(1)
        out = s.remove_node(f'n{n}')
    (f,) = [a for a in out if isinstance(a, Finalize)]
    assert f.status is S.Abandoned and 'lost while running this job 3 times' in f.reason


def test_pinned_jobs_wait_for_their_node():
    s = Scheduler()
    s.add_node('a', 1)
    s.add_node('b', 1)
    (d,) = s.submit(1, node='b')
    assert d.node == 'b'
    assert s.submit(2, node='b') == []               # b is busy; a stays idle for it
    (d2,) = dispatches(s.reply(1, d.attempt, 'b', S.Finished)[1])
    assert (d2.uid, d2.node) == (2, 'b')
    (f,) = s.submit(3, node='zz')
    assert f.status is S.Abandoned


def test_load_is_balanced_across_equal_nodes():
    s = Scheduler()
    for n in 'abc':
        s.add_node(n, 2)
    counts = Counter()
    running = []
    for uid in range(60):
        running += dispatches(s.submit(uid))
    while running:
        d = running.pop(0)
        counts[d.node] += 1
        running += dispatches(s.reply(d.uid, d.attempt, d.node, S.Finished)[1])
    assert sum(counts.values()) == 60
    assert all(15 <= c <= 25 for c in counts.values()), counts


def test_most_free_cpus_wins():
    s = Scheduler()
    s.add_node('small', 1)
    s.add_node('big', 4)
    firsts = [d.node for d in dispatches(s.submit(1) + s.submit(2) + s.submit(3))]
    assert firsts.count('big') >= 2


def test_not_accepting_and_set_cpus():
    s = Scheduler()
    s.add_node('a', 1)
    s.set_accepting('a', False)
    assert s.submit(1) == []
    (d,) = s.set_accepting('a', True)
    assert d.uid == 1
    assert len(dispatches(s.submit(2) + s.set_cpus('a', 2))) == 1


def test_submit_twice_and_bad_status():
    s = Scheduler()
    s.add_node('a', 1)
    (d,) = s.submit(1)
    with pytest.raises(ValueError):
        s.submit(1)
    with pytest.raises(ValueError):
        s.reply(1, d.attempt, 'a', S.Running)
    with pytest.raises(ValueError):
        s.add_node('b', -1)


def test_a_node_with_no_cpus_gets_no_job_even_when_prefetching():
    s = Scheduler()
    assert s.add_node('a', 0) == []
    assert s.set_prefetch('a', 4) == []
    assert s.submit(1) == []
    (d,) = s.set_cpus('a', 1)
    assert d.uid == 1


def test_prefetch_depth_follows_the_jobs_average_time():
    from dispylike.driver.engine import prefetch_per_cpu
    assert prefetch_per_cpu(0.0001) == 8        # trivial jobs: deep, a round trip is longer
    assert prefetch_per_cpu(0.01) == 2
    assert prefetch_per_cpu(0.05) == 0          # long jobs stay free for idle nodes


def test_a_prefetching_node_has_its_queue_refilled_in_batches():
    s = Scheduler()
    s.add_node('a', 2)
    s.set_prefetch('a', 16, refill=8)
    first = []
    for uid in range(100):
        first += dispatches(s.submit(uid))
    assert 2 <= len(first) <= 18
    inflight = [(d.uid, d.attempt) for d in first]
    per_reply = []
    while len(per_reply) < 40:
        uid, attempt = inflight.pop(0)
        new = dispatches(s.reply(uid, attempt, 'a', S.Finished)[1])
        inflight += [(d.uid, d.attempt) for d in new]
        per_reply.append(len(new))
    sent = [n for n in per_reply[8:] if n]
    assert sent and all(n == 8 for n in sent)         # one batch of 8 per 8 replies
    assert 2 <= len(inflight) <= 18                   # the node never runs dry nor over


def test_a_node_with_a_cpu_free_gets_a_job_whatever_its_refill():
    s = Scheduler()
    s.add_node('a', 2)
    s.set_prefetch('a', 16, refill=8)
    (d1,) = dispatches(s.submit(1))                   # a CPU free: at once
    assert d1.node == 'a'
    (d2,) = dispatches(s.submit(2))                   # the second CPU too
    assert d2.node == 'a'


def test_a_refill_larger_than_the_prefetch_is_capped_and_zero_means_each_slot():
    s = Scheduler()
    s.add_node('a', 1)
    s.set_prefetch('a', 2, refill=50)                # capped at 2: the queue still refills
    inflight = [(d.uid, d.attempt) for uid in range(10) for d in dispatches(s.submit(uid))]
    assert len(inflight) == 2                         # filled while 2 slots could go at once
    uid, attempt = inflight.pop(0)
    assert len(dispatches(s.reply(uid, attempt, 'a', S.Finished)[1])) == 2
    t = Scheduler()
    t.add_node('a', 1)
    t.set_prefetch('a', 4)                            # no refill: each free slot at once
    inflight = [(d.uid, d.attempt) for uid in range(10) for d in dispatches(t.submit(uid))]
    uid, attempt = inflight.pop(0)
    assert len(dispatches(t.reply(uid, attempt, 'a', S.Finished)[1])) == 1
