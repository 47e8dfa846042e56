"""Plain-data pickles: the decoder of control messages (builtin containers and
scalars only) and a pickler's output kept as pieces.

Kept apart from :mod:`.messages` (the message dataclasses) because the
computation process needs only these: every module it imports is copied into
each job process it forks (issue 8)."""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..errors import ProtocolError
from .frames import Message


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise ProtocolError(f'control message refers to {module}.{name}; only builtins allowed')


class _PartsReader:
    """A read-only file over consecutive buffers (the frames of one message): the
    unpickler fills a large bytes field straight from them with ``readinto``,
    one copy instead of joining the frames first and copying again."""

    __slots__ = ('_parts', '_index', '_pos')

    def __init__(self, parts: tuple) -> None:
        self._parts = [memoryview(part).cast('B') for part in parts]
        self._index = 0
        self._pos = 0

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast('B')
        filled = 0
        while filled < len(view) and self._index < len(self._parts):
            part = self._parts[self._index]
            take = min(len(view) - filled, len(part) - self._pos)
            view[filled:filled + take] = part[self._pos:self._pos + take]
            filled += take
            self._pos += take
            if self._pos == len(part):
                self._index += 1
                self._pos = 0
        return filled

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = sum(len(part) for part in self._parts[self._index:]) - self._pos
        buf = bytearray(size)
        return bytes(buf[:self.readinto(buf)])

    def readline(self) -> bytes:
        line = bytearray()
        while self._index < len(self._parts):
            part = self._parts[self._index]
            chunk = part[self._pos:self._pos + 4096]   # (text opcodes: never ours)
            end = bytes(chunk).find(b'\n')
            take = len(chunk) if end < 0 else end + 1
            line += chunk[:take]
            self._pos += take
            if self._pos == len(part):
                self._index += 1
                self._pos = 0
            if end >= 0:
                break
        return bytes(line)


def safe_loads(data: bytes | memoryview | Message) -> Any:
    """Unpickle plain data only (no classes, no functions, no reducers).  Given a
    :class:`Message`, its frames are read in place."""
    if isinstance(data, Message):
        data = data.payload if not data.parts else data.parts
    try:
        source = _PartsReader(data) if isinstance(data, tuple) else io.BytesIO(data)
        return _BuiltinsOnly(source).load()
    except ProtocolError:
        raise
    except Exception as exc:  # any malformed pickle: many exception types are possible
        raise ProtocolError(f'malformed message body: {exc!r}') from exc


class Pieces:
    """A pickler's output as the pieces it wrote.  The C pickler hands a bytes field
    of 64 KiB or more to ``write`` as the object itself, between the pieces of its
    own buffer, so a large argument or result is never copied into the body."""

    __slots__ = ('parts',)

    def __init__(self) -> None:
        self.parts: list = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)
