"""Hostile inputs for fuzzing live daemons: frames and datagrams, made from a seeded RNG.

Pure functions (no I/O).  Each maker returns bytes or a list of frames; the
names say what a daemon must survive:

* before authentication: random bytes, truncated and bit-flipped handshake
  frames, headers announcing huge frames, application frames carrying a
  *poison pickle* (one that would create :attr:`Poison.path` if anything
  unpickled it), TLS and HTTP openings;
* after authentication: random, mutated, mistyped and poisoned bodies under
  known and unknown message types (:func:`authed_frames`, sealed by the sender);
* datagrams: random, oversized, truncated, mutated, signed with another
  secret, and valid probes (answered only up to the rate caps).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import typing
from typing import Any

from ..protocol import discovery as d
from ..protocol import handshake as hs
from ..protocol import messages as m
from ..protocol.frames import HEADER, MAGIC, PROTOCOL_VERSION, encode_bytes

#: Message types the daemons know, and some they do not.
APP_TYPES = tuple(range(16, 40))


class Poison:
    """Unpickling this creates the directory ``path``: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def poison_pickle(path: str) -> bytes:
    return pickle.dumps(Poison(path), protocol=2)


def mutate(data: bytes, rng: random.Random, flips: int | None = None) -> bytes:
    """Flip, insert, delete or truncate a few bytes."""
    buf = bytearray(data)
    for _ in range(flips if flips is not None else rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(buf) + 1)
        if op < 0.5 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op < 0.9 and buf:
            del buf[pos:pos + rng.randint(1, 8)]
        else:
            del buf[pos:]
    return bytes(buf)


def header(msg_type: int, length: int, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(MAGIC, version, msg_type, flags, length)


def preauth_frames(rng: random.Random, secret: str, poison_path: str) -> tuple[str, list[bytes]]:
    """One unauthenticated attack: (kind, frames to send in order)."""
    hello = hs.ClientHandshake(secret, rng.choice(list(hs.Role))).hello()
    poison = poison_pickle(poison_path)
    kind = rng.choice(('random', 'truncated', 'oversized', 'mutated', 'poison', 'hello_poison',
                       'blind_proof', 'opening'))
    if kind == 'random':
        frames = [rng.randbytes(rng.randint(1, 2048)) for _ in range(rng.randint(1, 3))]
    elif kind == 'truncated':
        frames = [hello[:rng.randrange(len(hello))]]
    elif kind == 'oversized':
        big = rng.choice((1025, 65536, 4 * 1024 * 1024 + 1, 0xFFFFFFFF))
        frames = [header(rng.choice((hs.HELLO, *APP_TYPES)), big) + rng.randbytes(64)]
    elif kind == 'mutated':
        frames = [mutate(hello, rng) for _ in range(rng.randint(1, 3))]
    elif kind == 'poison':      # application frames before any handshake
        frames = [encode_bytes(rng.choice(APP_TYPES), poison) for _ in range(rng.randint(1, 4))]
    elif kind == 'hello_poison':
        frames = [hello] + [encode_bytes(rng.choice(APP_TYPES), poison)
                            for _ in range(rng.randint(1, 3))]
    elif kind == 'blind_proof':  # a PROOF without knowing the challenge, then data
        frames = [hello, encode_bytes(hs.PROOF, rng.randbytes(hs.MAC_SIZE)),
                  encode_bytes(m.NodeInfoRequest.TYPE, poison)]
    else:
        frames = [rng.choice((b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
                              b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + rng.randbytes(64),
                              b'\x00' * 64, b'DLK'))]
    return kind, frames


def _message_classes() -> list[type]:
    return [cls for cls in vars(m).values()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and hasattr(cls, 'TYPE')]


def _value(hint: Any, rng: random.Random) -> Any:
    """A plausible value for a field annotated ``hint`` (a str, int, float...)."""
    kinds = typing.get_args(hint) or (hint,)
    kind = rng.choice([k for k in kinds if k is not type(None)] or [str])
    kind = typing.get_origin(kind) or kind
    makers = {str: lambda: rng.randbytes(rng.randint(0, 12)).hex(), bool: lambda: True,
              int: lambda: rng.randint(0, 99), float: lambda: rng.random() * 10,
              bytes: lambda: rng.randbytes(rng.randint(0, 32)), tuple: tuple}
    return makers.get(kind, lambda: None)()


def valid_message(rng: random.Random) -> Any:
    """A well-formed message of any registered type, with made-up field values (for a
    computation that does not exist: ids are random)."""
    cls = rng.choice(_message_classes())
    hints = typing.get_type_hints(cls)
    return cls(*(_value(hints[f.name], rng) for f in dataclasses.fields(cls)))


def authed_frames(rng: random.Random, poison_path: str) -> tuple[str, list[tuple[int, bytes]]]:
    """One attack from an authenticated peer: (kind, [(type, body)]) to be sealed and sent."""
    kind = rng.choice(('random', 'mutated', 'poison', 'mistyped', 'unknown', 'valid'))
    count = rng.randint(1, 4)
    out: list[tuple[int, bytes]] = []
    for _ in range(count):
        if kind == 'random':
            out.append((rng.choice(APP_TYPES), rng.randbytes(rng.randint(0, 512))))
        elif kind == 'mutated':
            msg_type, body = m.encode_message(valid_message(rng))
            out.append((msg_type, mutate(body, rng)))
        elif kind == 'poison':
            out.append((rng.choice(APP_TYPES), poison_pickle(poison_path)))
        elif kind == 'mistyped':
            values = tuple(rng.choice((None, 1.5, -1, 'x', b'y', (), True, [1], {1: 2}))
                           for _ in range(rng.randint(0, 8)))
            out.append((rng.choice(APP_TYPES), pickle.dumps(values, protocol=5)))
        elif kind == 'unknown':
            out.append((rng.randint(40, 0xFFFF), rng.randbytes(rng.randint(0, 64))))
        else:           # well-formed, for a computation that does not exist (or harmless)
            out.append(m.encode_message(valid_message(rng)))
    return kind, out


def datagram(rng: random.Random, secret: str) -> tuple[str, bytes]:
    """One hostile datagram for a discovery port: (kind, bytes)."""
    probe = d.encode(d.Probe(rng.randbytes(d.NONCE_SIZE)), secret)
    kind = rng.choice(('random', 'oversized', 'truncated', 'mutated', 'other_secret',
                       'valid_probe', 'announce', 'empty'))
    if kind == 'random':
        data = rng.randbytes(rng.randint(1, 1400))
    elif kind == 'oversized':
        data = probe + rng.randbytes(rng.randint(d.MAX_DATAGRAM, 9000))
    elif kind == 'truncated':
        data = probe[:rng.randrange(len(probe))]
    elif kind == 'mutated':
        data = mutate(probe, rng)
    elif kind == 'other_secret':
        data = d.encode(d.Probe(rng.randbytes(d.NONCE_SIZE)), secret + 'x')
    elif kind == 'valid_probe':
        data = probe
    elif kind == 'announce':
        data = d.encode(d.Announce(rng.randbytes(d.NONCE_SIZE), rng.randint(1, 65535), 1, 1,
                                   'fake', '127.0.0.9'), secret)
    else:
        data = b''
    return kind, data
