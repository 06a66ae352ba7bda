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


class SlowSocket:
    """A socket whose ``send`` waits until the test lets it through."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send(self, message: dict) -> None:
        await self.gate.wait()
        self.sent.append(message["text"])


async def test_flush_with_nothing_queued_returns_at_once():
    outbox = Outbox()
    await asyncio.wait_for(outbox.flush(), 1)  # nothing was ever queued
    socket = FakeSocket()
    outbox.put(socket.send, "x")
    await asyncio.wait_for(outbox.flush(), 1)
    assert socket.sent == ["x"]
    await asyncio.wait_for(outbox.flush(), 1)  # everything already left


async def test_flush_waits_until_every_queued_frame_was_sent():
    outbox = Outbox()
    slow, fine = SlowSocket(), FakeSocket()
    outbox.put(fine.send, "a")
    outbox.put(slow.send, "b")  # holds up the queue behind it
    outbox.put(fine.send, "c")
    flushed = outbox.flush()
    done, _ = await asyncio.wait({flushed}, timeout=0.1)
    assert not done  # "b" is still on its way, and "c" behind it
    assert fine.sent == ["a"]
    slow.gate.set()
    await asyncio.wait_for(flushed, 1)
    assert slow.sent == ["b"] and fine.sent == ["a", "c"]


async def test_frames_queued_after_a_flush_do_not_hold_it_up():
    outbox = Outbox()
    first, later = FakeSocket(), SlowSocket()
    outbox.put(first.send, "before")
    flushed = outbox.flush()
    outbox.put(later.send, "after")  # never let through
    await asyncio.wait_for(flushed, 1)
    assert first.sent == ["before"] and later.sent == []
    # A second flush now waits for "after".
    second = outbox.flush()
    done, _ = await asyncio.wait({second}, timeout=0.1)
    assert not done
    later.gate.set()
    await asyncio.wait_for(second, 1)
    assert later.sent == ["after"]


async def test_flush_counts_a_frame_for_a_socket_that_is_gone_as_handled():
    outbox = Outbox()
    broken = FakeSocket(fail=True)
    outbox.put(broken.send, "x")
    outbox.put(broken.send, "y")
    await asyncio.wait_for(outbox.flush(), 1)
    assert broken.sent == []


async def test_flush_waits_for_a_frame_already_being_sent():
    outbox = Outbox()
    slow = SlowSocket()
    outbox.put(slow.send, "x")
    await asyncio.sleep(0)  # the sender takes "x" off the queue and waits in send
    assert not outbox._queue
    flushed = outbox.flush()
    done, _ = await asyncio.wait({flushed}, timeout=0.1)
    assert not done
    slow.gate.set()
    await asyncio.wait_for(flushed, 1)
    assert slow.sent == ["x"]
