"""Quick start: the dispy manual's sample on an embedded local node.

    python examples/quickstart.py              # embedded node, no daemon needed
    python examples/quickstart.py host1 host2  # dispynode running on these hosts
"""

import sys

import dispylike as dispy


def compute(n):
    # runs on a node, in a fresh process: import what it needs here
    import socket
    import time
    time.sleep(n)
    return socket.gethostname(), n


if __name__ == '__main__':
    nodes = sys.argv[1:] or [dispy.LocalNode()]
    cluster = dispy.JobCluster(compute, nodes=nodes)
    jobs = []
    for i in range(10):
        job = cluster.submit(0.1 + i / 20)
        job.id = i          # any value may identify a job
        jobs.append(job)
    for job in jobs:
        host, n = job()     # waits for the job to finish
        print(f'{host} executed job {job.id} at {job.start_time:.3f} with {n}')
    cluster.print_status()
    cluster.close()
