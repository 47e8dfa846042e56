"""Framing: round trips, truncation, caps, garbage, versions."""

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispylike.errors import FrameTooLarge, IncompatiblePeer, ProtocolError
from dispylike.protocol.frames import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    FrameDecoder,
    Message,
    encode,
    encode_bytes,
    encode_parts,
)


def test_round_trip_single_and_many():
    dec = FrameDecoder()
    data = encode_bytes(20, b'hello') + encode_bytes(21, b'') + encode_bytes(22, b'x' * 1000)
    msgs = dec.feed(data)
    assert [(m.type, m.payload) for m in msgs] == [(20, b'hello'), (21, b''), (22, b'x' * 1000)]
    assert dec.buffered == 0


def test_byte_by_byte_feed_yields_once():
    dec = FrameDecoder()
    data = encode_bytes(30, b'abcdef')
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i:i + 1])
        if i < len(data) - 1:
            assert out == []
    assert [(m.type, m.payload) for m in out] == [(30, b'abcdef')]


def test_multi_frame_message_reassembled():
    payload = bytes(range(256)) * 100
    bufs = encode(40, payload, frame_cap=1000)
    assert len(bufs) == 2 * 26
    dec = FrameDecoder(frame_cap=1000)
    msgs = dec.feed(b''.join(bytes(b) for b in bufs))
    assert len(msgs) == 1 and msgs[0].payload == payload


def test_a_multi_frame_message_keeps_its_frames_until_its_payload_is_read():
    payload = bytes(range(256)) * 100
    msg = FrameDecoder(frame_cap=1000).feed(encode_bytes(40, payload, frame_cap=1000))[0]
    assert len(msg.parts) == 26 and msg.size == len(payload)       # not joined yet
    assert msg.payload == payload and msg.parts == ()               # joined once, on demand
    assert msg == Message(40, payload) and msg != Message(41, payload)


def test_encode_parts_frames_follow_the_pieces_without_copying_them():
    big, small = os.urandom(2500), b'tail'
    bufs = encode_parts(50, [b'head', big, small], frame_cap=1000)
    payloads = bufs[1::2]
    assert [len(p) for p in payloads] == [4, 1000, 1000, 500, 4]
    assert all(p.obj is big for p in payloads[1:4])                  # slices of the object
    flags = [HEADER.unpack(h)[3] for h in bufs[0::2]]
    assert flags == [1, 1, 1, 1, 0]                                  # FLAG_MORE but the last
    msgs = FrameDecoder(frame_cap=1000).feed(b''.join(bytes(b) for b in bufs))
    assert [(m.type, m.payload) for m in msgs] == [(50, b'head' + big + small)]
    assert encode_parts(51, [b'one']) == encode(51, b'one')
    assert encode_parts(52, [b'', b'']) == encode(52, b'')


def test_truncated_frame_waits():
    dec = FrameDecoder()
    data = encode_bytes(20, b'0123456789')
    assert dec.feed(data[:-1]) == []
    assert dec.buffered == len(data) - 1


def test_oversized_frame_refused_from_header_alone():
    dec = FrameDecoder(frame_cap=100)
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, 20, 0, 2**31)
    with pytest.raises(FrameTooLarge):
        dec.feed(header)
    with pytest.raises(FrameTooLarge):  # poisoned: the stream position is lost
        dec.feed(b'more')


def test_message_cap_over_many_frames():
    dec = FrameDecoder(frame_cap=100, message_cap=250)
    data = b''.join(bytes(b) for b in encode(20, b'y' * 300, frame_cap=100))
    with pytest.raises(FrameTooLarge):
        dec.feed(data)


def test_wrong_magic():
    with pytest.raises(ProtocolError, match='magic'):
        FrameDecoder().feed(b'GET / HTTP/1.1\r\n\r\n')


def test_wrong_version_for_app_message():
    frame = HEADER.pack(MAGIC, PROTOCOL_VERSION + 1, 20, 0, 0)
    with pytest.raises(IncompatiblePeer, match='incompatible peer'):
        FrameDecoder().feed(frame)


