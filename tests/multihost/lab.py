"""Drive tests/multihost/netlab.sh from tests: a LAN of network namespaces h1..hN.

Adapted from the project's shared lab.  ``Lab.netns(host)`` moves the calling
thread into a host's namespace, so a JobCluster created inside the block has
its I/O thread (and every socket) on that host; ``Lab.popen`` starts a process
on a host, whose PID is the real program's (``kill -9`` is a faithful crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
NETLAB_SH = os.path.join(HERE, 'netlab.sh')
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Lab:
    def __init__(self, n: int, prefix: str, subnet: str = '10.77.0', state: str | None = None):
        self.n = n
        self.prefix = prefix
        self.subnet = subnet
        self.env = dict(os.environ, NETLAB_PREFIX=prefix, NETLAB_SUBNET=subnet)
        if state:
            self.env['NETLAB_STATE'] = state
        self._procs: list[subprocess.Popen] = []

    def sh(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([NETLAB_SH, *map(str, args)], env=self.env, check=check,
                              capture_output=True, text=True, timeout=120)

    def up(self) -> Lab:
        self.sh('up', self.n)
        return self

    def down(self) -> None:
        for proc in self._procs:
            self.stop(proc)
        self.sh('down', check=False)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def ip(self, host: str) -> str:
        return f'{self.subnet}.{int(host.lstrip("h"))}'

    def ip6(self, host: str) -> str:
        return f'fd77::{int(host.lstrip("h"))}'

    def ns(self, host: str) -> str:
        return f'{self.prefix}h{int(host.lstrip("h"))}'

    def popen(self, host: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen([NETLAB_SH, 'exec', host, *argv], env=kw.pop('env', self.env),
                                **kw)
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @contextlib.contextmanager
    def netns(self, host: str):
        """setns(2) the calling thread into HOST's network namespace."""
        with open('/proc/thread-self/ns/net') as cur, open('/run/netns/' + self.ns(host)) as tgt:
            if _libc.setns(tgt.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f'setns({self.ns(host)})')
            try:
                yield
            finally:
                if _libc.setns(cur.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), 'setns back')

    def cut(self, host: str) -> None:
        self.sh('cut', host)

    def heal(self, host: str) -> None:
        self.sh('heal', host)

    def partition(self, host: str) -> None:
        self.sh('partition', host)

    def loss(self, host: str, pct: int) -> None:
        self.sh('loss', host, int(pct))
