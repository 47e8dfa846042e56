"""A client's session on a daemon: replies kept until acknowledged, sent only as fast as
the client reads (no sockets: a fake connection)."""

import asyncio

from dispylike.protocol import messages as m
from dispylike.transport.session import REPLY_HOLD, SEND_BUFFER_CAP, ClientSession


class FakeConnection:
    def __init__(self):
        self.peer = 'fake'
        self.closed = False
        self.unsent = 0
        self.sent = []
        self.drained = asyncio.Event()

    def send(self, msg):
        self.sent.append(msg)
        self.unsent += sum(len(r[5]) for r in getattr(msg, 'replies', ()))

    async def drain(self):
        await self.drained.wait()
        self.unsent = 0


def open_session(tmp_path):
    conn = FakeConnection()
    return conn, ClientSession(conn, str(tmp_path / 'spill'))


def reply(uid, size=10):
    return (uid, 1, 11, 0.0, 1.0, b'x' * size)


def sent_uids(conn):
    return [r[0] for msg in conn.sent if isinstance(msg, m.JobReplies) for r in msg.replies]


def test_a_client_that_stops_reading_gets_no_more_until_it_drains(tmp_path):
    async def run():
        conn, session = open_session(tmp_path)
        session.reply(reply(1, SEND_BUFFER_CAP))           # fills the client's buffer
        await asyncio.sleep(0)
        for uid in range(2, 6):
            session.reply(reply(uid))
        await asyncio.sleep(0)
        assert sent_uids(conn) == [1]                       # the rest wait, kept
        assert len(session.retained) == 5
        session.ack(((2, 1),))                              # acknowledged while waiting
        conn.drained.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert sent_uids(conn) == [1, 3, 4, 5]
    asyncio.run(run())


def test_attach_resends_every_kept_reply_once(tmp_path):
    async def run():
        first, session = open_session(tmp_path)
        for uid in range(1, 4):
            session.reply(reply(uid))
        session.detach()
        await asyncio.sleep(0)
        assert sent_uids(first) == []
        again = FakeConnection()
        session.attach(again)
        await asyncio.sleep(0)
        assert sent_uids(again) == [1, 2, 3]
    asyncio.run(run())


def test_a_held_reply_waits_for_others_and_goes_with_the_next_unheld_one(tmp_path):
    async def run():
        conn, session = open_session(tmp_path)
        session.reply(reply(1), hold=True)
        session.reply(reply(2), hold=True)
        await asyncio.sleep(0)
        assert conn.sent == []                              # held: no message yet
        await asyncio.sleep(REPLY_HOLD * 20)
        assert [sent_uids(conn)] == [[1, 2]] and len(conn.sent) == 1   # one message
        session.reply(reply(3), hold=True)
        session.reply(reply(4))                             # takes the held one along
        await asyncio.sleep(0)
        assert sent_uids(conn) == [1, 2, 3, 4] and len(conn.sent) == 2
        assert session._held is None                        # the hold's timer was dropped
        session.reply(reply(5), hold=True)                  # a new hold after that one
        await asyncio.sleep(REPLY_HOLD * 20)
        assert sent_uids(conn) == [1, 2, 3, 4, 5] and len(conn.sent) == 3
    asyncio.run(run())


def test_a_held_reply_goes_before_any_later_message_and_not_after_detach(tmp_path):
    async def run():
        conn, session = open_session(tmp_path)
        session.reply(reply(1), hold=True)
        session.send(m.Heartbeat())                         # nothing overtakes a reply
        assert [type(msg).__name__ for msg in conn.sent] == ['JobReplies', 'Heartbeat']
        session.reply(reply(2), hold=True)
        session.detach()                                    # kept for the next attach
        assert session._held is None
        await asyncio.sleep(REPLY_HOLD * 20)
        assert sent_uids(conn) == [1]
        again = FakeConnection()
        session.attach(again)
        assert sent_uids(again) == [1, 2]                   # neither acknowledged yet
    asyncio.run(run())
