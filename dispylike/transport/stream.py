"""A framed byte stream on an asyncio transport: frames are received with
``recv_into`` straight into the decoder's buffers (:class:`FrameDecoder`).

Compared with ``StreamReader`` this saves, per read, a fresh receive buffer (one
of 256 KiB comes from ``mmap`` and goes back with ``munmap``) and two copies of
the data; a large frame's payload is received into a buffer of its own.

Two ways to take messages:

* pull: ``await recv()`` (the decoder parses only when asked, so a handshake can
  change the decoder's caps and opener before it parses what follows);
* push: ``on_message`` set, every message is handed to it as it completes.

Writes go to the transport; :meth:`drain` waits while the transport's buffer is
over its high-water mark.  Errors of the peer or the OS surface as the
exceptions asyncio raises (``ConnectionResetError``, ``EOFError`` at the end of
the stream); :mod:`.connection` translates them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..protocol.frames import FrameDecoder, Message

#: Writes below this size are joined into one buffer (one send).
SMALL_WRITE = 64 * 1024
#: Larger writes reach the transport in pieces of this size, each once the transport's
#: buffer is empty: the socket then takes a piece as it is, where a whole message
#: handed over at once would mostly be copied into the transport's buffer first.
WRITE_PIECE = 256 * 1024


class FrameStream(asyncio.BufferedProtocol):
    """Protocol for one connection.  ``on_connect(stream)`` runs when the transport is
    there (servers start their per-connection work from it); ``paused``: start with
    reading paused (TLS is started on the transport first)."""

    def __init__(self, decoder: FrameDecoder,
                 on_message: Callable[[Message], None] | None = None,
                 on_lost: Callable[[BaseException | None], None] | None = None,
                 on_connect: Callable[[FrameStream], None] | None = None,
                 paused: bool = False) -> None:
        self.decoder = decoder
        self.on_message = on_message
        self.on_lost = on_lost
        self._on_connect = on_connect
        self._start_paused = paused
        self.transport: asyncio.Transport | None = None
        self._pending: deque[Message] = deque()
        self._waiter: asyncio.Future | None = None
        self._end: BaseException | None = None     # why no more data will come
        self._reading_paused = False
        self._writing_paused = False
        self._drainers: list[asyncio.Future] = []
        self._out: deque[memoryview] = deque()   # large writes not given to the transport
        self._out_bytes = 0
        self._over_ssl = False
        self._lost_fut: asyncio.Future | None = None
        #: The loop, kept: on Python < 3.12 every asyncio.get_running_loop() is a
        #: getpid() system call (~3 per job on a node, strace)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- asyncio protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_PIECE, 0)   # resume_writing once empty
        self._loop = asyncio.get_running_loop()
        self._lost_fut = self._loop.create_future()
        if self._start_paused:
            transport.pause_reading()
        if self._on_connect is not None:
            self._on_connect(self)

    def use_transport(self, transport: asyncio.Transport) -> None:
        """TLS was started: write and close through ``transport`` from now on."""
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_PIECE, 0)
        self._over_ssl = True

    def get_buffer(self, sizehint: int) -> memoryview:
        room = self.decoder.get_buffer()
        if not room:    # only a finished large frame can fill it: move it out first
            self._parse()
            room = self.decoder.get_buffer()
        return room

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        if self.on_message is not None:
            try:
                self._parse()
                while self._pending and self.on_message is not None:
                    self.on_message(self._pending.popleft())
            except Exception as exc:  # a protocol error of the peer: the stream ends
                self._lost(exc)
                if self.transport is not None:
                    self.transport.abort()
            return
        if not len(self.decoder.get_buffer()) and not self._reading_paused:
            self._reading_paused = True   # recv() parses, then reading resumes
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._lost(EOFError('end of stream'))
        return not self._over_ssl   # keep writing after a half-close, as StreamReader does

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        self._out_bytes = 0
        self._lost(exc or EOFError('connection closed'))
        if self._lost_fut is not None and not self._lost_fut.done():
            self._lost_fut.set_result(None)
        for fut in self._drainers:
            if not fut.done():
                fut.set_exception(ConnectionResetError('connection lost'))
        self._drainers.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._feed()
        if self._writing_paused or self._out:
            return
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    # --- reading --------------------------------------------------------------------
    def _parse(self, limit: int | None = None) -> None:
        self._pending.extend(self.decoder.messages(limit))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _lost(self, exc: BaseException | None) -> None:
        if self._end is None:
            self._end = exc or EOFError('end of stream')
            self._wake()
            if self.on_lost is not None:
                self.on_lost(exc)

    async def recv(self) -> Message:
        """The next message (pull mode); raises what ended the stream once the
        messages received before the end have been taken."""
        while True:
            if self._pending:
                return self._pending.popleft()
            self._parse(1)   # one at a time: what follows may need other caps
            if self._reading_paused and len(self.decoder.get_buffer()):
                self._reading_paused = False
                self.transport.resume_reading()
            if self._pending:
                return self._pending.popleft()
            if self._end is not None:
                raise self._end
            self._waiter = (self._loop or asyncio.get_running_loop()).create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet taken as messages (parsed or not)."""
        return self.decoder.buffered

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    async def wait_closed(self) -> None:
        """Until the transport has closed."""
        if self._lost_fut is not None:
            await asyncio.shield(self._lost_fut)

    # --- writing --------------------------------------------------------------------
    def writelines(self, buffers: list) -> None:
        """Small messages go out joined (one system call); large ones piece by piece
        (WRITE_PIECE): joining them, or handing them over whole, would copy them."""
        size = sum(len(b) for b in buffers)
        if size < SMALL_WRITE and not self._out:
            self.transport.writelines(buffers)
            return
        for buf in buffers:
            if len(buf):
                self._out.append(memoryview(buf).cast('B'))
        self._out_bytes += size
        self._feed()

    def write(self, data: bytes) -> None:
        if self._out:
            self.writelines([data])
        else:
            self.transport.write(data)

    @property
    def unsent(self) -> int:
        """Bytes written that the socket has not taken yet."""
        return self.transport.get_write_buffer_size() + self._out_bytes

    def _feed(self) -> None:
        transport = self.transport
        while self._out and not self._writing_paused:
            if transport is None or transport.is_closing():
                self._out.clear()
                self._out_bytes = 0
                return
            view = self._out[0]
            if len(view) > WRITE_PIECE:
                piece, self._out[0] = view[:WRITE_PIECE], view[WRITE_PIECE:]
            else:
                piece = self._out.popleft()
            self._out_bytes -= len(piece)
            transport.write(piece)   # may call pause_writing: the rest waits for resume

    async def drain(self) -> None:
        if self.transport is None or self.transport.is_closing():
            await asyncio.sleep(0)    # let connection_lost run, as StreamWriter does
            raise ConnectionResetError('connection lost')
        if not self._writing_paused and not self._out:
            return
        fut = (self._loop or asyncio.get_running_loop()).create_future()
        self._drainers.append(fut)
        await fut
