"""setup() builds read-only data once per node; every job (a fork) sees it; cleanup() runs last."""

import sys

import dispylike as dispy


def setup(size):
    global TABLE             # jobs on this node inherit it: no per-job transfer
    TABLE = [i * i for i in range(size)]
    return 0                 # 0 means success (see the manual for 1 and 2)


def cleanup(size):
    global TABLE
    del TABLE


def compute(i):
    return TABLE[i % len(TABLE)]


if __name__ == '__main__':
    node = dispy.LocalNode(setup_args=(1000,))
    nodes = sys.argv[1:] or [node]
    with dispy.JobCluster(compute, nodes=nodes, setup=setup, cleanup=cleanup) as cluster:
        jobs = [cluster.submit(i) for i in (3, 30, 300, 3000)]
        print('squares looked up on the node:', [job() for job in jobs])
