"""The mutual HMAC handshake, driven without sockets."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispylike.errors import AuthenticationError, IncompatiblePeer, ProtocolError
from dispylike.protocol import handshake as hs
from dispylike.protocol.frames import HEADER, MAGIC, FrameDecoder, Message


def frames(data: bytes) -> list[Message]:
    return FrameDecoder().feed(data)


def run(client: hs.ClientHandshake, server: hs.ServerHandshake) -> list[bytes]:
    """Run a full exchange; returns every byte string sent (a 'capture')."""
    capture = [client.hello()]
    to_server = capture[0]
    while not (client.done and server.done):
        (msg,) = frames(to_server)
        to_client = server.receive(msg)
        capture.append(to_client)
        (msg,) = frames(to_client)
        to_server = client.receive(msg)
        if to_server:
            capture.append(to_server)
    return capture


def test_same_secret_succeeds_and_keys_agree():
    c, s = hs.ClientHandshake('s3cret'), hs.ServerHandshake('s3cret')
    run(c, s)
    assert c.done and s.done
    assert c.session_key == s.session_key and len(c.session_key) == 32
    assert s.role is hs.Role.CLIENT


def test_empty_secret_is_still_checked():
    c, s = hs.ClientHandshake(''), hs.ServerHandshake('x')
    (msg,) = frames(c.hello())
    challenge = s.receive(msg)
    with pytest.raises(AuthenticationError, match='secret'):
        c.receive(frames(challenge)[0])


def test_wrong_secret_detected_by_server_too():
    c, s = hs.ClientHandshake('a'), hs.ServerHandshake('b')
    (msg,) = frames(c.hello())
    s.receive(msg)
    # a client that skips verifying the server still cannot produce a valid proof
    forged = hs.ClientHandshake('a', nonce=c.nonce)
    proof = forged._mac(b'client', 1, 1, c.nonce, s.nonce)
    from dispylike.protocol.frames import encode_bytes
    with pytest.raises(AuthenticationError):
        s.receive(frames(encode_bytes(hs.PROOF, proof))[0])
    assert not s.done


def test_replayed_proof_fails_against_fresh_server_nonce():
    capture = run(hs.ClientHandshake('k'), hs.ServerHandshake('k'))
    hello, _challenge, proof = capture[0], capture[1], capture[2]
    server = hs.ServerHandshake('k')           # a new connection: new server nonce
    server.receive(frames(hello)[0])           # the attacker replays the captured HELLO
    with pytest.raises(AuthenticationError):
        server.receive(frames(proof)[0])       # ... and the captured PROOF
    assert not server.done and server.session_key is None


def test_replayed_challenge_fails_against_fresh_client_nonce():
    capture = run(hs.ClientHandshake('k'), hs.ServerHandshake('k'))
    client = hs.ClientHandshake('k')
    client.hello()
    with pytest.raises(AuthenticationError):
        client.receive(frames(capture[1])[0])


def test_fixed_nonces_make_deterministic_transcripts():
    a = run(hs.ClientHandshake('k', nonce=b'1' * 32), hs.ServerHandshake('k', nonce=b'2' * 32))
    b = run(hs.ClientHandshake('k', nonce=b'1' * 32), hs.ServerHandshake('k', nonce=b'2' * 32))
    assert a == b


def test_version_mismatch_is_incompatible_peer():
    s = hs.ServerHandshake('k')
    body = bytes([99, 1]) + b'n' * 32
    msg = Message(hs.HELLO, body)
    with pytest.raises(IncompatiblePeer, match='incompatible peer'):
        s.receive(msg)


def test_reject_frame_becomes_clear_error():
    c = hs.ClientHandshake('k')
    c.hello()
    with pytest.raises(AuthenticationError, match='refused.*nope'):
        c.receive(frames(hs.reject_frame('nope'))[0])
    with pytest.raises(IncompatiblePeer):
        hs.ClientHandshake('k').receive(frames(hs.reject_frame('incompatible peer: v9'))[0])


def test_wrong_message_order_and_sizes():
    s = hs.ServerHandshake('k')
    with pytest.raises(ProtocolError):
        s.receive(Message(hs.PROOF, b'x' * 32))
    with pytest.raises(ProtocolError):
        s.receive(Message(hs.HELLO, b'short'))
    c = hs.ClientHandshake('k')
    with pytest.raises(ProtocolError):
        c.receive(Message(hs.WELCOME, b''))
    with pytest.raises(ProtocolError, match='role'):
        hs.ServerHandshake('k').receive(Message(hs.HELLO, bytes([1, 77]) + b'n' * 32))


def test_echoed_nonce_refused():
    s = hs.ServerHandshake('k', nonce=b'z' * 32)
    with pytest.raises(ProtocolError, match='echoed'):
        s.receive(Message(hs.HELLO, bytes([1, 1]) + b'z' * 32))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.binary(max_size=80)), max_size=4))
def test_server_handshake_never_authenticates_garbage(msgs):
    s = hs.ServerHandshake('secret')
    try:
        for t, body in msgs:
            s.receive(Message(t, body))
    except (ProtocolError, AuthenticationError):
        pass
    assert not s.done


def test_handshake_frames_fit_the_preauth_cap():
    c = hs.ClientHandshake('k')
    assert len(c.hello()) - HEADER.size <= 1024
    assert c.hello()[:3] == MAGIC
