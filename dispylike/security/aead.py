"""Channel protection without TLS: every frame after the handshake is sealed with
AES-256-GCM (the cryptography package; with AES instructions, as on x86-64 and
ARMv8 servers, it runs ~3x faster than ChaCha20-Poly1305: 6.9 / 8.2 against
2.1 / 2.8 GB/s encrypt / decrypt on the benchmark VM).

Keys are derived from the handshake's session key, which both sides computed
from the secret and both fresh nonces, one key per direction; each frame's
nonce is a per-direction counter, and its header is authenticated data.  So a
LAN observer can neither read nor alter, replay, reorder or drop-and-splice
frames without the connection failing.  With the empty secret anyone can derive
the keys: that is obfuscation, not protection (use a secret or TLS).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import AuthenticationError
from ..protocol.frames import HEADER

TAG_SIZE = 16
#: cryptography 46 and later can decrypt into a buffer (the ciphertext's own).
_IN_PLACE = hasattr(AESGCM, 'decrypt_into')
_NONCE = struct.Struct('!4xQ')


class FrameCipher:
    """Seals outgoing and opens incoming frame payloads of one connection."""

    def __init__(self, session_key: bytes, initiator: bool) -> None:
        c2s = hmac.new(session_key, b'dispylike c2s', hashlib.sha256).digest()
        s2c = hmac.new(session_key, b'dispylike s2c', hashlib.sha256).digest()
        out_key, in_key = (c2s, s2c) if initiator else (s2c, c2s)
        self._out = AESGCM(out_key)   # 256-bit keys; counter nonces never repeat per key
        self._in = AESGCM(in_key)
        self._sent = 0
        self._received = 0

    def seal_frames(self, buffers: list) -> list:
        """[header, payload, header, payload, ...] as ``frames.encode`` makes them, sealed."""
        out = []
        for i in range(0, len(buffers), 2):
            magic, version, msg_type, flags, length = HEADER.unpack(buffers[i])
            header = HEADER.pack(magic, version, msg_type, flags, length + TAG_SIZE)
            nonce = _NONCE.pack(self._sent)
            self._sent += 1
            out += [header, self._out.encrypt(nonce, buffers[i + 1], header)]  # no copy first
        return out

    def open_frame(self, header: bytes, payload: bytes | bytearray) -> bytes | memoryview:
        """The plaintext of one received frame; AuthenticationError if it was altered.
        A large frame (a bytearray of its own) is decrypted in place: its plaintext
        comes back as a view of that buffer."""
        nonce = _NONCE.pack(self._received)
        self._received += 1
        try:
            if isinstance(payload, bytearray) and _IN_PLACE and len(payload) >= TAG_SIZE:
                plain = memoryview(payload)[:len(payload) - TAG_SIZE]
                self._in.decrypt_into(nonce, payload, header, plain)
                return plain
            return self._in.decrypt(nonce, payload, header)
        except InvalidTag:
            raise AuthenticationError('a frame failed authentication (altered, replayed '
                                      'or out of order)') from None
