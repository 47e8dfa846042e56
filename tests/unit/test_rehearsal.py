"""A spare's rehearsal (jobproc.rehearse) goes through a job's whole path and leaves
nothing behind: no descriptor, no output, stdout/stderr as they were."""

import os
import sys

from dispylike.execution import channel, jobproc


def open_fds():
    return sorted(int(fd) for fd in os.listdir('/proc/self/fd'))


def test_rehearsal_runs_the_job_path_and_leaves_nothing_behind(monkeypatch, capsys):
    written = []
    real_write = jobproc._write
    monkeypatch.setattr(jobproc, '_write',
                        lambda fd, buf: written.append(bytes(buf)) or real_write(fd, buf))
    before, out, err = open_fds(), sys.stdout, sys.stderr
    jobproc.rehearse()
    assert len(written) == 1                              # the path a job takes, to its
    kind, _length = channel.RECORD.unpack_from(written[0])   # RESULT record
    assert kind == channel.RESULT
    assert open_fds() == before
    assert (sys.stdout, sys.stderr) == (out, err)
    assert capsys.readouterr() == ('', '')


def test_a_failing_rehearsal_is_silent(monkeypatch):
    def broken(*_args):
        raise RuntimeError('no')
    monkeypatch.setattr(jobproc, '_dumps', broken)
    monkeypatch.setattr(jobproc, '_serialize_reply', broken)
    before = open_fds()
    jobproc.rehearse()                                   # never raises
    assert open_fds() == before
