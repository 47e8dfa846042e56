"""Two subnets joined by a router, for dispynetrelay: two netlab.sh LANs plus one link.

::

    subnet A 10.77.0.0/24, fd77::/64               subnet B 10.78.0.0/24, fd78::/64
      a1  10.77.0.1 fd77::1   client                 b1 10.78.0.1 fd78::1  router, relay
      router's eth1 10.77.0.254 fd77::fe ────────────┘   (eth1 on A, eth0 on B, forwarding)
                                                     b2..b4 10.78.0.2..4 fd78::2..4  nodes

Broadcasts stay on their bridge (the router forwards unicast only), so a client
on A can reach B's nodes over TCP but cannot find them by broadcast: only the
relay can tell it about them.  Both labs are namespaces made here with their own
prefix, and are removed (every process in them killed) by :meth:`down`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from .lab import Lab

ROUTER_A = '10.77.0.254'
ROUTER_A6 = 'fd77::fe'


class TwoSubnets:
    def __init__(self, prefix: str, state: str, b_hosts: int = 4) -> None:
        self.a = Lab(1, prefix=f'{prefix}a-', subnet='10.77.0', state=os.path.join(state, 'a'))
        self.b = Lab(b_hosts, prefix=f'{prefix}b-', subnet='10.78.0',
                     state=os.path.join(state, 'b'))
        self.b.env['NETLAB_SUBNET6'] = 'fd78:'

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(['ip', *args], check=True, capture_output=True, text=True, timeout=30)

    def up(self) -> TwoSubnets:
        self.a.up()
        self.b.up()
        router = self.b.ns('h1')
        self._ip('-n', f'{self.a.prefix}switch', 'link', 'add', 'p-router', 'type', 'veth',
                 'peer', 'name', 'eth1', 'netns', router)
        self._ip('-n', f'{self.a.prefix}switch', 'link', 'set', 'p-router', 'master', 'br0', 'up')
        subprocess.run(['ip', 'netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1',
                        'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.eth1.accept_dad=0',
                        'net.ipv4.conf.eth1.rp_filter=0'], check=True, capture_output=True,
                       timeout=30)
        self._ip('-n', router, 'addr', 'add', f'{ROUTER_A}/24', 'brd', '+', 'dev', 'eth1')
        self._ip('-n', router, '-6', 'addr', 'add', f'{ROUTER_A6}/64', 'dev', 'eth1', 'nodad')
        self._ip('-n', router, 'link', 'set', 'eth1', 'up')
        self._ip('-n', self.a.ns('h1'), 'route', 'add', '10.78.0.0/24', 'via', ROUTER_A)
        self._ip('-n', self.a.ns('h1'), '-6', 'route', 'add', 'fd78::/64', 'via', ROUTER_A6)
        for i in range(2, self.b.n + 1):
            self._ip('-n', self.b.ns(f'h{i}'), 'route', 'add', '10.77.0.0/24', 'via', '10.78.0.1')
            self._ip('-n', self.b.ns(f'h{i}'), '-6', 'route', 'add', 'fd77::/64', 'via', 'fd78::1')
        return self

    def down(self) -> None:
        self.b.down()       # the router's eth1 goes with its namespace
        self.a.down()


class LabRelay:
    """dispynetrelay on a lab host, ready when its ready line arrives; stopped by PID."""

    def __init__(self, lab: Lab, host: str, extra: list[str] = (), secret: str = 'lab') -> None:
        from dispylike.execution.processes import child_env, read_ready_line
        ready_r, ready_w = os.pipe()
        argv = [sys.executable, '-m', 'dispylike.relay', '--daemon', '-d',
                '--ready_fd', str(ready_w), *extra]
        env = dict(lab.env, DISPYLIKE_SECRET=secret, PYTHONPATH=child_env()['PYTHONPATH'])
        self.log_file = tempfile.NamedTemporaryFile(prefix=f'dispynetrelay-{host}-',
                                                    suffix='.log')
        try:
            self.proc = lab.popen(host, argv, env=env, pass_fds=(ready_w,),
                                  stderr=self.log_file, stdin=subprocess.DEVNULL)
        finally:
            os.close(ready_w)
        try:
            read_ready_line(ready_r, 30)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        with open(self.log_file.name, errors='replace') as f:
            return f.read()

    def stop(self) -> int | None:
        """Stop it (SIGTERM, then SIGKILL); returns its exit status."""
        Lab.stop(self.proc)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.log_file.close()
