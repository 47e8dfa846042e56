"""What a job prints and raises comes back to the client."""

import sys

import dispylike as dispy


def compute(n):
    print(f'computing {n}')
    print('a warning on stderr', file=sys.stderr)
    if n % 3 == 0:
        raise ValueError(f'{n} is divisible by 3')
    return n * 10


if __name__ == '__main__':
    nodes = sys.argv[1:] or [dispy.LocalNode()]
    with dispy.JobCluster(compute, nodes=nodes) as cluster:
        jobs = [cluster.submit(n) for n in range(1, 7)]
        for job in jobs:
            job()
            if job.status == dispy.DispyJob.Finished:
                print(f'job {job.id}: result {job.result}, stdout {job.stdout!r}')
            else:
                last = job.exception.strip().splitlines()[-1]
                print(f'job {job.id}: failed with {last!r}, stdout {job.stdout!r}')
