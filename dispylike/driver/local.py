"""The embedded local node: a real dispynode started as a child of the client."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile

from ..errors import DispyError
from ..execution.processes import child_env, read_ready_line

log = logging.getLogger('dispylike')


class LocalNodeProcess:
    """A dispynode subprocess on 127.0.0.1 with a private directory; stop() removes both."""

    def __init__(self, proc: asyncio.subprocess.Process, host: str, port: int,
                 prefix: str) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.prefix = prefix

    @classmethod
    async def launch(cls, cpus: int, secret: str, debug: bool = False, timeout: float = 60.0,
                     tls_files: tuple[str, str, str] = ('', '', '')) -> LocalNodeProcess:
        prefix = tempfile.mkdtemp(prefix='dispylike-local-')
        env = child_env({'DISPYLIKE_SECRET': secret})
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, '-m', 'dispylike.node', '-i', '127.0.0.1', '--node_port', '0',
               '-c', str(cpus), '--dest_path_prefix', prefix, '--daemon',
               '--ready_fd', str(ready_w), '--exit_with_parent']
        if debug:
            cmd.append('-d')
        for option, path in zip(('--certfile', '--keyfile', '--cafile'), tls_files, strict=True):
            if path:
                cmd += [option, path]
        try:
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, pass_fds=(ready_w,),
                                                        stdin=asyncio.subprocess.DEVNULL)
        finally:
            os.close(ready_w)
        try:
            host, port = await asyncio.to_thread(read_ready_line, ready_r, timeout)
        except BaseException as exc:  # failed, or the cluster closed meanwhile: no orphan
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(proc.wait())
            shutil.rmtree(prefix, ignore_errors=True)
            if isinstance(exc, (TimeoutError, ValueError)):
                raise DispyError(f'the embedded node did not start: {exc}') from exc
            raise
        log.debug('embedded node pid %d at %s:%s', proc.pid, host, port)
        return cls(proc, host, port, prefix)

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)
