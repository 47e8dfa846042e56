"""Sealed frames without TLS: confidentiality and integrity per frame, in order only."""

import pytest

from dispylike.errors import AuthenticationError
from dispylike.protocol.frames import HEADER, FrameDecoder, encode
from dispylike.security import aead
from dispylike.security.aead import TAG_SIZE, FrameCipher

KEY = b'k' * 32


def pair():
    return FrameCipher(KEY, initiator=True), FrameCipher(KEY, initiator=False)


def sealed(cipher, msg_type, payload, frame_cap=1 << 20):
    return b''.join(bytes(b) for b in cipher.seal_frames(encode(msg_type, payload, frame_cap)))


def receiver(cipher, frame_cap=1 << 20):
    dec = FrameDecoder(frame_cap + TAG_SIZE)
    dec.opener = cipher.open_frame
    return dec


def test_round_trip_and_payload_is_not_in_clear():
    client, server = pair()
    wire = sealed(client, 20, b'secret job arguments')
    assert b'secret job arguments' not in wire
    (msg,) = receiver(server).feed(wire)
    assert (msg.type, msg.payload) == (20, b'secret job arguments')


def test_multi_frame_messages_are_sealed_per_frame():
    client, server = pair()
    payload = bytes(range(256)) * 40
    wire = sealed(client, 21, payload, frame_cap=1000)
    (msg,) = receiver(server, frame_cap=1000).feed(wire)
    assert msg.payload == payload


def test_large_frames_are_opened_in_their_own_buffer_and_checked_all_the_same():
    client, server = pair()
    payload = bytes(range(256)) * 4096                             # 1 MiB: frames of their own
    wire = sealed(client, 22, payload, frame_cap=300_000)
    (msg,) = receiver(server, frame_cap=300_000).feed(wire)
    if aead._IN_PLACE:           # frames received into buffers of their own: opened there
        assert any(isinstance(p, memoryview) and isinstance(p.obj, bytearray)
                   for p in msg.parts)
    assert len(msg.parts) == 4 and msg.payload == payload
    client, server = pair()
    wire = bytearray(sealed(client, 22, payload, frame_cap=300_000))
    wire[-5] ^= 1                                                   # in the last large frame
    with pytest.raises(AuthenticationError):
        receiver(server, frame_cap=300_000).feed(bytes(wire))


def test_each_direction_has_its_own_key():
    client, _server = pair()
    wire = sealed(client, 20, b'x')
    with pytest.raises(AuthenticationError):
        receiver(FrameCipher(KEY, initiator=True)).feed(wire)   # a reflected frame


@pytest.mark.parametrize('where', [HEADER.size + 3, 4])       # payload byte, header version
def test_any_altered_byte_fails(where):
    client, server = pair()
    wire = bytearray(sealed(client, 20, b'payload bytes'))
    wire[where] ^= 1
    with pytest.raises(Exception) as info:
        receiver(server).feed(bytes(wire))
    assert isinstance(info.value, (AuthenticationError, ValueError))


def test_replayed_and_reordered_frames_fail():
    client, server = pair()
    first, second = sealed(client, 20, b'one'), sealed(client, 20, b'two')
    dec = receiver(server)
    assert dec.feed(first)[0].payload == b'one'
    with pytest.raises(AuthenticationError):
        dec.feed(first)                                         # replay
    client, server = pair()
    first, second = sealed(client, 20, b'one'), sealed(client, 20, b'two')
    with pytest.raises(AuthenticationError):
        receiver(server).feed(second)                           # out of order


def test_wrong_session_key_fails():
    client = FrameCipher(KEY, initiator=True)
    other = FrameCipher(b'o' * 32, initiator=False)
    with pytest.raises(AuthenticationError):
        receiver(other).feed(sealed(client, 20, b'x'))
