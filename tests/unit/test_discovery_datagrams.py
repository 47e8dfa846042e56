"""Discovery datagrams: authenticated, fixed layout, hostile input refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispylike.errors import AuthenticationError, ProtocolError
from dispylike.protocol import discovery as d

ANN = d.Announce(b'n' * 16, 9701, 8, 12345, 'node-ü', '10.77.0.2')


def test_round_trips():
    assert d.decode(d.encode(d.Probe(b'p' * 16), 's'), 's') == d.Probe(b'p' * 16)
    assert d.decode(d.encode(ANN, 's'), 's') == ANN
    v6 = d.Announce(b'n' * 16, 9701, 1, 1, 'h', 'fd77::2')
    assert d.decode(d.encode(v6, ''), '') == v6


def test_other_secret_is_refused_before_parsing():
    with pytest.raises(AuthenticationError):
        d.decode(d.encode(ANN, 'a'), 'b')
    with pytest.raises(AuthenticationError):
        d.decode(d.encode(ANN, ''), 'x')


def test_tampering_is_detected():
    data = bytearray(d.encode(ANN, 's'))
    data[10] ^= 1
    with pytest.raises(AuthenticationError):
        d.decode(bytes(data), 's')


def test_malformed_and_oversized():
    for bad in (b'', b'DLKU', b'XXXX' + b'\x01\x01' + b'x' * 40, b'D' * (d.MAX_DATAGRAM + 1)):
        with pytest.raises(ProtocolError):
            d.decode(bad, 's')
    wrong_version = bytearray(d.encode(ANN, 's'))
    wrong_version[4] = 9
    with pytest.raises(ProtocolError, match='version'):
        d.decode(bytes(wrong_version), 's')


def test_signed_but_malformed_body_is_refused():
    head = d._HEAD.pack(d.MAGIC, d.VERSION, d.ANNOUNCE)
    body = head + d._ANNOUNCE.pack(b'n' * 16, 9701, 1, 1) + b'\x05ab'     # truncated name
    signed = body + d._mac(d.derive_key('s'), body)
    with pytest.raises(ProtocolError, match='truncated'):
        d.decode(signed, 's')
    body = head + d._ANNOUNCE.pack(b'n' * 16, 9701, 1, 1) + b'\x01a' + b'\x03abc'
    with pytest.raises(ProtocolError, match='address'):
        d.decode(body + d._mac(d.derive_key('s'), body), 's')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_datagrams_only_defined_outcomes(data):
    try:
        d.decode(data, 'secret')
    except (ProtocolError, AuthenticationError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.binary(max_size=400))
def test_signed_arbitrary_bodies_only_defined_outcomes(kind, rest):
    body = d._HEAD.pack(d.MAGIC, d.VERSION, kind) + rest
    try:
        msg = d.decode(body + d._mac(d.derive_key('s'), body), 's')
    except ProtocolError:
        return
    assert isinstance(msg, (d.Probe, d.Announce))
