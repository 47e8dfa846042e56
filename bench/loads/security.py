"""W7: what channel protection costs.  dispylike seals every frame when a secret is
set (AES-256-GCM, without TLS) or runs TLS; with the empty secret (the default, as
in dispy) frames are plain, since keys derived from it would be public.  For each,
W1w (jobs/s, warm workers) and W3 (MB/s each way) on a fresh 2-CPU node; dispylike
only (the client starts the nodes)."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import Any

from . import data
from .common import Progress, job_outcome, open_cluster, warm_up

SECRET = 'w7 benchmark secret'
VARIANTS = ('plain', 'sealed', 'tls')


def w7_job(kind, arg):
    if kind == 'sq':
        return arg * arg
    return len(arg) if kind == 'in' else b'r' * arg


@contextlib.contextmanager
def variant_node(variant: str, workdir: str):
    """(node, cluster keyword arguments) for ``variant``."""
    from dispylike.testing.daemons import NodeProcess  # type: ignore

    secret = '' if variant == 'plain' else SECRET
    kw: dict[str, Any] = {}
    if variant == 'tls':
        from dispylike.security.certs import make_self_signed, write_pair  # type: ignore
        cert = os.path.join(workdir, 'bench.pem')
        write_pair(*make_self_signed(['127.0.0.1']), cert, None)
        node = NodeProcess(cpus=2, secret=secret, extra=['--certfile', cert])
        kw = {'certfile': cert}
    else:
        node = NodeProcess(cpus=2, secret=secret)
    with node:
        yield node, dict(kw, secret=secret)


def run_w7_security(system: str, port: int, params: dict[str, Any],
                    progress: Progress) -> None:
    jobs, size, big_jobs = int(params['jobs']), int(params['size']), int(params['big_jobs'])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix='bench-w7-') as workdir:
        for variant in VARIANTS:
            progress.touch(f'{variant}: node')
            with variant_node(variant, workdir) as (node, kw):
                with open_cluster('dispylike', 0, progress, w7_job, nodes=[node.address],
                                  warm_workers=True, **kw) as cluster:
                    warm_up(cluster, progress, 'sq', 1, expect=1)
                    progress.touch(f'{variant}: W1w')
                    start = time.perf_counter()
                    submitted = [cluster.submit('sq', i) for i in range(jobs)]
                    for i, job in enumerate(submitted):
                        progress.record(*job_outcome(job, i * i))
                    out[f'w1w_{variant}'] = jobs / (time.perf_counter() - start)
                    moved = data.measure(cluster, progress, big_jobs, size)
                    out[f'in_{variant}'] = moved['mbps_in']
                    out[f'out_{variant}'] = moved['mbps_out']
    for variant in ('sealed', 'tls'):
        for key in ('w1w', 'in', 'out'):
            out[f'{key}_{variant}_ratio'] = out[f'{key}_{variant}'] / out[f'{key}_plain']
    progress.update(**out)

