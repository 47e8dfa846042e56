"""The namespace lab for multi-host tests: 7 hosts on one bridge, removed afterwards.

Needs root and iproute2; elsewhere every test here is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from .lab import Lab

HOSTS = 7       # h1-h4 for most drills; the shared-cluster tests use h5-h7 for clients


def _lab_unavailable() -> str:
    if os.geteuid() != 0:
        return 'the namespace lab needs root (ip netns add)'
    if shutil.which('ip') is None:
        return 'the namespace lab needs iproute2 (ip)'
    return ''


@pytest.fixture(scope='session')
def lab():
    why = _lab_unavailable()
    if why:
        pytest.skip(f'!!! multi-host tests skipped: {why}')
    prefix = f'dl{os.getpid() % 100000}-'
    state = tempfile.mkdtemp(prefix='dispylike-netlab-')
    try:
        with Lab(HOSTS, prefix=prefix, state=state) as the_lab:
            yield the_lab
    except subprocess.CalledProcessError as exc:
        pytest.skip(f'!!! multi-host tests skipped: the lab could not be built: {exc.stderr}')
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(autouse=True)
def healed(request):
    yield
    if 'lab' in request.fixturenames:
        the_lab = request.getfixturevalue('lab')
        for i in range(1, HOSTS + 1):
            the_lab.heal(f'h{i}')


class LabDaemon:
    """A dispylike daemon (``python -m MODULE``) on a lab host, ready when its ready line
    arrives; stopped by PID."""

    def __init__(self, lab: Lab, host: str, module: str, argv: list[str],
                 env: dict[str, str]) -> None:
        from dispylike.execution.processes import child_env, read_ready_line
        self.host = host
        self.prefix = tempfile.mkdtemp(prefix=f'dispylike-{host}-')
        ready_r, ready_w = os.pipe()
        argv = [sys.executable, '-m', module, '--daemon', '--dest_path_prefix', self.prefix,
                '--ready_fd', str(ready_w), *argv]
        env = dict(lab.env, PYTHONPATH=child_env()['PYTHONPATH'], **env)
        self.log_file = tempfile.NamedTemporaryFile(prefix=f'{module}-{host}-', suffix='.log')
        try:
            self.proc = lab.popen(host, argv, env=env, pass_fds=(ready_w,),
                                  stderr=self.log_file, stdin=subprocess.DEVNULL)
        finally:
            os.close(ready_w)
        try:
            self.address, self.port = read_ready_line(ready_r, 30)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        with open(self.log_file.name, errors='replace') as f:
            return f.read()

    def stop(self) -> None:
        Lab.stop(self.proc)
        shutil.rmtree(self.prefix, ignore_errors=True)
        self.log_file.close()


class LabNode(LabDaemon):
    def __init__(self, lab: Lab, host: str, extra: list[str] = (), secret: str = 'lab',
                 cpus: int = 2) -> None:
        super().__init__(lab, host, 'dispylike.node', ['-c', str(cpus), *extra],
                         {'DISPYLIKE_SECRET': secret})


class LabScheduler(LabDaemon):
    def __init__(self, lab: Lab, host: str, extra: list[str] = (), node_secret: str = 'lab',
                 cluster_secret: str = 'cs') -> None:
        super().__init__(lab, host, 'dispylike.scheduler', list(extra),
                         {'DISPYLIKE_NODE_SECRET': node_secret,
                          'DISPYLIKE_CLUSTER_SECRET': cluster_secret})


@pytest.fixture
def start_node(lab):
    started: list[LabNode] = []

    def start(host: str, *extra: str, secret: str = 'lab', cpus: int = 2) -> LabNode:
        node = LabNode(lab, host, list(extra), secret, cpus)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def start_scheduler(lab):
    started: list[LabScheduler] = []

    def start(host: str, *extra: str) -> LabScheduler:
        sched = LabScheduler(lab, host, list(extra))
        started.append(sched)
        return sched

    yield start
    for sched in started:
        sched.stop()
