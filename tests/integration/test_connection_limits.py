"""Before authentication: caps on pending handshakes (overall and per source address),
silent and trickling peers dropped, a captured handshake replayed in vain."""

import asyncio
import socket
import time

import pytest

from dispylike.errors import AuthenticationError
from dispylike.protocol import handshake as hs
from dispylike.protocol import messages as m
from dispylike.protocol.frames import FrameDecoder
from dispylike.testing import NodeProcess
from dispylike.transport.connection import Server, connect

SECRET = 'limits'


async def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'condition not reached'
        await asyncio.sleep(0.02)


async def _closed_by_peer(reader, timeout=20.0) -> bool:
    """True once the peer closed (EOF or reset), after reading whatever it sent."""
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except ConnectionResetError:
        pass
    return True


async def _serve(conn):
    while True:
        msg = await conn.recv()
        if isinstance(msg, m.NodeInfoRequest):
            conn.send(m.NodeInfo('srv', '127.0.0.1', 1, 1, 1, 'p', 1, 'v', '',
                                 (0.0, 0, 0, 0.0)))


async def _open_from(source, port):
    return await asyncio.open_connection('127.0.0.1', port, local_addr=(source, 0))


def test_pending_handshakes_are_capped_per_source_and_overall():
    async def main():
        server = Server(SECRET, _serve, handshake_timeout=60, max_pending=6,
                        max_pending_per_source=3)
        port = await server.listen('127.0.0.1', 0)
        held = []
        try:
            for _ in range(3):                           # one host fills its share ...
                held.append(await _open_from('127.0.0.2', port))
            await _until(lambda: server._pending == 3)
            reader, writer = await _open_from('127.0.0.2', port)
            assert await _closed_by_peer(reader)         # ... and no more
            writer.close()
            assert server.refused == 1
            conn = await connect('127.0.0.1', port, SECRET, local_addr=('127.0.0.1', 0))
            conn.send(m.NodeInfoRequest(''))               # others still get in
            assert isinstance(await conn.recv(), m.NodeInfo)
            conn.abort()
            for _ in range(3):
                held.append(await _open_from('127.0.0.3', port))
            await _until(lambda: server._pending == 6)
            reader, writer = await _open_from('127.0.0.4', port)
            assert await _closed_by_peer(reader)         # the overall cap
            writer.close()
            assert server.refused == 2
            held.pop(0)[1].close()                       # one leaves: room for one more
            await _until(lambda: server._pending == 5)
            held.append(await _open_from('127.0.0.2', port))
            await _until(lambda: server._pending == 6)
            assert server._pending_from == {'127.0.0.2': 3, '127.0.0.3': 3}
        finally:
            for _, writer in held:
                writer.close()
            await server.close()
        await _until(lambda: server._pending == 0 and not server._pending_from)
    asyncio.run(main())


@pytest.mark.parametrize('how', ['silent', 'trickle'])
def test_a_peer_that_does_not_finish_the_handshake_is_dropped(how):
    hello = hs.ClientHandshake(SECRET).hello()

    async def main():
        server = Server(SECRET, _serve, handshake_timeout=0.5)
        port = await server.listen('127.0.0.1', 0)
        try:
            reader, writer = await asyncio.open_connection('127.0.0.1', port)
            if how == 'trickle':                          # a byte at a time, never done
                for byte in hello[:20]:
                    if reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.1)
            assert await _closed_by_peer(reader)
            writer.close()
            await _until(lambda: server._pending == 0)
        finally:
            await server.close()
    asyncio.run(main())


def test_live_node_drops_a_silent_connection():
    with NodeProcess(cpus=1, extra=['--msg_timeout', '1']) as node:
        with socket.create_connection(node.address, timeout=30) as sock:
            assert sock.recv(100) == b''                 # closed by the node, unanswered
        assert 'no handshake within 1.0s' in node.log() and node.alive()


class _Recorder:
    """A loopback TCP relay that records what the client sends."""

    def __init__(self, target):
        self.target = target
        self.sent = bytearray()
        self.done = asyncio.Event()

    async def start(self):
        self.server = await asyncio.start_server(self._relay, '127.0.0.1', 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, c_reader, c_writer):
        s_reader, s_writer = await asyncio.open_connection(*self.target)

        async def pump(reader, writer, record):
            try:
                while data := await reader.read(65536):
                    if record:
                        self.sent += data
                    writer.write(data)
            finally:
                writer.close()
        await asyncio.gather(pump(c_reader, s_writer, True), pump(s_reader, c_writer, False),
                             return_exceptions=True)
        for writer in (c_writer, s_writer):
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
        self.done.set()


def test_captured_session_replayed_to_a_live_node_is_refused():
    async def main(node):
        recorder = _Recorder(node.address)
        port = await recorder.start()
        conn = await connect('127.0.0.1', port, SECRET)  # a real client, recorded
        conn.send(m.NodeInfoRequest(''))
        assert isinstance(await conn.recv(), m.NodeInfo)
        await conn.close()
        await asyncio.wait_for(recorder.done.wait(), 20)
        recorder.server.close()
        await recorder.server.wait_closed()
        capture = bytes(recorder.sent)
        assert len(capture) > 100                        # HELLO, PROOF and a sealed request
        reader, writer = await asyncio.open_connection(*node.address)
        writer.write(capture)                            # the attacker replays it all
        answer = bytearray()
        try:
            while data := await asyncio.wait_for(reader.read(4096), 20):
                answer += data
        except ConnectionResetError:
            pass
        writer.close()
        msgs = FrameDecoder().feed(bytes(answer))
        assert [msg.type for msg in msgs] == [hs.CHALLENGE, hs.REJECT]  # fresh nonce, then no
        with pytest.raises(AuthenticationError, match='secret mismatch'):
            hs.ClientHandshake(SECRET)._raise_reject(msgs[1])

    with NodeProcess(cpus=1, secret=SECRET) as node:
        asyncio.run(main(node))
        assert 'rejected' in node.log() and 'secret mismatch' in node.log()
        assert node.log().count('rejected') == 1 and node.alive()


@pytest.mark.parametrize('secret', ['', SECRET])
def test_frames_are_sealed_with_a_secret_and_plain_with_the_empty_one(secret):
    """A secret seals every frame after the handshake (an observer sees no payload byte);
    the empty secret's keys are public knowledge, so its frames go unsealed."""
    marker = 'observer-can-read-this'

    async def main():
        server = Server(secret, _serve)
        recorder = _Recorder(('127.0.0.1', await server.listen('127.0.0.1', 0)))
        port = await recorder.start()
        try:
            conn = await connect('127.0.0.1', port, secret)
            assert (conn.cipher is not None) == bool(secret)
            conn.send(m.NodeInfoRequest(marker))
            assert isinstance(await conn.recv(), m.NodeInfo)
            await conn.close()
            await asyncio.wait_for(recorder.done.wait(), 20)
        finally:
            recorder.server.close()
            await recorder.server.wait_closed()
            await server.close()
        return bytes(recorder.sent)

    capture = asyncio.run(main())
    assert (marker.encode() in capture) == (secret == '')
