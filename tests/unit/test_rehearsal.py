"""A spare's rehearsal (jobproc.rehearse) goes through a job's whole path and leaves
nothing behind: no descriptor, no output, stdout/stderr as they were."""

import os
import sys

from dispylike.execution import jobproc


def open_fds():
    return sorted(int(fd) for fd in os.listdir('/proc/self/fd'))


def test_rehearsal_runs_the_job_path_and_leaves_nothing_behind(monkeypatch, capsys):
    seen = []
    real_run, real_reply = jobproc._capture_run, jobproc._serialize_reply
    monkeypatch.setattr(jobproc, '_capture_run',
                        lambda loaded, payload: seen.append('run') or real_run(loaded, payload))
    monkeypatch.setattr(jobproc, '_serialize_reply',
                        lambda *a: seen.append('reply') or real_reply(*a))
    before, out, err = open_fds(), sys.stdout, sys.stderr
    jobproc.rehearse()
    assert seen == ['run', 'reply']                       # the path a job takes
    assert open_fds() == before
    assert (sys.stdout, sys.stderr) == (out, err)
    assert capsys.readouterr() == ('', '')


def test_a_failing_rehearsal_is_silent(monkeypatch):
    def broken(*_args):
        raise RuntimeError('no')
    monkeypatch.setattr(jobproc, '_serialize_reply', broken)
    before = open_fds()
    jobproc.rehearse()                                   # never raises
    assert open_fds() == before
