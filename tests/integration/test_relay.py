"""dispynetrelay over loopback sockets: the daemon in-process and the real command.

Loopback has no broadcast, so the relay cannot probe a subnet here (the
namespace lab does that, tests/multihost/test_relay.py); these tests check what
the relay's ports take and send back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest

from dispylike.discovery.beacon import ClientBeacon
from dispylike.execution.processes import child_env, read_ready_line
from dispylike.protocol import discovery as d
from dispylike.relay.daemon import RelayDaemon, RelayOptions

SECRET = 'relay-test'


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def started_announce(ip: str = '10.78.0.203') -> bytes:
    """A node's start-up announcement (its address need not exist: it is only relayed)."""
    return d.encode(d.Announce(os.urandom(16), 9701, 2, 1, 'far-node', ip), SECRET)


async def until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError('condition not met in time')
        await asyncio.sleep(0.01)


async def recv(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, tuple]:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(sock, 2048), timeout)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    sock.setblocking(False)
    return sock


def relay_options(port: int) -> RelayOptions:
    return RelayOptions(addresses=['127.0.0.1'], relay_port=port, dispy_port=free_udp_port(),
                        secret=SECRET)


def test_probes_are_taken_and_announcements_relayed_garbage_dropped():
    async def main():
        port = free_udp_port()
        relay = RelayDaemon(relay_options(port))
        await relay.start()
        client, node = udp_socket(), udp_socket()
        try:
            client.sendto(d.encode(d.Probe(os.urandom(16)), SECRET), ('127.0.0.1', port))
            await until(lambda: relay.stats.probes == 1)
            first = started_announce()
            node.sendto(first, ('127.0.0.1', port))
            data, source = await recv(client)
            assert data == first and source[1] == port         # as the node signed it
            for batch in range(15):     # garbage of every size, in batches the buffer holds
                for i in range(20):
                    node.sendto(os.urandom((batch * 20 + i) * 7 % 1400), ('127.0.0.1', port))
                await until(lambda n=(batch + 1) * 20: relay.stats.refused == n)
            node.sendto(d.encode(d.Probe(os.urandom(16)), 'another secret'), ('127.0.0.1', port))
            await until(lambda: relay.stats.refused == 301)
            second = started_announce('10.78.0.204')
            node.sendto(second, ('127.0.0.1', port))
            assert (await recv(client))[0] == second            # still relaying
            node.sendto(second, ('127.0.0.1', port))            # a replay is dropped
            await until(lambda: relay.stats.replayed == 1)
            assert relay.stats.forwarded == 2
        finally:
            client.close()
            node.close()
            await relay.stop()
    asyncio.run(main())


def test_a_second_relay_on_the_same_port_fails_at_start():
    async def main():
        opts = relay_options(free_udp_port())
        first = RelayDaemon(opts)
        await first.start()
        try:
            with pytest.raises(OSError):
                await RelayDaemon(opts).start()
        finally:
            await first.stop()
    asyncio.run(main())


def test_an_address_on_no_interface_is_an_error():
    async def main():
        opts = RelayOptions(addresses=['127.0.0.1', '10.77.0.254'], relay_port=free_udp_port())
        with pytest.raises(OSError, match='10.77.0.254'):
            await RelayDaemon(opts).start()
    asyncio.run(main())


def test_a_client_beacon_probes_the_relay_and_hears_the_nodes_it_relays():
    async def main():
        port = free_udp_port()
        relay = RelayDaemon(relay_options(port))
        await relay.start()
        heard: list[tuple[d.Announce, str]] = []
        beacon = ClientBeacon(SECRET, lambda ann, source: heard.append((ann, source)))
        node = udp_socket()
        try:
            await beacon.start(free_udp_port(), ['127.0.0.1'])
            beacon.probe_relays(['127.0.0.1'], port)
            assert f'127.0.0.1:{port} (relay)' in beacon.targets
            await until(lambda: relay.stats.probes == 1)
            node.sendto(started_announce(), ('127.0.0.1', port))
            await until(lambda: heard)
            assert heard[0][0].ip_addr == '10.78.0.203' and heard[0][1] == '127.0.0.1'
        finally:
            node.close()
            beacon.close()
            await relay.stop()
    asyncio.run(main())


def test_the_command_starts_stops_on_sigterm_and_reports_a_taken_port():
    port = free_udp_port()
    argv = [sys.executable, '-m', 'dispylike.relay', '--daemon', '-i', '127.0.0.1',
            '--relay_port', str(port), '-p', str(free_udp_port()), '-s', SECRET]
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen([*argv, '--ready_fd', str(ready_w)], pass_fds=(ready_w,),
                            env=child_env(), stderr=subprocess.PIPE, text=True)
    os.close(ready_w)
    try:
        assert read_ready_line(ready_r, 30) == ('relay', port)
        taken = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1 and 'dispynetrelay:' in taken.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert 'probes 0' in err                     # the counters, logged at exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
