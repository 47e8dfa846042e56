"""A job's pickled arguments, kept as the pieces the pickler wrote when they are large.

``cloudpickle.dumps`` copies a 20 MB argument into its output (13 ms and 5,000
page faults here), and the client then copies it again into a socket or a
transfer file.  Pickled to a file object instead, the C pickler hands each bytes
object of 64 KiB or more to ``write`` as the object itself: kept as pieces, the
argument is copied once, where it goes.  Bytes are immutable, so holding the
caller's object is a snapshot as good as a copy; anything else the pickler hands
over whole (a bytearray) is copied, so a later change by the program does not
reach the job.
"""

from __future__ import annotations

from typing import Any

#: Pickles larger than this are kept as pieces (smaller ones are joined: one object).
#: Not below the recover file's KEEP_ARGS_MAX, which keeps smaller ones as bytes.
SPLIT_MIN = 1 << 20


class SplitPayload:
    """A pickle as consecutive pieces (bytes objects); ``len()`` is its size."""

    __slots__ = ('parts', 'size')

    def __init__(self, parts: tuple, size: int) -> None:
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size

    def join(self) -> bytes:
        return b''.join(self.parts)


class _Collector:
    __slots__ = ('parts',)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> None:
        self.parts.append(data if type(data) is bytes else bytes(data))


def dumps_payload(obj: Any, pickler: Any) -> bytes | SplitPayload:
    """Pickle ``obj`` with ``pickler`` (a Pickler class, e.g. cloudpickle's), protocol 5:
    bytes, or a :class:`SplitPayload` if it is larger than SPLIT_MIN."""
    out = _Collector()
    pickler(out, protocol=5).dump(obj)
    parts = out.parts
    size = sum(map(len, parts))
    if size <= SPLIT_MIN or len(parts) == 1:
        return parts[0] if len(parts) == 1 else b''.join(parts)
    return SplitPayload(tuple(parts), size)


def payload_bytes(payload: bytes | SplitPayload) -> bytes:
    """The payload as one bytes object (joined: a copy, for a socket)."""
    return payload.join() if type(payload) is SplitPayload else payload
