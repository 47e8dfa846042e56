#!/usr/bin/env python3
"""Where the CPU goes per job: a per-process /proc profile of a W1-style run.

    python bench/profile.py [--jobs 4000] [--warm] [--cpus 2] [--pairs 1] [--each]
                            [--size BYTES] [--result BYTES] [--importing] [--pyspy DIR]

Starts one dispylike node (``python -m dispylike.node``) on 127.0.0.1 and runs
the client in this process: one warm-up job, then ``--jobs`` jobs submitted at
once and waited for.  Before and after the timed part it reads utime+stime and
minor faults from ``/proc/<pid>/stat`` for the client (this process, all its
threads), the node daemon, each computation process ("zygote") and its job
processes (live ones from their own stat; reaped ones from the zygote's
cutime+cstime), and prints CPU and faults per job for each, plus how busy the
CPUs were.  ``--pyspy DIR`` also records a py-spy flame graph of each process
(slower: use it to see *what* costs, and the plain run for *how much*).

Like bench/run.py it re-executes itself in a private network namespace holding
only ``lo`` (needs root).  The dispylike under test is the one this script
sits in (its ``PYTHONPATH`` is set to the repository), or the checkout named by
``DISPYBENCH_DISPYLIKE_PATH`` (for A/B comparisons).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
#: The dispylike under test: this checkout, or DISPYBENCH_DISPYLIKE_PATH (A/B runs).
SOURCE = os.environ.get('DISPYBENCH_DISPYLIKE_PATH') or str(BENCH.parent)
sys.path.insert(0, str(BENCH))
sys.path.insert(0, SOURCE)

from harness import netns, systems  # noqa: E402

TICK = os.sysconf('SC_CLK_TCK')


def compute(n):
    return n * n


def compute_importing(n):
    # as the dispy manual's sample: what a job needs is imported inside it
    import socket
    import time  # noqa: F401
    return n * n, socket.AF_INET


def echo(data):
    return data


def take(data):
    return len(data)


def make_result(size):
    return b'r' * size


def stat(pid: int) -> tuple[float, float, int]:
    """(own CPU s, reaped children's CPU s, minor faults) of ``pid``."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    # after the comm field: state=0 ... minflt=7 ... utime=11 stime=12 cutime=13 cstime=14
    return ((int(fields[11]) + int(fields[12])) / TICK,
            (int(fields[13]) + int(fields[14])) / TICK, int(fields[7]))


def children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{tid}/children') as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def snapshot(node_pid: int) -> dict[str, list[float]]:
    """CPU seconds and faults by process class."""
    out = {'client': [0.0, 0], 'node': [0.0, 0], 'zygote': [0.0, 0], 'jobs': [0.0, 0]}
    usage = os.times()
    with open('/proc/self/stat') as f:
        minflt = int(f.read().rsplit(')', 1)[1].split()[7])
    out['client'] = [usage.user + usage.system, minflt]
    own, _reaped, faults = stat(node_pid)
    out['node'] = [own, faults]
    for zpid in children(node_pid):
        try:
            own, reaped, faults = stat(zpid)
        except OSError:
            continue
        out['zygote'][0] += own
        out['zygote'][1] += faults
        out['jobs'][0] += reaped
        for jpid in children(zpid):
            try:
                jown, jreaped, jfaults = stat(jpid)
            except OSError:
                continue
            out['jobs'][0] += jown + jreaped
            out['jobs'][1] += jfaults
    return out


def pyspy(pid: int, path: Path) -> subprocess.Popen:
    return subprocess.Popen(['py-spy', 'record', '-p', str(pid), '-o', str(path), '-r', '500',
                             '--nonblocking', '-f', 'raw' if path.suffix == '.txt'
                             else 'flamegraph'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(args: argparse.Namespace) -> dict:
    import dispylike
    from dispylike.testing import NodeProcess

    kw = {'warm_workers': True} if args.warm else {}
    if args.prefetch is not None:   # what-if: the client engine's prefetch depth per CPU
        import dispylike.driver.engine as engine
        engine.PREFETCH_PER_CPU = engine.PREFETCH_DEEP_PER_CPU = args.prefetch
    func, arg = (compute_importing if args.importing else compute), None
    if args.size:
        func, arg = (take if args.sink else echo), b'x' * args.size
    elif args.result:
        func, arg = make_result, args.result
    extra = []
    with NodeProcess(cpus=args.cpus, secret=args.secret, extra=extra) as node:
        cluster = dispylike.JobCluster(func, nodes=[node.address], secret=args.secret, **kw)
        try:
            assert cluster.submit(arg if arg is not None else 1)() is not None
            node_pid = node.proc.pid
            spies = []
            if args.pyspy:
                out = Path(args.pyspy)
                out.mkdir(parents=True, exist_ok=True)
                spies.append(pyspy(os.getpid(), out / 'client.txt'))
                spies.append(pyspy(node_pid, out / 'node.txt'))
                for zpid in children(node_pid):
                    spies.append(pyspy(zpid, out / f'zygote-{zpid}.txt'))
                    if args.warm:
                        for wpid in children(zpid):
                            spies.append(pyspy(wpid, out / f'worker-{wpid}.txt'))
                time.sleep(1.0)
            if args.strace:
                for pid, label in [(os.getpid(), 'client'), (node_pid, 'node')] + [
                        (z, 'zygote') for z in children(node_pid)] + [
                        (w, 'worker') for z in children(node_pid) for w in children(z)]:
                    spies.append(subprocess.Popen(
                        ['strace', '-c', '-f' if label == 'client' else '-q', '-p', str(pid),
                         '-o', f'{args.strace}/{label}-{pid}.txt'],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(1.0)
            before = snapshot(node_pid)
            start = time.perf_counter()
            if args.sequential:   # one job at a time: round-trip latency
                jobs, rtts = [], []
                for i in range(args.jobs):
                    t0 = time.perf_counter()
                    jobs.append(cluster.submit(arg if arg is not None else i))
                    jobs[-1]()
                    rtts.append(time.perf_counter() - t0)
                rtts.sort()
                print(f'round trip: median {rtts[len(rtts) // 2] * 1e3:.3f} ms, p99 '
                      f'{rtts[int(len(rtts) * 0.99)] * 1e3:.3f} ms')
            else:
                jobs = [cluster.submit(arg if arg is not None else i) for i in range(args.jobs)]
                if args.each:   # as bench/run.py's W1: job() on each, in order
                    for job in jobs:
                        job()
                else:
                    cluster.wait()
            elapsed = time.perf_counter() - start
            after = snapshot(node_pid)
            bad = sum(1 for j in jobs if j.status != dispylike.DispyJob.Finished)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(30)
        finally:
            cluster.close()
    per = {k: ((after[k][0] - before[k][0]) / args.jobs * 1e3,
               (after[k][1] - before[k][1]) / args.jobs) for k in before}
    total = sum(v[0] for v in per.values())
    return {'jobs_per_s': args.jobs / elapsed, 'elapsed': elapsed, 'failed': bad, 'per': per,
            'total_ms': total, 'busy': total * args.jobs / 1e3 / (elapsed * os.cpu_count())}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--jobs', type=int, default=4000)
    p.add_argument('--warm', action='store_true', help='JobCluster(warm_workers=True)')
    p.add_argument('--cpus', type=int, default=2)
    p.add_argument('--secret', default='')
    p.add_argument('--size', type=int, default=0, help='bytes argument echoed back')
    p.add_argument('--sink', action='store_true', help='with --size: jobs return the length')
    p.add_argument('--result', type=int, default=0, help='bytes each job returns')
    p.add_argument('--pairs', type=int, default=1, help='runs (each with a fresh node)')
    p.add_argument('--sequential', action='store_true',
                   help='submit one job, wait for it, then the next (latency)')
    p.add_argument('--each', action='store_true',
                   help='wait with job() on each job in turn (as bench/run.py), not wait()')
    p.add_argument('--importing', action='store_true',
                   help='jobs import socket and time inside (as the dispy manual\'s sample)')
    p.add_argument('--prefetch', type=int, default=None,
                   help='what-if: set the client engine\'s PREFETCH_PER_CPU')
    p.add_argument('--strace', default='', help='directory for strace -c syscall counts')
    p.add_argument('--pyspy', default='', help='directory for py-spy flame graphs')
    args = p.parse_args(argv)
    if not netns.inside_requested():
        systems.byte_compile(SOURCE)   # as bench/run.py: bytecode as an installed package has
        os.environ['PYTHONPATH'] = SOURCE
        os.environ[netns.ENV_FLAG] = '1'
        os.execvp('unshare', ['unshare', '--net', '--', sys.executable, __file__, *argv])
    netns.prepare_private_netns((1, 2))
    # a neutral working directory: 'python -m dispylike.node' puts it first on sys.path,
    # which would otherwise run the node from this checkout whatever SOURCE says
    os.chdir(tempfile.mkdtemp(prefix='dispylike-profile-'))
    for run in range(args.pairs):
        res = one_run(args)
        print(f'run {run + 1}: {res["jobs_per_s"]:.0f} jobs/s, {res["elapsed"]:.3f} s, '
              f'failed {res["failed"]}, CPU {res["total_ms"]:.3f} ms/job, busy '
              f'{res["busy"] * 100:.0f}%')
        for name, (ms, faults) in res['per'].items():
            print(f'    {name:7s} {ms:7.3f} ms/job {faults:8.1f} faults/job')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
