"""Discovery datagrams, sans-IO: no pickle, fixed layouts, authenticated with the secret.

::

    +--------+---------+------+------------------+-----------------------+
    | 'DLKU' | version | kind | body (by kind)   | HMAC-SHA256[:16]      |
    |  4 B   |   u8    |  u8  |                  | over everything before|
    +--------+---------+------+------------------+-----------------------+

    PROBE     nonce (16 B)                         client -> nodes (broadcast, multicast,
                                                   unicast); nodes answer the sender
    ANNOUNCE  nonce (16 B), tcp port u16, cpus u16, incarnation u64,
              name (u8 length + UTF-8), address (u8 length + ASCII)
                                                   node -> client (answer, or at start-up)

A datagram whose MAC does not verify (another secret, corruption, forgery) is
refused before any field is read; anything malformed raises ProtocolError.
A replayed ANNOUNCE can at most make a client dial the node over TCP, where
the challenge-response handshake decides.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from ..errors import AuthenticationError, ProtocolError
from .handshake import derive_key

MAGIC = b'DLKU'
VERSION = 1
PROBE, ANNOUNCE = 1, 2
NONCE_SIZE = 16
MAC_SIZE = 16
#: Largest datagram sent or accepted.
MAX_DATAGRAM = 512
_HEAD = struct.Struct('!4sBB')
_ANNOUNCE = struct.Struct(f'!{NONCE_SIZE}sHHQ')


@dataclass(frozen=True, slots=True)
class Probe:
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Announce:
    nonce: bytes
    port: int
    cpus: int
    incarnation: int
    name: str
    ip_addr: str


#: The key of a secret, computed once (every datagram is checked with it).
_key = functools.lru_cache(maxsize=8)(derive_key)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, b'udp' + data, hashlib.sha256).digest()[:MAC_SIZE]


def _short(text: str, encoding: str) -> bytes:
    raw = text.encode(encoding)[:255]
    return bytes((len(raw),)) + raw


def encode(msg: Probe | Announce, secret: str | bytes) -> bytes:
    if isinstance(msg, Probe):
        body = _HEAD.pack(MAGIC, VERSION, PROBE) + msg.nonce
    else:
        body = (_HEAD.pack(MAGIC, VERSION, ANNOUNCE)
                + _ANNOUNCE.pack(msg.nonce, msg.port, min(msg.cpus, 0xFFFF), msg.incarnation)
                + _short(msg.name, 'utf-8') + _short(msg.ip_addr, 'ascii'))
    data = body + _mac(_key(secret), body)
    if len(data) > MAX_DATAGRAM:
        raise ValueError('datagram too large')
    return data


def decode(data: bytes, secret: str | bytes) -> Probe | Announce:
    """Verify and parse one datagram.  ProtocolError / AuthenticationError otherwise."""
    if len(data) > MAX_DATAGRAM or len(data) < _HEAD.size + MAC_SIZE:
        raise ProtocolError(f'datagram of {len(data)} bytes refused')
    magic, version, kind = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError('not a dispylike datagram')
    if version != VERSION:
        raise ProtocolError(f'datagram version {version}, this side speaks {VERSION}')
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(_key(secret), body)):
        raise AuthenticationError('datagram not signed with this secret')
    rest = body[_HEAD.size:]
    if kind == PROBE and len(rest) == NONCE_SIZE:
        return Probe(rest)
    if kind == ANNOUNCE and len(rest) >= _ANNOUNCE.size + 2:
        nonce, port, cpus, incarnation = _ANNOUNCE.unpack_from(rest)
        pos = _ANNOUNCE.size
        name, pos = _read_short(rest, pos, 'utf-8')
        ip_addr, pos = _read_short(rest, pos, 'ascii')
        if pos != len(rest) or not port:
            raise ProtocolError('malformed ANNOUNCE')
        try:
            ipaddress.ip_address(ip_addr)
        except ValueError:
            raise ProtocolError(f'ANNOUNCE with a bad address {ip_addr!r}') from None
        return Announce(nonce, port, cpus, incarnation, name, ip_addr)
    raise ProtocolError(f'unknown or malformed datagram kind {kind}')


def _read_short(data: bytes, pos: int, encoding: str) -> tuple[str, int]:
    if pos >= len(data) or pos + 1 + data[pos] > len(data):
        raise ProtocolError('truncated string in datagram')
    end = pos + 1 + data[pos]
    try:
        return data[pos + 1:end].decode(encoding), end
    except UnicodeDecodeError:
        raise ProtocolError('undecodable string in datagram') from None
