"""Mutual HMAC challenge-response, sans-IO.  Nothing here unpickles anything.

::

    client                                   server
      | HELLO     version, role, Nc (32 B)  -->|
      |<-- CHALLENGE  Ns (32 B), MACs          |   MACs = HMAC(K, "server" | transcript)
      | PROOF     MACc                     -->|   MACc = HMAC(K, "client" | transcript)
      |<-- WELCOME                             |
    transcript = version | role | Nc | Ns;   K = HMAC-SHA256("dispylike-auth-v1", secret)

Each side proves knowledge of the secret over nonces chosen fresh by the
*other* side, so a captured handshake cannot be replayed, and the client
checks the server before it sends anything else.  Either side may send REJECT
with a short UTF-8 reason before closing; the peer turns it into a clear error.
The empty secret is a secret like any other (it still gates mismatched peers).
Both sides derive :attr:`session_key` for channel protection; with the empty
secret (:attr:`keyed` false) that key is public knowledge, so no channel is
sealed with it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct

from ..errors import AuthenticationError, IncompatiblePeer, ProtocolError
from .frames import PROTOCOL_VERSION, Message, encode_bytes

HELLO, CHALLENGE, PROOF, WELCOME, REJECT = 1, 2, 3, 4, 5
NONCE_SIZE = 32
MAC_SIZE = 32
_HELLO = struct.Struct(f'!BB{NONCE_SIZE}s')
MAX_REASON = 512
SECRET_MISMATCH = 'secret mismatch: the peer could not prove it knows this side\'s secret'


class Role(enum.IntEnum):
    """Who is dialling; bound into the MACs so roles cannot be swapped."""

    CLIENT = 1
    NODE = 2
    SCHEDULER = 3
    RELAY = 4


def derive_key(secret: str | bytes) -> bytes:
    """The authentication key for ``secret`` (what both sides actually use)."""
    raw = secret.encode('utf-8') if isinstance(secret, str) else bytes(secret)
    return hmac.new(b'dispylike-auth-v1', raw, hashlib.sha256).digest()


def reject_frame(reason: str) -> bytes:
    """A REJECT frame carrying ``reason`` (truncated), sent before closing."""
    return encode_bytes(REJECT, reason.encode('utf-8', 'replace')[:MAX_REASON])


def _reason(msg: Message) -> str:
    return bytes(msg.payload[:MAX_REASON]).decode('utf-8', 'replace')


class _Side:
    def __init__(self, secret: str | bytes, nonce: bytes | None) -> None:
        self._key = derive_key(secret)
        #: False for the empty secret: keys derived from it protect nothing (anyone can
        #: derive them from the nonces on the wire), so its channel is not sealed.
        self.keyed = len(secret) > 0
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError('nonce must be 32 bytes')
        self.done = False
        self.session_key: bytes | None = None
        self.role: Role | None = None

    def _mac(self, label: bytes, version: int, role: int, nc: bytes, ns: bytes) -> bytes:
        data = label + bytes((version, role)) + nc + ns
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def _finish(self, nc: bytes, ns: bytes) -> None:
        self.session_key = hmac.new(self._key, b'session' + nc + ns, hashlib.sha256).digest()
        self.done = True

    @staticmethod
    def _raise_reject(msg: Message) -> None:
        reason = _reason(msg)
        if reason.startswith('incompatible peer'):
            raise IncompatiblePeer(f'peer refused the connection: {reason}')
        raise AuthenticationError(f'peer refused the connection: {reason}')


class ClientHandshake(_Side):
    """The dialling side.  Call :meth:`hello`, then feed every message to :meth:`receive`."""

    def __init__(self, secret: str | bytes, role: Role = Role.CLIENT,
                 nonce: bytes | None = None) -> None:
        super().__init__(secret, nonce)
        self.role = role
        self._server_nonce: bytes | None = None

    def hello(self) -> bytes:
        return encode_bytes(HELLO, _HELLO.pack(PROTOCOL_VERSION, int(self.role), self.nonce))

    def receive(self, msg: Message) -> bytes:
        """Process one message from the server; return bytes to send (maybe empty)."""
        if msg.type == REJECT:
            self._raise_reject(msg)
        if self._server_nonce is None:
            if msg.type != CHALLENGE or len(msg.payload) != NONCE_SIZE + MAC_SIZE:
                raise ProtocolError(f'expected CHALLENGE, got type {msg.type}')
            ns, mac = bytes(msg.payload[:NONCE_SIZE]), bytes(msg.payload[NONCE_SIZE:])
            want = self._mac(b'server', PROTOCOL_VERSION, self.role, self.nonce, ns)
            if not hmac.compare_digest(mac, want):
                raise AuthenticationError(SECRET_MISMATCH)
            self._server_nonce = ns
            return encode_bytes(PROOF, self._mac(b'client', PROTOCOL_VERSION, self.role,
                                                 self.nonce, ns))
        if msg.type != WELCOME or msg.payload:
            raise ProtocolError(f'expected WELCOME, got type {msg.type}')
        self._finish(self.nonce, self._server_nonce)
        return b''


class ServerHandshake(_Side):
    """The accepting side.  Feed every message to :meth:`receive` until :attr:`done`."""

    def __init__(self, secret: str | bytes, nonce: bytes | None = None) -> None:
        super().__init__(secret, nonce)
        self._client_nonce: bytes | None = None

    def receive(self, msg: Message) -> bytes:
        if msg.type == REJECT:
            self._raise_reject(msg)
        if self._client_nonce is None:
            if msg.type != HELLO or len(msg.payload) != _HELLO.size:
                raise ProtocolError(f'expected HELLO, got type {msg.type} '
                                    f'({len(msg.payload)} bytes)')
            version, role, nc = _HELLO.unpack(msg.payload)
            if version != PROTOCOL_VERSION:
                raise IncompatiblePeer(f'incompatible peer: protocol version {version}, '
                                       f'this side speaks {PROTOCOL_VERSION}')
            try:
                self.role = Role(role)
            except ValueError:
                raise ProtocolError(f'unknown role {role}') from None
            if nc == self.nonce:
                raise ProtocolError('peer echoed our nonce')
            self._client_nonce = nc
            mac = self._mac(b'server', version, role, nc, self.nonce)
            return encode_bytes(CHALLENGE, self.nonce + mac)
        if msg.type != PROOF or len(msg.payload) != MAC_SIZE:
            raise ProtocolError(f'expected PROOF, got type {msg.type}')
        want = self._mac(b'client', PROTOCOL_VERSION, int(self.role), self._client_nonce,
                         self.nonce)
        if not hmac.compare_digest(bytes(msg.payload), want):
            raise AuthenticationError(SECRET_MISMATCH)
        self._finish(self._client_nonce, self.nonce)
        return encode_bytes(WELCOME)
