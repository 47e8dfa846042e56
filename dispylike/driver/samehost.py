"""A node on the client's own host: large arguments and results through its transfer
directory in memory instead of the socket (see ``execution.xfer``).

The node names the directory and a token in it (ComputationReady); finding that
token there proves the client sees the same directory and may write into it.
Arguments over ``xfer.XFER_MIN`` are then written by the client straight into a
file the job process maps (no copy through the socket, none in the node), and
with LocalResults the node sends a large result as the path of the file the job
wrote; the client maps it and unpickles from the mapping, and the node reuses
(or removes) it once the reply is acknowledged.
"""

from __future__ import annotations

import logging
import mmap
import os

from ..errors import ProtocolError
from ..execution import xfer
from ..protocol.payload import SplitPayload, payload_bytes

log = logging.getLogger('dispylike')


def shared_dir(xfer_dir: str, token: str) -> SharedDir | None:
    """The node's transfer directory if this client shares it, else None (also with
    ``DISPYLIKE_SAMEHOST=0`` in the environment: everything through the socket)."""
    if not xfer_dir or os.environ.get('DISPYLIKE_SAMEHOST', '1') == '0':
        return None
    return SharedDir(xfer_dir) if xfer.reaches(xfer_dir, token) else None


class SharedDir:
    """A node's transfer directory this client shares, and the argument files it
    wrote there: each is written again for later arguments once its job has
    replied (a job process leaves ``cp*`` files in place), up to xfer.SPARE_FILES
    of xfer.SPARE_BYTES kept."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._spare: list[tuple[str, int]] = []                  # (name, size)
        self._busy: dict[tuple[int, int], tuple[str, int]] = {}  # (uid, attempt) -> file
        self._names = 0

    def arguments(self, uid: int, attempt: int, payload: bytes | SplitPayload) -> bytes | str:
        """What a RunJobs entry carries: for large arguments the name of the file they
        were written to, else the bytes."""
        size = len(payload)
        if size < xfer.XFER_MIN:
            return payload_bytes(payload)
        parts = list(payload.parts) if type(payload) is SplitPayload else [payload]
        try:
            if self._spare:
                name = self._spare.pop()[0]
                xfer.overwrite(os.path.join(self.directory, name), parts, size)
            else:
                self._names += 1
                name = f'{xfer.KEPT_ARGUMENTS}{self._names}.in'
                xfer.put(os.path.join(self.directory, name), parts)
        except OSError as exc:   # full, or gone: through the socket then
            log.debug('arguments of job %s not written to %s: %s', uid, self.directory, exc)
            return payload_bytes(payload)
        self._busy[(uid, attempt)] = (name, size)
        return name

    def replied(self, uid: int, attempt: int) -> None:
        """The node replied for this job: its argument file may be written again."""
        entry = self._busy.pop((uid, attempt), None)
        if entry is None:
            return
        held = sum(size for _name, size in self._spare)
        if len(self._spare) < xfer.SPARE_FILES and held + entry[1] <= xfer.SPARE_BYTES:
            self._spare.append(entry)
        else:
            xfer.discard(os.path.join(self.directory, entry[0]))

    def result(self, payload: bytes | str) -> bytes | mmap.mmap:
        """A reply payload as received: bytes, or (a str) the path of the node's file
        holding it, mapped.  ProtocolError if a path is not allowed here."""
        if not isinstance(payload, str):
            return payload
        try:
            return xfer.map_result(self.directory, payload)
        except OSError as exc:
            raise ProtocolError(f'result file {payload!r}: {exc.strerror}') from None


def result(shared: SharedDir | None, payload: bytes | str) -> bytes | mmap.mmap:
    """A reply payload from a node (``shared``: its directory if this client reads
    result files there); ProtocolError for a path from any other node."""
    if shared is not None:
        return shared.result(payload)
    if isinstance(payload, str):
        raise ProtocolError('a result file from a node that does not share its directory')
    return payload
