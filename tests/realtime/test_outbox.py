"""One sender task per process: every socket gets its frames, in order."""

from __future__ import annotations

import asyncio

from conversations.realtime.outbox import Outbox


class FakeSocket:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail

    async def send(self, message: dict) -> None:
        assert message["type"] == "websocket.send"
        if self.fail:
            raise RuntimeError("gone")
        self.sent.append(message["text"])


async def test_frames_reach_each_socket_in_the_order_given():
    outbox = Outbox()
    a, b = FakeSocket(), FakeSocket()
    for i in range(50):
        outbox.put(a.send, f"a{i}")
        if i % 3 == 0:
            outbox.put(b.send, f"b{i}")
    await asyncio.sleep(0)
    assert a.sent == [f"a{i}" for i in range(50)]
    assert b.sent == [f"b{i}" for i in range(0, 50, 3)]
    # Later frames wake the same task again.
    outbox.put(b.send, "late")
    await asyncio.sleep(0)
    assert b.sent[-1] == "late"


async def test_a_failing_socket_does_not_hold_up_the_others():
    outbox = Outbox()
    broken, fine = FakeSocket(fail=True), FakeSocket()
    outbox.put(broken.send, "x")
    outbox.put(fine.send, "y")
    outbox.put(broken.send, "z")
    outbox.put(fine.send, "w")
    await asyncio.sleep(0)
    assert fine.sent == ["y", "w"]


def test_a_new_event_loop_starts_afresh():
    outbox = Outbox()
    first, second = FakeSocket(), FakeSocket()

    async def send_one(socket: FakeSocket, text: str) -> None:
        outbox.put(socket.send, text)
        await asyncio.sleep(0)

    asyncio.run(send_one(first, "one"))
    asyncio.run(send_one(second, "two"))
    assert first.sent == ["one"] and second.sent == ["two"]
