"""The computation process stays lean: every module and shared-library mapping it holds
is copied into each job process it forks (issue 8), so it leaves out what jobs and its
own loop do not use until they do (zygote's module docstring)."""

import os
import subprocess
import sys

import cloudpickle
import pytest

import dispylike
from dispylike.execution.host import zygote_env
from dispylike.execution.processes import BIND_NOW_ADDED

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Modules the computation process must not hold before a job needs them.
LEFT_OUT = ('socket', '_socket', 'selectors', 'subprocess', 'termios', 'mmap',
            'typing_extensions', 'dispylike.protocol.messages', 'asyncio')


def held(data=b''):
    """What the job process holds: its parent's modules (it imports none itself),
    its environment and the environment it was started with."""
    import os
    import sys
    with open('/proc/self/environ', 'rb') as f:
        started = f.read().split(b'\0')
    return (sorted(sys.modules), 'LD_BIND_NOW' in os.environ,
            b'LD_BIND_NOW=1' in started, len(data))


def helper_importing():
    import wave  # noqa: F401


def imports_as_it_runs(nested=False):
    """Which of the standard-library modules it imports are loaded before it does."""
    import sys
    loaded = ['colorsys' in sys.modules, 'wave' in sys.modules, 'sched' in sys.modules]

    def inner():
        import sched  # noqa: F401
    import colorsys  # noqa: F401
    helper_importing()
    if nested:
        inner()
    return loaded


def run_in_shell(script):
    import subprocess
    return subprocess.run(['sh', '-c', script], capture_output=True, text=True).stdout


def cloudpickles_own_imports():
    """What importing cloudpickle (as the computation process does) brings in a fresh
    interpreter, typing_extensions aside: Python 3.10's platform module, which
    cloudpickle imports, imports subprocess and selectors."""
    out = subprocess.run([sys.executable, '-S', '-c', 'import sys, dispylike.execution.'
                          'leanimport; print(" ".join(sys.modules))'], env=zygote_env(),
                         capture_output=True, text=True, check=True).stdout
    return set(out.split()) - {'typing_extensions'}


def bind_now_is_ours():
    return 'LD_BIND_NOW' not in os.environ and os.environ.get('DISPYLIKE_BIND_NOW') != '0'


def test_computation_process_leaves_out_what_jobs_do_not_use(node):
    theirs = cloudpickles_own_imports()
    with dispylike.JobCluster(held, nodes=[node.address]) as c:
        modules, bind_now_visible, started_with_bind_now, _ = c.submit()()
        assert [name for name in LEFT_OUT if name in modules and name not in theirs] == []
        assert 'cloudpickle' in modules and 'pickle' in modules   # what jobs do need
        if bind_now_is_ours():
            # the dynamic linker got LD_BIND_NOW; the job's environment has it no more
            assert started_with_bind_now and not bind_now_visible
        # a transfer file (1 MiB or more) brings mmap in, once, for the processes forked
        # after it
        assert c.submit(b'x' * (2 << 20))()[3] == 2 << 20
        later = [c.submit()()[0] for _ in range(40)]
        assert 'mmap' in later[-1]


def test_programs_a_job_runs_do_not_inherit_bind_now(node):
    if not bind_now_is_ours():
        pytest.skip('this environment sets LD_BIND_NOW or DISPYLIKE_BIND_NOW=0 itself')
    with dispylike.JobCluster(run_in_shell, nodes=[node.address]) as c:
        assert c.submit('echo ${LD_BIND_NOW-unset}')().strip() == 'unset'


def test_bind_now_is_added_only_where_not_set_or_switched_off(monkeypatch):
    monkeypatch.delenv('LD_BIND_NOW', raising=False)
    monkeypatch.delenv('DISPYLIKE_BIND_NOW', raising=False)
    env = zygote_env()
    assert env['LD_BIND_NOW'] == '1' and env[BIND_NOW_ADDED] == '1'
    monkeypatch.setenv('LD_BIND_NOW', '')      # the user's own: kept, not taken out later
    env = zygote_env()
    assert env['LD_BIND_NOW'] == '' and BIND_NOW_ADDED not in env
    monkeypatch.delenv('LD_BIND_NOW')
    monkeypatch.setenv('DISPYLIKE_BIND_NOW', '0')
    assert 'LD_BIND_NOW' not in zygote_env()
    assert os.environ.get('LD_BIND_NOW') is None


def test_standard_modules_the_computation_imports_are_loaded_before_its_jobs(node):
    # dispy's samples import socket, time... inside compute: the computation process
    # imports them once, so a job finds them loaded (its own, a nested function's, and
    # a helper's of the same module)
    with dispylike.JobCluster(imports_as_it_runs, nodes=[node.address]) as c:
        assert c.submit(True)() == [True, True, True]

