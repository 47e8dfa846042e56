"""An authenticated, framed, message-level connection over asyncio transports.

``connect()`` dials and runs the client handshake; ``Server`` accepts and runs
the server handshake.  Until the handshake succeeds only small handshake
frames are accepted and nothing is unpickled.  OS and SSL errors become
:mod:`dispylike.errors` in :func:`translate_os_error`, the only place that
does so.  TLS plugs in through the ``ssl`` argument (an ``ssl.SSLContext``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import (
    AuthenticationError,
    ConnectionClosed,
    DispyError,
    HandshakeTimeout,
    ProtocolError,
)
from ..protocol import handshake as hs
from ..protocol.frames import (
    DEFAULT_FRAME_CAP,
    DEFAULT_MESSAGE_CAP,
    HANDSHAKE_CAP,
    HEADER_SIZE,
    FrameDecoder,
    Message,
    encode_parts,
)
from ..protocol.messages import decode_message, encode_message_parts
from ..security import audit
from ..security.aead import TAG_SIZE, FrameCipher
from .stream import FrameStream

log = logging.getLogger('dispylike.transport')

_NOT_TLS_REASONS = ('WRONG_VERSION_NUMBER', 'RECORD_LAYER_FAILURE', 'UNEXPECTED_EOF_WHILE_READING',
                    'HTTP_REQUEST', 'PACKET_LENGTH_TOO_LONG')
#: Accepted connections that have not finished the handshake, at most (more are closed
#: at once, unread) ...
MAX_PENDING_HANDSHAKES = 64
#: ... and at most this many of them from one source address, so that one host cannot
#: use up the whole budget and lock everybody else out.
MAX_PENDING_PER_SOURCE = 16


def translate_os_error(exc: BaseException, peer: str) -> DispyError:
    """Turn an OS/SSL error into the library's error (use with ``raise ... from exc``)."""
    if isinstance(exc, DispyError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return AuthenticationError(f'TLS with {peer} failed: the peer\'s certificate was '
                                   f'refused: {exc.verify_message}')
    if isinstance(exc, ssl.SSLError):
        hint = ''
        if exc.reason in _NOT_TLS_REASONS or 'EOF' in str(exc):
            hint = ' (does the peer use TLS too? give both sides certfile/keyfile)'
        return AuthenticationError(f'TLS with {peer} failed: {exc.reason or exc}{hint}')
    if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
        return ConnectionClosed(f'{peer} closed the connection')
    if isinstance(exc, asyncio.TimeoutError):
        return HandshakeTimeout(f'{peer} did not answer in time')
    if isinstance(exc, OSError):
        return ConnectionClosed(f'connection with {peer} failed: {exc.strerror or exc}')
    return ConnectionClosed(f'connection with {peer} failed: {exc!r}')


class Connection:
    """Send and receive messages with one authenticated peer.

    ``send`` never blocks (it buffers); ``drain`` waits for the buffer to empty.
    ``tx``/``rx`` count message bytes, for statistics.
    """

    def __init__(self, stream: FrameStream, peer: str) -> None:
        self.stream = stream
        self.peer = peer
        self.decoder = stream.decoder
        self.session_key: bytes | None = None
        self.cipher: FrameCipher | None = None   # with a secret and no TLS: sealed frames
        self.role: hs.Role | None = None
        self.tx = 0
        self.rx = 0
        self._closed = False
        _keep_alive(stream.transport.get_extra_info('socket'))

    @property
    def transport(self) -> asyncio.Transport:
        return self.stream.transport

    @property
    def closed(self) -> bool:
        return self._closed

    async def recv_frame(self) -> Message:
        try:
            msg = await self.stream.recv()
        except EOFError:
            raise ConnectionClosed(f'{self.peer} closed the connection') from None
        except (ProtocolError, AuthenticationError):
            raise
        except Exception as exc:
            raise translate_os_error(exc, self.peer) from exc
        self.rx += msg.size + HEADER_SIZE
        return msg

    async def recv(self) -> Any:
        """The next application message (a validated dataclass)."""
        return decode_message(await self.recv_frame())

    def send_raw(self, buffers: list) -> None:
        if self._closed:
            raise ConnectionClosed(f'connection to {self.peer} is closed')
        if self.cipher is not None:
            buffers = self.cipher.seal_frames(buffers)
        self.tx += sum(len(b) for b in buffers)
        self.stream.writelines(buffers)

    def send(self, msg: Any) -> None:
        msg_type, parts = encode_message_parts(msg)
        self.send_raw(encode_parts(msg_type, parts))

    @property
    def unsent(self) -> int:
        """Bytes given to ``send`` that the peer has not taken yet."""
        return 0 if self._closed else self.stream.unsent

    async def drain(self) -> None:
        try:
            await self.stream.drain()
        except Exception as exc:
            raise translate_os_error(exc, self.peer) from exc

    def abort(self) -> None:
        """Close at once, dropping unsent data (idempotent)."""
        if not self._closed:
            self._closed = True
            self.transport.abort()

    async def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.transport.close()
            await asyncio.wait_for(self.stream.wait_closed(), 5)
        except Exception:  # closing a broken connection: nothing left to report
            self.transport.abort()

    def _authenticated(self, side: hs._Side) -> None:
        self.session_key = side.session_key
        self.role = side.role
        if self.stream.has_pending:  # the peer spoke before the handshake was over
            raise ProtocolError('data sent before the handshake completed')
        if self.transport.get_extra_info('ssl_object') is None and side.keyed:
            # sealed with a secret; with TLS, TLS protects; with the empty secret, anyone
            # can derive the keys from the nonces, so sealing would cost CPU and hide nothing
            self.cipher = FrameCipher(side.session_key, isinstance(side, hs.ClientHandshake))
            self.decoder.opener = self.cipher.open_frame
            self.decoder.set_caps(DEFAULT_FRAME_CAP + TAG_SIZE, DEFAULT_MESSAGE_CAP)
        else:
            self.decoder.set_caps(DEFAULT_FRAME_CAP, DEFAULT_MESSAGE_CAP)


#: TCP keepalive on every connection: a peer whose host vanished (power loss, a
#: partition with no traffic) is found dead after about IDLE + INTERVAL * COUNT seconds,
#: so a session cannot stay "connected" forever (pulses are optional).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 15, 5, 4


def _keep_alive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (('TCP_KEEPIDLE', KEEPALIVE_IDLE),
                            ('TCP_KEEPINTVL', KEEPALIVE_INTERVAL),
                            ('TCP_KEEPCNT', KEEPALIVE_COUNT)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass      # not a TCP socket (tests), or an option this OS lacks


def _peer_name(transport: asyncio.BaseTransport) -> str:
    addr = transport.get_extra_info('peername')
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f'{addr[0]}:{addr[1]}'
    return str(addr)


async def _reject_and_close(conn: Connection, reason: str) -> None:
    try:
        conn.stream.write(hs.reject_frame(reason))
        await asyncio.wait_for(conn.stream.drain(), 1)
    except Exception:  # the peer may already be gone; the reason is logged anyway
        pass
    conn.abort()


async def connect(host: str, port: int, secret: str | bytes, *, role: hs.Role = hs.Role.CLIENT,
                  ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,
                  local_addr: tuple[str, int] | None = None) -> Connection:
    """Dial ``host:port`` and authenticate both ways; raise a DispyError on failure."""
    peer = f'{host}:{port}'
    stream = FrameStream(FrameDecoder(HANDSHAKE_CAP, HANDSHAKE_CAP))
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                lambda: stream, host, port, ssl=ssl_context,
                server_hostname=host if ssl_context else None, local_addr=local_addr), timeout)
    except Exception as exc:
        raise translate_os_error(exc, peer) from exc
    conn = Connection(stream, peer)
    side = hs.ClientHandshake(secret, role)
    try:
        await asyncio.wait_for(_client_handshake(conn, side), timeout)
        conn._authenticated(side)
    except (AuthenticationError, ProtocolError) as exc:
        await _reject_and_close(conn, str(exc))
        raise
    except Exception as exc:
        conn.abort()
        error = translate_os_error(exc, peer)
        if ssl_context is not None and isinstance(error, ConnectionClosed):
            # with TLS 1.3 the daemon checks our certificate after our side of the TLS
            # handshake is done: its refusal arrives as a closed connection
            error = ConnectionClosed(f'{error} right after TLS: it may have refused this '
                                     'side\'s certificate (expired, or not signed by its '
                                     'cafile); its log says why')
        raise error from exc
    return conn


