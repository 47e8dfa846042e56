"""Framing: bytes in, complete messages out.  Pure; no I/O.

A frame is a 12-byte header followed by its payload::

    +-------+---------+------+-------+--------+-------------+
    | 'DLK' | version | type | flags | length | payload ... |
    |  3 B  |   u8    | u16  |  u16  |  u32   |  length B   |
    +-------+---------+------+-------+--------+-------------+

A message larger than one frame is split into frames carrying ``FLAG_MORE``;
the decoder reassembles them.  Both a single frame and a whole message are
capped, and a length above the cap is refused *from the header*, before any
of its payload is buffered.  Handshake frame types are readable whatever the
peer's version so that an old peer can be told why it is refused.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator

from ..errors import AuthenticationError, FrameTooLarge, IncompatiblePeer, ProtocolError

MAGIC = b'DLK'
PROTOCOL_VERSION = 1
HEADER = struct.Struct('!3sBHHI')
HEADER_SIZE = HEADER.size
FLAG_MORE = 0x1
_KNOWN_FLAGS = FLAG_MORE

#: Largest payload of one frame (bigger messages are split).
DEFAULT_FRAME_CAP = 4 * 1024 * 1024
#: Largest reassembled message accepted from an authenticated peer.
DEFAULT_MESSAGE_CAP = 1024 * 1024 * 1024
#: Before authentication only small handshake frames are acceptable.
HANDSHAKE_CAP = 1024

#: Types below this value are handshake types, stable across versions.
FIRST_APP_TYPE = 16
#: The decoder's reusable receive buffer, and the frame size above which a frame's
#: payload is received into a buffer of its own instead.
SCRATCH_SIZE = 256 * 1024
BIG_FRAME = 64 * 1024


class Message:
    """One complete message: its type and payload (bytes-like).  A message that came
    in several frames keeps them as ``parts`` (a 20 MB argument arrives as five):
    ``messages.safe_loads`` reads them in place, and only reading ``payload`` joins
    them into one object."""

    __slots__ = ('type', '_payload', 'parts')

    def __init__(self, type: int, payload: bytes = b'', parts: tuple = ()) -> None:
        self.type = type
        self._payload: bytes | None = None if parts else payload
        self.parts = parts

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload, self.parts = b''.join(self.parts), ()
        return self._payload

    @property
    def size(self) -> int:
        """Length of the payload (without joining parts)."""
        if self._payload is None:
            return sum(len(part) for part in self.parts)
        return len(self._payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.type == other.type and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f'Message(type={self.type}, size={self.size})'


def encode(msg_type: int, payload: bytes | bytearray | memoryview = b'',
           frame_cap: int = DEFAULT_FRAME_CAP) -> list[bytes | memoryview]:
    """Frame ``payload`` as message ``msg_type``; returns buffers for ``writelines``.

    The payload is not copied: large payloads are returned as memoryview slices.
    """
    if not 0 <= msg_type <= 0xFFFF:
        raise ValueError(f'message type {msg_type} out of range')
    view = memoryview(payload).cast('B') if not isinstance(payload, bytes) else payload
    size = len(view)
    if size <= frame_cap:
        return [HEADER.pack(MAGIC, PROTOCOL_VERSION, msg_type, 0, size), view]
    if not isinstance(view, memoryview):
        view = memoryview(view)
    out: list[bytes | memoryview] = []
    for start in range(0, size, frame_cap):
        chunk = view[start:start + frame_cap]
        flags = FLAG_MORE if start + frame_cap < size else 0
        out.append(HEADER.pack(MAGIC, PROTOCOL_VERSION, msg_type, flags, len(chunk)))
        out.append(chunk)
    return out


def encode_parts(msg_type: int, parts: list, frame_cap: int = DEFAULT_FRAME_CAP) -> list:
    """Like :func:`encode` for a payload given as consecutive pieces (a large field
    kept as the caller's object, see ``messages.encode_message_parts``): frames
    follow the pieces' boundaries, so no piece is copied."""
    if len(parts) == 1:
        return encode(msg_type, parts[0], frame_cap)
    pieces = [part for part in parts if len(part)]
    out: list[bytes | memoryview] = []
    for index, part in enumerate(pieces):
        frames = encode(msg_type, part, frame_cap)
        if index < len(pieces) - 1:   # the message goes on in the next piece
            last = len(frames) - 2
            magic, version, kind, flags, length = HEADER.unpack(frames[last])
            frames[last] = HEADER.pack(magic, version, kind, flags | FLAG_MORE, length)
        out += frames
    return out or encode(msg_type, b'', frame_cap)


def encode_bytes(msg_type: int, payload: bytes = b'', frame_cap: int = DEFAULT_FRAME_CAP) -> bytes:
    """Like :func:`encode` but joined into one bytes object (small messages, tests)."""
    return b''.join(encode(msg_type, payload, frame_cap))


def parse_header(buf: bytes | bytearray, frame_cap: int,
                 offset: int = 0) -> tuple[int, int, int, int]:
    """Validate the header at ``offset``; return (version, type, flags, length).

    Raises ProtocolError (or a subclass) for anything but a well-formed header.
    """
    magic, version, msg_type, flags, length = HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        if magic[0] in (0x15, 0x16) and magic[1] == 0x03:  # a TLS record header
            raise ProtocolError('the peer speaks TLS but this side has no certificate '
                                '(give both sides certfile/keyfile)')
        raise ProtocolError(f'bad magic {bytes(magic)!r}: not a dispylike peer')
    if version != PROTOCOL_VERSION and msg_type >= FIRST_APP_TYPE:
        raise IncompatiblePeer(f'incompatible peer: protocol version {version}, '
                               f'this side speaks {PROTOCOL_VERSION}')
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolError(f'unknown frame flags {flags:#x}')
    if length > frame_cap:
        raise FrameTooLarge(f'frame of {length} bytes exceeds the cap of {frame_cap}')
    return version, msg_type, flags, length


class FrameDecoder:
    """Incremental decoder: bytes in, complete :class:`Message` objects out.

    Two ways to feed it: :meth:`feed` (bytes in, messages out), or, to receive
    straight into its buffers with ``recv_into``, :meth:`get_buffer` /
    :meth:`buffer_updated` followed by :meth:`messages`.  Small frames collect in
    one reusable buffer; a frame larger than ``BIG_FRAME`` gets a buffer of its
    own, which the rest of its payload is received into directly (no copy).  A
    large payload may therefore come out as a ``bytearray``.

    After a :class:`ProtocolError` the decoder is poisoned (the stream position is
    lost) and every later call raises the same error: close the connection.
    """

    def __init__(self, frame_cap: int = DEFAULT_FRAME_CAP,
                 message_cap: int = DEFAULT_MESSAGE_CAP) -> None:
        self.frame_cap = frame_cap
        self.message_cap = message_cap
        self.peer_version: int | None = None
        self._scratch = bytearray(SCRATCH_SIZE)
        self._view = memoryview(self._scratch)
        self._lo = 0                      # unparsed bytes are _scratch[_lo:_hi]
        self._hi = 0
        self._big: bytearray | None = None    # the payload of a large frame being received
        self._big_header = b''
        self._big_fields = (0, 0, 0)          # its version, type, flags
        self._big_fill = 0
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._parts_type: int | None = None
        self._error: ProtocolError | AuthenticationError | None = None
        #: Called with (header, payload) for every frame, returns the payload to use:
        #: channel protection plugs in here (see security.aead).
        self.opener: Callable[[bytes, bytes], bytes] | None = None

    def set_caps(self, frame_cap: int, message_cap: int) -> None:
        """Change the caps (raised after authentication)."""
        self.frame_cap = frame_cap
        self.message_cap = message_cap

    @property
    def buffered(self) -> int:
        """Bytes held but not yet returned as messages."""
        return self._hi - self._lo + self._big_fill + self._parts_size

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go; empty only if nothing fits until
        :meth:`messages` has taken what is buffered (stop reading till then)."""
        if self._big is not None:
            if self._big_fill < len(self._big):
                return memoryview(self._big)[self._big_fill:]
            return self._view[0:0]    # complete: messages() takes it first
        if self._hi == len(self._scratch) and self._lo:
            size = self._hi - self._lo
            self._scratch[:size] = self._view[self._lo:self._hi]
            self._lo, self._hi = 0, size
        return self._view[self._hi:]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`."""
        if self._big is not None:
            self._big_fill += nbytes
        else:
            self._hi += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Add received bytes; return the messages they complete (possibly none)."""
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast('B')
        out: list[Message] = []
        while True:
            room = self.get_buffer()
            size = min(len(room), len(view))
            room[:size] = view[:size]
            self.buffer_updated(size)
            view = view[size:]
            out += self.messages()
            if not view:
                return out

    def messages(self, limit: int | None = None) -> list[Message]:
        """The messages completed by what was received so far (at most ``limit``:
        the rest stay unparsed, e.g. until a handshake has raised the caps)."""
        if self._error is not None:
            raise self._error
        try:
            return list(itertools.islice(self._drain(), limit))
        except (ProtocolError, AuthenticationError) as exc:
            self._error = exc
            self._lo = self._hi = 0
            self._big = None
            self._parts.clear()
            raise

    def _drain(self) -> Iterator[Message]:
        if self._big is not None:
            if self._big_fill < len(self._big):
                return
            payload, header, fields = self._big, self._big_header, self._big_fields
            self._big, self._big_header, self._big_fill = None, b'', 0
            msg = self._frame(header, payload, *fields)
            if msg is not None:
                yield msg
        view = self._view
        while self._hi - self._lo >= HEADER_SIZE:
            pos = self._lo
            version, msg_type, flags, length = parse_header(self._scratch, self.frame_cap, pos)
            start = pos + HEADER_SIZE
            have = self._hi - start
            if have < length:
                if length > BIG_FRAME:  # the rest goes straight into its own buffer
                    big = bytearray(length)
                    big[:have] = view[start:self._hi]
                    self._big, self._big_header = big, view[pos:start].tobytes()
                    self._big_fields = (version, msg_type, flags)
                    self._big_fill = have
                    self._lo = self._hi = 0
                break
            self._lo = start + length
            msg = self._frame(view[pos:start].tobytes(), view[start:start + length].tobytes(),
                              version, msg_type, flags)
            if msg is not None:
                yield msg
        if self._lo == self._hi:
            self._lo = self._hi = 0

    def _frame(self, header: bytes, payload: bytes | bytearray, version: int, msg_type: int,
               flags: int) -> Message | None:
        self.peer_version = version
        if self.opener is not None:
            payload = self.opener(header, payload)
        return self._assemble(msg_type, flags, payload)

    def _assemble(self, msg_type: int, flags: int, payload: bytes) -> Message | None:
        if self._parts_type is not None and msg_type != self._parts_type:
            raise ProtocolError(f'message type changed from {self._parts_type} to {msg_type} '
                                'in the middle of a multi-frame message')
        if not self._parts and not flags & FLAG_MORE:
            return Message(msg_type, payload)
        self._parts_size += len(payload)
        if self._parts_size > self.message_cap:
            raise FrameTooLarge(f'message exceeds the cap of {self.message_cap} bytes')
        self._parts.append(payload)
        self._parts_type = msg_type
        if flags & FLAG_MORE:
            return None
        parts = tuple(self._parts)
        self._parts.clear()
        self._parts_size = 0
        self._parts_type = None
        return Message(msg_type, parts=parts)
