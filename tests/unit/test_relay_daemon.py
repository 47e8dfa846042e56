"""dispynetrelay's datagram handler over fake sockets (hostile input included) and its CLI."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispylike.protocol import discovery as d
from dispylike.relay import cli
from dispylike.relay.daemon import RelayDaemon, RelayOptions
from dispylike.security.certs import make_self_signed, write_pair

SECRET = 'lab'
CLIENT = ('10.77.0.1', 9700)
NODE = ('10.78.0.2', 9701)


class FakeSockets:
    def __init__(self, handler) -> None:
        self.handler = handler
        self.probes: list[bytes] = []
        self.sent: list[tuple[bytes, tuple]] = []
        self.ifaces = []

    def probe_subnets(self, data: bytes, node_port: int, multicast_v4: bool) -> list[str]:
        self.probes.append(data)
        return ['10.78.0.255:9701 (eth0)']

    def send(self, data: bytes, target: tuple) -> None:
        self.sent.append((data, target))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def relay(**opts) -> RelayDaemon:
    return RelayDaemon(RelayOptions(secret=SECRET, **opts), clock=Clock(), sockets=FakeSockets)


def probe_from_client(r: RelayDaemon, nonce: bytes = b'c' * 16) -> d.Probe:
    r.datagram(d.encode(d.Probe(nonce), SECRET), CLIENT, False)
    return d.decode(r.sockets.probes[-1], SECRET)


def test_a_client_probe_is_verified_then_the_answers_go_back_unmodified():
    r = relay()
    ours = probe_from_client(r)
    answer = d.encode(d.Announce(ours.nonce, 9701, 4, 7, 'n2', NODE[0]), SECRET)
    r.datagram(answer, NODE, False)
    assert r.sockets.sent == [(answer, CLIENT)]
    assert r.stats.probes == 1 and r.stats.forwarded == 1


def test_a_node_that_starts_reaches_the_scheduler(monkeypatch):
    r = relay(scheduler_node='10.77.0.9')
    r.state.scheduler = ('10.77.0.9', 9700)      # what start() resolves
    started = d.encode(d.Announce(os.urandom(16), 9701, 4, 7, 'n3', '10.78.0.3'), SECRET)
    r.datagram(started, ('10.78.0.3', 40123), True)
    assert r.sockets.sent == [(started, ('10.77.0.9', 9700))]


def test_ports_follow_dispy_port_unless_given():
    opts = RelayOptions(dispy_port=5000)
    assert (opts.relay_port_in_effect(), opts.scheduler_port_in_effect()) == (5003, 5000)
    opts = RelayOptions(relay_port=6000, scheduler_port=6001)
    assert (opts.relay_port_in_effect(), opts.scheduler_port_in_effect()) == (6000, 6001)


def test_another_secret_and_probes_on_the_client_port_are_not_relayed():
    r = relay()
    r.datagram(d.encode(d.Probe(b'x' * 16), 'other'), CLIENT, False)
    r.datagram(d.encode(d.Announce(b'y' * 16, 9701, 1, 1, 'n', '10.78.0.5'), 'other'), NODE, True)
    r.datagram(d.encode(d.Probe(b'z' * 16), SECRET), CLIENT, True)   # someone's broadcast probe
    assert r.sockets.probes == [] and r.sockets.sent == []
    assert r.stats.refused == 2 and r.stats.unexpected == 1


def test_oversized_and_truncated_datagrams_are_counted(caplog):
    r = relay()
    good = d.encode(d.Probe(b'c' * 16), SECRET)
    with caplog.at_level(logging.INFO, logger='dispylike'):
        for bad in (b'', good[:-1], good + b'x', b'\0' * 70000, good[:6]):
            r.datagram(bad, CLIENT, False)
    assert r.stats.refused == 5 and r.sockets.probes == []
    assert 'ignored datagram from 10.77.0.1' in caplog.text


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=700), on_client_port=st.booleans())
def test_garbage_never_raises_and_is_never_relayed(data, on_client_port):
    r = relay()
    probe_from_client(r)                       # a client is listening
    r.datagram(data, ('10.78.0.66', 1234), on_client_port)
    assert r.sockets.sent == [] and len(r.sockets.probes) == 1
    assert r.stats.refused == 1


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=120), kind=st.sampled_from([d.PROBE, d.ANNOUNCE, 0, 3, 255]))
def test_signed_malformed_bodies_never_raise(body, kind):
    """What an insider with the secret could send: valid MAC, any body."""
    head = d._HEAD.pack(d.MAGIC, d.VERSION, kind) + body
    r = relay()
    r.datagram(head + d._mac(d.derive_key(SECRET), head), CLIENT, False)
    assert r.stats.refused + r.stats.probes + r.stats.announces == 1


# --- command line ----------------------------------------------------------------------
def test_options_as_dispy_and_the_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv('DISPYLIKE_SECRET', 'from-env')
    args = cli.build_parser().parse_args(
        ['-i', '10.78.0.1', '-i', 'fd78::1', '--scheduler_node', 'h9', '-p', '5000',
         '--relay_port', '5010', '--scheduler_port', '5020', '--ipv4_udp_multicast',
         '--daemon', '-d'])
    opts = cli.options_from_args(args)
    assert opts.addresses == ['10.78.0.1', 'fd78::1'] and opts.scheduler_node == 'h9'
    assert (opts.dispy_port, opts.relay_port_in_effect(), opts.scheduler_port_in_effect()) \
        == (5000, 5010, 5020)
    assert opts.ipv4_udp_multicast and opts.secret == 'from-env'
    assert cli.options_from_args(cli.build_parser().parse_args(['-s', 'given'])).secret == 'given'


@pytest.mark.parametrize('argv, words', [
    (['--relay_port', '70000'], 'port number'),
    (['-p', '0'], 'port number'),
    (['--keyfile', 'k.pem'], 'needs --certfile'),
    (['--certfile', '/nonexistent/cert.pem'], 'cannot load certificate'),
    (['--bogus'], 'unrecognized'),
])
def test_bad_options_exit_with_a_message(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and words in capsys.readouterr().err


def test_a_certificate_is_checked_when_given(tmp_path):
    key, cert = make_self_signed(['relay'])
    certfile = str(tmp_path / 'relay.pem')
    write_pair(key, cert, certfile, None)
    opts = cli.options_from_args(cli.build_parser().parse_args(['--certfile', certfile]))
    assert opts.certfile == certfile


def test_console_commands():
    import asyncio
    r = relay()
    quit_event = asyncio.Event()
    assert 'clients heard recently: 0' in cli.handle_command(r, 'status', quit_event)
    assert 'quit' in cli.handle_command(r, 'help', quit_event)
    assert 'unknown command' in cli.handle_command(r, 'frobnicate', quit_event)
    assert cli.handle_command(r, '', quit_event) == ''
    cli.handle_command(r, 'quit', quit_event)
    assert quit_event.is_set()