async def _client_handshake(conn: Connection, side: hs.ClientHandshake) -> None:
    conn.stream.write(side.hello())
    while not side.done:
        out = side.receive(await conn.recv_frame())
        if out:
            conn.stream.write(out)


Handler = Callable[[Connection], Awaitable[None]]


class Server:
    """Accept connections, authenticate them, hand each to ``handler``.

    A failed handshake is logged with the peer and reason and the peer gets a
    REJECT; errors escaping a handler are logged and close only that connection.
    Connections in the handshake are capped overall (``max_pending``) and per
    source address (``max_pending_per_source``); each has ``handshake_timeout``
    seconds to complete it (TLS included).
    """

    def __init__(self, secret: str | bytes, handler: Handler, *,
                 ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 10.0,
                 name: str = 'server', max_pending: int = MAX_PENDING_HANDSHAKES,
                 max_pending_per_source: int = MAX_PENDING_PER_SOURCE) -> None:
        self.secret = secret
        self.handler = handler
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.name = name
        self.max_pending = max_pending
        self.max_pending_per_source = max_pending_per_source
        self.refused = 0      # connections closed unread because of the caps
        self._servers: list[asyncio.base_events.Server] = []
        self._pending = 0
        self._pending_from: dict[str, int] = {}
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    async def listen(self, host: str, port: int) -> int:
        """Start listening; return the bound port (useful with port 0)."""
        # TLS is started by _on_accept itself (loop.start_tls), so a failed TLS handshake
        # is ours to log (asyncio's own server-side TLS logs failures only in debug
        # mode); nothing is read before, since a byte read before would be lost to TLS
        loop = asyncio.get_running_loop()
        tls = self.ssl_context is not None

        def factory() -> FrameStream:
            return FrameStream(FrameDecoder(HANDSHAKE_CAP, HANDSHAKE_CAP),
                               on_connect=self._accepted, paused=tls)

        server = await loop.create_server(factory, host, port, reuse_address=True)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    def _accepted(self, stream: FrameStream) -> None:
        task = asyncio.get_running_loop().create_task(self._on_accept(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _admit(self, transport: asyncio.BaseTransport, peer: str) -> str | None:
        """The source address if this connection may start a handshake, else None."""
        addr = transport.get_extra_info('peername')
        source = str(addr[0]) if isinstance(addr, tuple) and addr else peer
        if self._pending >= self.max_pending:
            why = 'too many connections in handshake'
        elif self._pending_from.get(source, 0) >= self.max_pending_per_source:
            why = f'too many connections in handshake from {source}'
        else:
            self._pending += 1
            self._pending_from[source] = self._pending_from.get(source, 0) + 1
            return source
        self.refused += 1
        if self.refused <= 5 or self.refused % 1000 == 0:  # a flood must not flood the log
            log.warning('%s: refusing %s: %s (%d refused so far)', self.name, peer, why,
                        self.refused)
        transport.abort()
        return None

    def _release(self, source: str) -> None:
        self._pending -= 1
        left = self._pending_from[source] - 1
        if left:
            self._pending_from[source] = left
        else:
            del self._pending_from[source]

    async def _on_accept(self, stream: FrameStream) -> None:
        peer = _peer_name(stream.transport)
        source = self._admit(stream.transport, peer)
        if source is None:
            return
        state = audit.peer_accepted(peer)    # this task's context: see security.audit
        conn = Connection(stream, peer)
        try:
            if self.ssl_context is not None and not await self._start_tls(conn):
                return
            await asyncio.wait_for(self._handshake(conn), self.handshake_timeout)
        except (AuthenticationError, ProtocolError) as exc:
            log.warning('%s: rejected %s: %s', self.name, peer, exc)
            await _reject_and_close(conn, str(exc))
            return
        except asyncio.TimeoutError:
            log.warning('%s: dropped %s: no handshake within %ss', self.name, peer,
                        self.handshake_timeout)
            conn.abort()
            return
        except Exception as exc:
            log.info('%s: handshake with %s failed: %s', self.name, peer,
                     translate_os_error(exc, peer))
            conn.abort()
            return
        finally:
            self._release(source)
        audit.peer_authenticated(state)
        self.connections.add(conn)
        try:
            await self.handler(conn)
        except ConnectionClosed as exc:
            log.debug('%s: %s', self.name, exc)
        except (ProtocolError, AuthenticationError) as exc:   # bad data, or altered frames
            log.warning('%s: closing %s: %s', self.name, peer, exc)
        except Exception:
            log.exception('%s: handler for %s failed', self.name, peer)
        finally:
            self.connections.discard(conn)
            await conn.close()

    async def _start_tls(self, conn: Connection) -> bool:
        """TLS before anything else; log why it failed (and close) or return True."""
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(conn.transport, conn.stream, self.ssl_context, server_side=True),
                self.handshake_timeout)
            conn.stream.use_transport(transport)
            return True
        except asyncio.TimeoutError:
            why = f'no TLS handshake within {self.handshake_timeout}s'
        except ssl.SSLError as exc:
            why = str(translate_os_error(exc, conn.peer))
        except (OSError, EOFError):
            why = ('the peer left during the TLS handshake (does it refuse this side\'s '
                   'certificate?)')
        log.warning('%s: rejected %s: %s', self.name, conn.peer, why)
        conn.abort()
        return False

    async def _handshake(self, conn: Connection) -> None:
        side = hs.ServerHandshake(self.secret)
        while not side.done:
            out = side.receive(await conn.recv_frame())
            conn.stream.write(out)
        conn._authenticated(side)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()
