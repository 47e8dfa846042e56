"""CPU sharing and admission between the computations of a dispyscheduler (pure)."""

import pytest

from dispylike.scheduling.share import Admission, Demand, SharePolicy, share_cpus

NODES = {'n1': 2, 'n2': 2, 'n3': 2}
ALL = {'n1': 2, 'n2': 2, 'n3': 2}


def totals(given):
    return {comp: sum(per.values()) for comp, per in given.items()}


def test_first_come_serves_the_oldest_pending_job_first():
    a = Demand('A', pending=100, admitted=1, oldest=1, limits=ALL)
    b = Demand('B', pending=100, admitted=2, oldest=50, limits=ALL)
    assert totals(share_cpus(NODES, [a, b])) == {'A': 6, 'B': 0}
    # B's oldest job is now older than A's: B goes first
    a = Demand('A', pending=100, admitted=1, oldest=60, limits=ALL)
    assert totals(share_cpus(NODES, [a, b])) == {'A': 0, 'B': 6}


def test_no_computation_gets_more_cpus_than_it_has_jobs():
    a = Demand('A', pending=2, admitted=1, oldest=1, limits=ALL)
    b = Demand('B', pending=100, admitted=2, oldest=50, limits=ALL)
    assert totals(share_cpus(NODES, [a, b])) == {'A': 2, 'B': 4}


def test_fair_gives_equal_shares_and_interleaves_on_a_node():
    demands = [Demand(c, pending=100, admitted=i, oldest=i, limits=ALL)
               for i, c in enumerate('ABC')]
    given = share_cpus(NODES, demands, SharePolicy.FAIR)
    assert totals(given) == {'A': 2, 'B': 2, 'C': 2}
    assert given['A']['n1'] == 1 and given['B']['n1'] == 1


def test_fair_water_fills_what_a_small_computation_leaves():
    a = Demand('A', pending=1, admitted=1, oldest=1, limits=ALL)
    b = Demand('B', pending=100, admitted=2, oldest=2, limits=ALL)
    assert totals(share_cpus(NODES, [a, b], SharePolicy.FAIR)) == {'A': 1, 'B': 5}


def test_early_prefers_the_earliest_admitted():
    a = Demand('A', pending=100, admitted=1, oldest=99, limits=ALL)
    b = Demand('B', pending=100, admitted=2, oldest=1, limits=ALL)
    assert totals(share_cpus(NODES, [a, b], SharePolicy.EARLY)) == {'A': 6, 'B': 0}


def test_limits_per_node_and_nodes_not_set_up():
    a = Demand('A', pending=100, admitted=1, oldest=1, limits={'n1': 1})
    b = Demand('B', pending=100, admitted=2, oldest=2, limits=ALL)
    given = share_cpus(NODES, [a, b])
    assert given['A'] == {'n1': 1}
    assert given['B'] == {'n1': 1, 'n2': 2, 'n3': 2}
    # a node the scheduler lost is not handed out
    assert share_cpus({'n1': 2}, [b])['B'] == {'n1': 2}


@pytest.mark.parametrize('policy', list(SharePolicy))
def test_never_more_cpus_than_a_node_has(policy):
    demands = [Demand(c, pending=7, admitted=i, oldest=i, limits=ALL) for i, c in enumerate('ABCD')]
    given = share_cpus(NODES, demands, policy)
    for node, cpus in NODES.items():
        assert sum(per.get(node, 0) for per in given.values()) == cpus


def test_admission_exclusive_waits_for_the_others_and_later_ones_wait_for_it():
    adm = Admission()
    assert adm.arrive('A', False) == ['A']
    assert adm.arrive('B', False) == ['B']
    assert adm.arrive('X', True) == []           # waits for A and B
    assert adm.arrive('C', False) == []          # arrived after X: waits behind it
    assert adm.leave('A') == []
    assert adm.leave('B') == ['X']               # X alone now
    assert adm.is_admitted('X') and not adm.is_admitted('C')
    assert adm.arrive('D', False) == []
    assert adm.leave('X') == ['C', 'D']
    assert adm.order['C'] < adm.order['D']


def test_admission_a_waiting_computation_can_leave():
    adm = Admission()
    adm.arrive('A', True)
    adm.arrive('B', False)
    assert adm.waiting == ['B']
    assert adm.leave('B') == []
    assert adm.waiting == []
    with pytest.raises(ValueError):
        adm.arrive('A', False)