def test_handshake_frames_readable_at_any_version():
    frame = HEADER.pack(MAGIC, PROTOCOL_VERSION + 7, 1, 0, 3) + b'abc'
    dec = FrameDecoder()
    (msg,) = dec.feed(frame)
    assert msg.type == 1 and dec.peer_version == PROTOCOL_VERSION + 7


def test_unknown_flags_and_type_change():
    with pytest.raises(ProtocolError, match='flags'):
        FrameDecoder().feed(HEADER.pack(MAGIC, PROTOCOL_VERSION, 20, 0x80, 0))
    first = HEADER.pack(MAGIC, PROTOCOL_VERSION, 20, 1, 1) + b'a'
    second = HEADER.pack(MAGIC, PROTOCOL_VERSION, 21, 0, 1) + b'b'
    with pytest.raises(ProtocolError, match='type changed'):
        FrameDecoder().feed(first + second)


def test_encode_rejects_bad_type():
    with pytest.raises(ValueError):
        encode(70000, b'')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_only_defined_outcomes(data, step):
    dec = FrameDecoder(frame_cap=512, message_cap=1024)
    try:
        for i in range(0, len(data), step):
            for msg in dec.feed(data[i:i + step]):
                assert isinstance(msg.payload, bytes) and len(msg.payload) <= 1024
    except ProtocolError:
        pass
    assert dec.buffered <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(16, 0xFFFF), st.binary(max_size=300)), max_size=8),
       st.integers(min_value=1, max_value=50))
def test_valid_streams_round_trip_in_any_chunking(msgs, step):
    data = b''.join(b''.join(bytes(b) for b in encode(t, p, frame_cap=64)) for t, p in msgs)
    dec = FrameDecoder(frame_cap=64)
    out = []
    for i in range(0, len(data), step):
        out += dec.feed(data[i:i + step])
    assert [(m.type, m.payload) for m in out] == msgs


def test_header_layout_is_stable():
    assert HEADER.size == 12
    assert encode_bytes(20, b'ab')[:12] == struct.pack('!3sBHHI', b'DLK', 1, 20, 0, 2)


def test_large_frame_is_received_straight_into_its_own_buffer():
    big = bytes(range(256)) * 1024                           # 256 KiB: one frame
    data = encode_bytes(20, b'before') + encode_bytes(21, big) + encode_bytes(22, b'after')
    dec = FrameDecoder()
    out, pos = [], 0
    while pos < len(data):
        room = dec.get_buffer()
        size = min(len(room), len(data) - pos, 50_000)
        if size == 0:
            out += dec.messages()
            continue
        room[:size] = data[pos:pos + size]
        dec.buffer_updated(size)
        pos += size
        out += dec.messages()
    out += dec.messages()
    assert [(m.type, bytes(m.payload)) for m in out] == [(20, b'before'), (21, big),
                                                         (22, b'after')]
    assert dec.buffered == 0


def test_large_frame_buffer_is_the_payload_itself():
    big = b'z' * 200_000
    frame = encode_bytes(21, big)
    dec = FrameDecoder()
    room = dec.get_buffer()
    room[:1000] = frame[:1000]
    dec.buffer_updated(1000)
    assert dec.messages() == []
    rest = dec.get_buffer()                                   # the large frame's own buffer
    assert len(rest) == len(frame) - 1000
    rest[:] = frame[1000:]
    dec.buffer_updated(len(rest))
    (msg,) = dec.messages()
    assert msg.payload == big and rest.obj is msg.payload    # received in place, not copied


def test_get_buffer_is_empty_only_until_a_complete_large_frame_is_taken():
    frame = encode_bytes(21, b'q' * 100_000)
    dec = FrameDecoder()
    assert dec.feed(frame[:20]) == []
    room = dec.get_buffer()
    room[:] = frame[20:]
    dec.buffer_updated(len(room))
    assert len(dec.get_buffer()) == 0
    assert [m.payload for m in dec.messages()] == [b'q' * 100_000]
    assert len(dec.get_buffer()) > 0
