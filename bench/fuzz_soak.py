"""Fuzz soak (not in CI): 100,000 hostile frames and 100,000 datagrams at a live dispynode
while a client runs jobs.

    python bench/fuzz_soak.py                       # 100,000 frames, 100,000 datagrams
    python bench/fuzz_soak.py --frames 20000 --datagrams 20000 --seed 7 --json out.json
    python bench/fuzz_soak.py --target dispyscheduler   # a scheduler (TCP only) instead

Runs in a private network namespace holding only loopback (entered first; needs
root or user namespaces).  The campaign is dispylike.testing.fuzz's, as in
tests/integration/test_fuzz.py, only longer: TCP connections from 127.0.0.2-5
(before authentication, with a forged wrong-secret handshake, authenticated
with garbage), datagrams to the node's discovery port, and a JobCluster running
one job at a time from 127.0.0.1 throughout.  Reports crashes (the node died or
logged a traceback: must be 0), descriptor and memory growth, the unpickling
audit (nothing may be unpickled for an unauthenticated peer) and the legitimate
jobs' latency before, during and after the fuzz.  Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from dispylike.testing import enter_private_netns, fuzz

TARGETS = (fuzz.NODE, fuzz.SCHEDULER)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=100_000)
    ap.add_argument('--datagrams', type=int, default=100_000)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--json', help='also write the figures to this file')
    ap.add_argument('--target', choices=[t.name for t in TARGETS], default='dispynode')
    args = ap.parse_args()
    print(f'network: {enter_private_netns()}', flush=True)
    plan = fuzz.Plan(tcp_frames=args.frames, datagrams=args.datagrams, seed=args.seed,
                     legit_before=50)
    with tempfile.TemporaryDirectory(prefix='dispylike-fuzz-soak-') as workdir:
        target = next(t for t in TARGETS if t.name == args.target)
        report = fuzz.campaign(target, plan, workdir, legit_timeout=600)
    print(fuzz.summary(report))
    unauth = report['audit'].get('unpickles', {}).get('unauthenticated', -1)
    crashes = int(not report['alive']) + report['log'].count('Traceback')
    checks = {
        'crashes (node died or logged a traceback)': crashes == 0,
        'no unpickling for unauthenticated peers (audit)': unauth == 0,
        'no poison pickle ran': not report['poisoned'],
        'every legitimate job right': not report['legit_bad'] and not report['legit_stuck'],
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    figures = {
        'frames': report['stats'].tcp_frames, 'connections': report['stats'].tcp_connections,
        'datagrams': report['stats'].datagrams, 'discovery_answers': report['stats'].answers,
        'fuzz_seconds': round(report['fuzz_seconds'], 1), 'crashes': crashes,
        'fd_growth': report['fds_after'] - report['fds_before'],
        'rss_growth_mib': round((report['rss_after'] - report['rss_before']) / 2**20, 1),
        'audit': report['audit'], 'legit_ok': report['legit_ok'],
        'latency_ms': report['latency'],
    }
    print(json.dumps(figures, indent=1, default=str))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(figures, f, indent=1, default=str)
    return 0 if all(checks.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
