"""Send a class (through an instance of it) and a helper function with the computation."""

import sys

import dispylike as dispy


class Accumulator:
    def __init__(self, start):
        self.total = start

    def add(self, x):
        self.total += x
        return self


def scale(x):
    return 2 * x


def compute(acc, values):
    # Accumulator and scale are available here because they are in depends
    for v in values:
        acc.add(scale(v))
    return acc          # an instance of the client's own class comes back


if __name__ == '__main__':
    nodes = sys.argv[1:] or [dispy.LocalNode()]
    with dispy.JobCluster(compute, nodes=nodes, depends=[Accumulator(0), scale]) as cluster:
        jobs = [cluster.submit(Accumulator(i), range(i)) for i in range(5)]
        for job in jobs:
            acc = job()
            print(f'job {job.id}: {type(acc).__name__} total={acc.total} '
                  f'(same class as here: {isinstance(acc, Accumulator)})')
