"""Messages between the node, a computation process and its job processes.

These are private channels (a socketpair, a Unix socket guarded by a random
token) between dispylike's own processes, but the far end runs user code, so
the node decodes what comes back with the builtins-only unpickler: tuples of
plain values, with user objects kept as opaque bytes.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from ..errors import ProtocolError
from ..protocol.frames import Message, encode
from ..protocol.plain import safe_loads

INTERNAL = 100
#: Largest message on internal channels (results and arguments travel here).
INTERNAL_MESSAGE_CAP = 2 * 1024 * 1024 * 1024 - 1
#: Read size (and stream buffer limit) on internal channels.
READ_LIMIT = 1 << 20

# A job process's pipes carry raw bytes, so the computation process relays them
# without decoding: arguments in as LENGTH + payload; out, a sequence of records
# RECORD (kind, length) + body, then end of file.  A PROVISIONAL record's body is a
# pickled provisional result, relayed at once; the RESULT record's body is
# RESULT_HEADER (status, start time, end time, payload length) + payload.  The
# length tells a complete result from one cut short by a crash.
LENGTH = struct.Struct('!Q')
RECORD = struct.Struct('!BQ')
PROVISIONAL, RESULT, FILE = 1, 2, 3    # FILE body: u16 name length, UTF-8 name, data
#: A RESULT whose payload is in a transfer file (see :mod:`.xfer`): RESULT_HEADER (the
#: length is the file's size), then the file's name (UTF-8).
RESULT_FILE = 4
#: In LENGTH: the arguments are in the transfer file whose path (UTF-8) follows.
BY_FILE = 1 << 63
#: In LENGTH, to a warm worker: a job written ahead, while the worker still runs the one
#: before.  Before running it the worker takes its token from its gate pipe: GO, or SKIP
#: if the computation process took GO back first (the job was cancelled or put back).
#: One byte read by one of two processes decides, so a job runs or it does not.
AHEAD = 1 << 62
GO, SKIP = b'g', b's'
FILE_NAME = struct.Struct('!H')
RESULT_HEADER = struct.Struct('!BddQ')


def result_complete(output: bytes | bytearray) -> bool:
    """True if ``output`` holds a whole result (header and the payload it announces)."""
    if len(output) < RESULT_HEADER.size:
        return False
    return len(output) == RESULT_HEADER.size + RESULT_HEADER.unpack_from(output)[3]


def pack(*fields: Any) -> list:
    """Frame a tuple of plain values; returns buffers for writelines/sendmsg."""
    return encode(INTERNAL, pickle.dumps(fields, protocol=5))


def unpack(msg: Message) -> tuple:
    if msg.type != INTERNAL:
        raise ProtocolError(f'unexpected internal message type {msg.type}')
    value = safe_loads(msg)
    if not isinstance(value, tuple) or not value or not isinstance(value[0], str):
        raise ProtocolError('malformed internal message')
    return value
