"""Cancel jobs: a queued job is dropped; a running one gets KeyboardInterrupt first."""

import sys
import time

import dispylike as dispy


def compute(seconds):
    import time
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        # about 5 seconds to save state before the node kills the process
        print('interrupted: saving partial work')
        return 'partial'
    return 'complete'


if __name__ == '__main__':
    nodes = sys.argv[1:] or [dispy.LocalNode(cpus=1)]
    with dispy.JobCluster(compute, nodes=nodes) as cluster:
        running = cluster.submit(60)
        queued = cluster.submit(60)
        while running.status != dispy.DispyJob.Running:
            time.sleep(0.05)
        time.sleep(0.5)
        cluster.cancel(queued)
        cluster.cancel(running)
        for job in (running, queued):
            job()
            print(f'job {job.id}: status {dispy.DispyJob.Cancelled == job.status and "Cancelled"}, '
                  f'result {job.result!r}, stdout {job.stdout!r}')
