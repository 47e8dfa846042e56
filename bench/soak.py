"""Reliability soak (not in CI): many trivial jobs while nodes are killed and restarted.

    python bench/soak.py                    # 100,000 jobs, 3 nodes, a kill every 5 s
    python bench/soak.py --jobs 20000 --nodes 3 --kill-every 3

Runs in a private network namespace holding only loopback (entered first; needs
root or user namespaces).  Nodes are real dispynode processes on 127.0.0.1 with
fixed ports; a killer thread SIGKILLs a random node and starts it again on the
same port a second later.  The cluster is reentrant with pulse_interval=1, so
jobs of a killed node run again elsewhere.  Reports every job that did not end
Finished with the right result (lost) and every job reported finished more than
once (duplicates); both must be 0.  Exit status 1 if not.
"""

from __future__ import annotations

import argparse
import collections
import random
import socket
import sys
import threading
import time

import dispylike
from dispylike.testing import NodeProcess, enter_private_netns


def square(n):
    return n * n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Nodes:
    """dispynode processes on fixed loopback ports; kill and restart one at random."""

    def __init__(self, count: int, cpus: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.cpus = cpus
        self.procs = {port: self._start(port) for port in self.ports}
        self.kills = 0

    def _start(self, port: int) -> NodeProcess:
        return NodeProcess(cpus=self.cpus, extra=['--node_port', str(port)])

    def kill_one(self, rng: random.Random) -> None:
        port = rng.choice(self.ports)
        proc = self.procs[port]
        proc.proc.kill()                 # SIGKILL: no goodbye to the client
        proc.stop()
        self.kills += 1
        time.sleep(1.0)
        self.procs[port] = self._start(port)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--jobs', type=int, default=100_000)
    ap.add_argument('--nodes', type=int, default=3)
    ap.add_argument('--cpus', type=int, default=1, help='CPUs per node')
    ap.add_argument('--kill-every', type=float, default=5.0, help='seconds between kills')
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()
    print(f'network: {enter_private_netns()}', flush=True)
    rng = random.Random(args.seed)
    nodes = Nodes(args.nodes, args.cpus)
    finished = collections.Counter()
    lock = threading.Lock()

    def job_status(job):
        if job.status == dispylike.DispyJob.Finished:
            with lock:
                finished[job.id] += 1

    stop = threading.Event()

    def killer():
        while not stop.wait(args.kill_every):
            nodes.kill_one(rng)

    start = time.time()
    try:
        with dispylike.JobCluster(square, nodes=[('127.0.0.1', p) for p in nodes.ports],
                                  reentrant=True, pulse_interval=1,
                                  job_status=job_status, loglevel=dispylike.logger.WARNING) as c:
            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            jobs = []
            for i in range(args.jobs):
                jobs.append(c.submit(i))
                if i % 10_000 == 9_999:
                    print(f'{i + 1} submitted, {sum(finished.values())} finished', flush=True)
            c.wait()
            stop.set()
            thread.join()
        elapsed = time.time() - start
    finally:
        stop.set()
        nodes.stop()
    lost = [j for j in jobs
            if j.status != dispylike.DispyJob.Finished or j.result != j.args[0] ** 2]
    dupes = sum(1 for n in finished.values() if n > 1)
    print(f'jobs {args.jobs}, nodes {args.nodes} x {args.cpus} CPU, kills {nodes.kills}, '
          f'{elapsed:.1f} s ({args.jobs / elapsed:.0f} jobs/s)')
    print(f'lost {len(lost)}, duplicates {dupes}')
    for job in lost[:10]:
        print(f'  job {job.id}: {job.status!r} {job.exception}')
    return 0 if not lost and not dupes else 1


if __name__ == '__main__':
    sys.exit(main())
