"""Real dispynode and dispyscheduler subprocesses on loopback, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from ..execution.processes import child_env, read_ready_line


class DaemonProcess:
    """A dispylike daemon (``python -m <module> ... --ready_fd N``) started and stopped by
    PID; ready once it has written its address.  Use as a context manager."""

    def __init__(self, module: str, argv: list[str], env: dict[str, str], kind: str,
                 timeout: float = 30.0, console: bool = False) -> None:
        self.prefix = tempfile.mkdtemp(prefix=f'dispylike-test-{kind}-')
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, '-m', module, '--dest_path_prefix', self.prefix,
               '--ready_fd', str(ready_w), *argv]
        if not console:
            cmd.append('--daemon')
        self._log = tempfile.NamedTemporaryFile(prefix=f'dispy{kind}-', suffix='.log',
                                                delete=False)
        pipe = subprocess.PIPE if console else subprocess.DEVNULL
        try:
            # console: the test talks to it through proc.stdin / proc.stdout
            self.proc = subprocess.Popen(cmd, env=child_env(env), stderr=self._log,
                                         pass_fds=(ready_w,), stdin=pipe,
                                         stdout=pipe if console else None, text=console)
        finally:
            os.close(ready_w)
        try:
            self.host, self.port = read_ready_line(ready_r, timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        """What the node has logged so far."""
        with open(self._log.name, errors='replace') as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; always reaps.  Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.prefix, ignore_errors=True)
        self._log.close()
        try:
            if os.environ.get('DISPYLIKE_KEEP_NODE_LOGS') is None:
                os.unlink(self._log.name)
        except FileNotFoundError:
            pass
        return self.proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NodeProcess(DaemonProcess):
    """``python -m dispylike.node`` on ``host`` (any free port).  ``extra`` adds
    command-line options; ``secret`` is passed through the environment, and so is
    ``env`` (more variables)."""

    def __init__(self, cpus: int = 2, secret: str = '', extra: list[str] | None = None,
                 host: str = '127.0.0.1', timeout: float = 30.0, console: bool = False,
                 env: dict[str, str] | None = None) -> None:
        super().__init__('dispylike.node', ['-i', host, '--node_port', '0', '-c', str(cpus),
                                            *(extra or [])],
                         {'DISPYLIKE_SECRET': secret, **(env or {})}, 'node', timeout, console)


class SchedulerProcess(DaemonProcess):
    """``python -m dispylike.scheduler`` on ``host`` (any free port for clients) using
    ``nodes`` ('host', 'host:port' or patterns; UDP discovery only for patterns).
    Secrets go through the environment."""

    def __init__(self, nodes: list[str], node_secret: str = '', cluster_secret: str = '',
                 extra: list[str] | None = None, host: str = '127.0.0.1',
                 timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        argv = ['-i', host, '--scheduler_port', '0']
        for node in nodes:
            argv += ['-n', node]
        super().__init__('dispylike.scheduler', argv + list(extra or []),
                         {'DISPYLIKE_NODE_SECRET': node_secret,
                          'DISPYLIKE_CLUSTER_SECRET': cluster_secret, **(env or {})},
                         'scheduler', timeout)
