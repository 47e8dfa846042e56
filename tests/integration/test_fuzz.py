"""Live daemons (dispynode, dispyscheduler) under fuzz: thousands of hostile frames and
datagrams while a legitimate client works.  The daemon must keep serving, leak nothing
gross, and - proved by the unpickling audit (dispylike.security.audit) - unpickle nothing
for an unauthenticated peer.  To fuzz another daemon, add its Target
(dispylike.testing.fuzz) to TARGETS."""

import json
import pickle
import subprocess
import sys
import textwrap

import pytest

from dispylike.execution.processes import child_env
from dispylike.testing import fuzz

TARGETS = [fuzz.NODE, fuzz.SCHEDULER]   # dispynetrelay: add its Target here
PLAN = fuzz.Plan(tcp_frames=20_000, datagrams=40_000)   # 5-10 s per target here


@pytest.mark.timeout(300)
@pytest.mark.parametrize('target', TARGETS, ids=lambda t: t.name)
def test_fuzzed_daemon_keeps_serving_and_unpickles_nothing_unauthenticated(target, tmp_path):
    report = fuzz.campaign(target, PLAN, str(tmp_path))
    print(fuzz.summary(report))
    stats, audit = report['stats'], report['audit']
    assert stats.tcp_frames >= PLAN.tcp_frames
    assert stats.datagrams == (PLAN.datagrams if report['udp_port'] else 0)
    assert report['alive'] and not report['poisoned']
    assert audit['unpickles']['unauthenticated'] == 0, audit
    # the audit was live: it saw the fuzz connections and the legitimate client's messages
    assert audit['connections']['accepted'] >= stats.tcp_connections // 2, audit
    assert audit['unpickles']['authenticated'] > 0, audit
    if target.legit is not None:
        assert not report['legit_stuck'] and not report['legit_bad'], report['legit_bad'][:3]
        assert report['latency']['after']['count'] >= PLAN.legit_before
    assert report['fds_after'] - report['fds_before'] < 100          # gross leaks only
    assert report['rss_after'] - report['rss_before'] < 256 * 2**20
    assert 'Traceback' not in report['log'] and 'handler for' not in report['log']
    assert 'rejected' in report['log'] and 'closing' in report['log']


def test_the_unpickling_audit_sees_every_way_of_unpickling(tmp_path):
    """The audit would catch an unpickle on an unauthenticated connection, whichever API
    made it and on whichever thread; and it charges the right state."""
    path = tmp_path / 'audit.json'
    script = textwrap.dedent('''
        import asyncio, contextvars, pickle, sys
        import cloudpickle
        from dispylike.protocol.messages import safe_loads
        from dispylike.security import audit
        audit.install(sys.argv[1])
        data = pickle.dumps((1, 2))

        def every_way():
            pickle.loads(data)
            cloudpickle.loads(data)
            safe_loads(data)
            pickle._loads(data)
            pickle.Unpickler(__import__('io').BytesIO(data)).load()

        async def connection(authenticated):
            state = audit.peer_accepted('127.0.0.9:1')
            if authenticated:
                audit.peer_authenticated(state)
            every_way()
            await asyncio.to_thread(every_way)

        asyncio.run(connection(False))
        asyncio.run(connection(True))
        every_way()
    ''')
    proc = subprocess.run([sys.executable, '-c', script, str(path)], capture_output=True,
                          text=True, timeout=60, env=child_env())
    assert proc.returncode == 0, proc.stderr
    report = json.loads(path.read_text())
    assert report['unpickles'] == {'unauthenticated': 10, 'authenticated': 10, 'outside': 5}
    assert report['connections'] == {'accepted': 2, 'authenticated': 1}
    assert report['unauthenticated_peers'][0] == '127.0.0.9:1'
    assert pickle.loads(pickle.dumps(1)) == 1      # nothing installed in this process
