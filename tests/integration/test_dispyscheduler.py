"""The dispyscheduler program: TLS on both sides, options, config files, bad values."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import dispylike
from dispylike.security.certs import make_self_signed, write_pair
from dispylike.testing import NodeProcess, SchedulerProcess

pytestmark = pytest.mark.timeout(120)


def square(n):
    return n * n


@pytest.fixture
def certs(tmp_path):
    node_cert, cluster_cert = tmp_path / 'nodes.pem', tmp_path / 'clients.pem'
    write_pair(*make_self_signed(['127.0.0.1']), str(node_cert), None)
    write_pair(*make_self_signed(['127.0.0.1']), str(cluster_cert), None)
    return str(node_cert), str(cluster_cert)


def test_tls_between_client_scheduler_and_nodes(certs):
    node_cert, cluster_cert = certs
    with NodeProcess(cpus=2, secret='ns', extra=['--certfile', node_cert]) as node:
        with SchedulerProcess([f'{node.host}:{node.port}'], node_secret='ns',
                              cluster_secret='cs',
                              extra=['--node_certfile', node_cert,
                                     '--cluster_certfile', cluster_cert]) as sched:
            with dispylike.SharedJobCluster(square, scheduler_node=sched.host,
                                            scheduler_port=sched.port, secret='cs',
                                            certfile=cluster_cert) as cluster:
                assert [cluster.submit(i)() for i in range(4)] == [0, 1, 4, 9]
            # a plain client, or one with the node certificate, is refused
            for kw in ({}, {'certfile': node_cert}):
                with pytest.raises(dispylike.DispyError):
                    dispylike.SharedJobCluster(square, scheduler_node=sched.host,
                                               scheduler_port=sched.port, secret='cs', **kw)
            assert 'TLS' in sched.log()


def _dispyscheduler(*args):
    return subprocess.run([sys.executable, '-m', 'dispylike.scheduler', *args],
                          capture_output=True, text=True, timeout=30)


def test_help_lists_dispys_options():
    out = _dispyscheduler('--help').stdout
    for option in ('--config', '--save_config', '-d', '--node', '--host', '--ext_host',
                   '--dispy_port', '--ipv4_udp_multicast', '--node_secret', '--node_keyfile',
                   '--node_certfile', '--cluster_secret', '--cluster_certfile',
                   '--cluster_keyfile', '--pulse_interval', '--ping_interval',
                   '--zombie_interval', '--msg_timeout', '--dest_path_prefix',
                   '--max_file_size', '--clean', '--fair_cluster_scheduler',
                   '--early_cluster_scheduler', '--cooperative', '--cleanup_nodes', '--daemon'):
        assert option in out, option


def test_saved_config_runs_a_scheduler_with_those_options(tmp_path):
    cfg = tmp_path / 'sched.ini'
    saved = _dispyscheduler('--fair_cluster_scheduler', '--cooperative', '--save_config',
                            str(cfg))
    assert saved.returncode == 0 and (cfg.stat().st_mode & 0o777) == 0o600
    with NodeProcess(cpus=1) as node:
        with SchedulerProcess([f'{node.host}:{node.port}'],
                              extra=['--config', str(cfg)]) as sched:
            assert 'fair scheduling, cooperative' in sched.log()


@pytest.mark.parametrize('args, words', [
    (['--zombie_interval', '0'], 'zombie_interval'),
    (['--pulse_interval', '0.5'], 'pulse_interval'),
    (['--max_file_size', '-1'], 'must not be negative'),
    (['--fair_cluster_scheduler', '--early_cluster_scheduler'], 'not allowed with'),
    (['--config', '/nonexistent/s.ini'], 'cannot read config file'),
])
def test_bad_values_exit_non_zero_with_a_clear_message(args, words):
    proc = _dispyscheduler(*args)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_file_caps_per_computation_and_the_scheduler_keeps_serving(tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f'f{i}.txt'
        path.write_text('x')
        files.append(str(path))
    with NodeProcess(cpus=1) as node:
        with SchedulerProcess([f'{node.host}:{node.port}'], extra=['--max_files', '2']) as sched:
            with pytest.raises(dispylike.DispyError, match='limit'):
                dispylike.SharedJobCluster(square, scheduler_node=sched.host,
                                           scheduler_port=sched.port, depends=files)
            with dispylike.SharedJobCluster(square, scheduler_node=sched.host,
                                            scheduler_port=sched.port,
                                            depends=files[:2]) as cluster:
                assert cluster.submit(3)() == 9
            time.sleep(0.5)
            # the computation that failed never ran, and was not kept for zombie_interval
            log = sched.log()
            assert log.count('runs now') == 1 and 'go on for' not in log, log
