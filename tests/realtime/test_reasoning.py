"""Reasoning through the socket: its own kind of delta in the shared seq, saved
apart from the answer, seen exactly once by every viewer, whatever the ending."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from conversations.serializers import message_to_dict
from tests.realtime.test_consumer import get_reply, start
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

THOUGHTS = "".join(f"t{i} " for i in range(8))


def kinds_text(frames: list[dict]) -> tuple[str, str]:
    """(reasoning, answer) of the frames, each delta taken once by seq, in order."""
    reasoning: list[str] = []
    answer: list[str] = []
    last = 0
    for frame in frames:
        if frame["type"] in ("delta", "reasoning_delta") and frame["seq"] > last:
            last = frame["seq"]
            (reasoning if frame["type"] == "reasoning_delta" else answer).append(frame["text"])
    return "".join(reasoning), "".join(answer)


def delta_seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames if f["type"] in ("delta", "reasoning_delta")]


@pytest.mark.parametrize("dialect", ["reasoning_content", "reasoning", "think"])
async def test_reasoning_streams_apart_in_the_shared_seq_and_is_saved_apart(
    connect, alice, upstream, dialect
):
    socket = await connect(alice)
    _, started = await start(socket, model=f"openai/fake?tokens=6&rate=100&reasoning={dialect}")
    frames = await socket.recv_until("reply_finished")
    record = upstream.requests[-1]
    seqs = delta_seqs(frames)
    assert seqs == list(range(1, len(seqs) + 1))  # one numbering for both kinds
    types = [f["type"] for f in frames if f["type"] in ("delta", "reasoning_delta")]
    assert types[0] == "reasoning_delta" and types[-1] == "delta"
    reasoning, answer = kinds_text(frames)
    assert (reasoning, answer) == (THOUGHTS, record.text_sent)
    finished = frames[-1]
    assert finished["status"] == "complete" and finished["last_seq"] == seqs[-1]
    metrics = finished["metrics"]
    assert metrics["reasoning_ms"] > 0
    assert metrics["first_answer_ms"] > metrics["ttft_ms"]
    reply = await get_reply(started["reply"])
    assert (reply.reasoning, reply.content) == (reasoning, answer)
    assert "<think>" not in reply.content and reply.reasoning_redacted is False
    data = message_to_dict(reply)
    assert data["reasoning"] == reasoning and data["content"] == answer
    assert data["metrics"]["reasoning_ms"] == pytest.approx(metrics["reasoning_ms"])


async def test_a_reply_without_reasoning_sends_only_plain_deltas(connect, alice, upstream):
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=5&rate=0")
    frames = await socket.recv_until("reply_finished")
    assert not [f for f in frames if f["type"] == "reasoning_delta"]
    assert frames[-1]["metrics"]["reasoning_ms"] is None
    assert frames[-1]["metrics"]["first_answer_ms"] == pytest.approx(frames[-1]["metrics"]["ttft_ms"])


async def test_a_stop_while_thinking_keeps_the_thinking_saved_as_seen(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(
        socket, model="openai/fake?tokens=5&rate=50&thoughts=1000&reasoning=reasoning_content"
    )
    seen = [await socket.recv() for _ in range(3)]
    assert all(f["type"] == "reasoning_delta" for f in seen)
    await socket.send(type="stop", reply=started["reply"])
    frames = seen + await socket.recv_until("reply_finished")
    record = upstream.requests[-1]
    assert record.wait_disconnected(2.0), "the upstream never saw the connection close"
    assert frames[-1]["status"] == "stopped"
    reply = await get_reply(started["reply"])
    reasoning, answer = kinds_text(frames)
    assert reasoning and answer == ""
    assert (reply.reasoning, reply.content) == (reasoning, answer)
    assert reply.last_seq == frames[-1]["last_seq"] == max(delta_seqs(frames))
    assert record.reasoning_sent.startswith(reply.reasoning)
    assert reply.reasoning_ms is not None and reply.first_answer_ms is None


async def test_a_stop_during_the_answer_keeps_both_parts_saved_as_seen(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100&thoughts=4&reasoning=think")
    frames = []
    while len([f for f in frames if f["type"] == "delta"]) < 2:
        frames.append(await socket.recv())
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    reply = await get_reply(started["reply"])
    assert (reply.reasoning, reply.content) == kinds_text(frames)
    assert reply.reasoning == "t0 t1 t2 t3 "
    assert upstream.requests[-1].text_sent.startswith(reply.content)


async def test_a_second_tab_and_a_resume_see_each_reasoning_piece_exactly_once(connect, alice, upstream):
    first = await connect(alice)
    ack, started = await start(
        first, model="openai/fake?tokens=30&rate=60&thoughts=20&reasoning=reasoning_content"
    )
    seen = [await first.recv() for _ in range(4)]
    assert all(f["type"] == "reasoning_delta" for f in seen)
    # A second tab from the start, and one that had the first two pieces.
    second = await connect(alice)
    await second.send(type="subscribe", conversation=ack["conversation"], after_seq=0)
    third = await connect(alice)
    await third.send(type="subscribe", conversation=ack["conversation"], after_seq=2)
    frames_first = seen + await first.recv_until("reply_finished")
    frames_second = await second.recv_until("reply_finished")
    frames_third = await third.recv_until("reply_finished")
    full = kinds_text(frames_first)
    assert kinds_text(frames_second) == full
    for frames in (frames_second, frames_third):
        seqs = delta_seqs(frames)
        assert seqs == sorted(set(seqs))  # nothing twice
    first_two = kinds_text([f for f in frames_first if f.get("seq", 0) <= 2])
    third_rest = kinds_text(frames_third)
    assert (first_two[0] + third_rest[0], first_two[1] + third_rest[1]) == full
    reply = await get_reply(started["reply"])
    assert (reply.reasoning, reply.content) == full


async def test_a_resume_after_a_checkpoint_rebuilds_both_parts(connect, alice, upstream):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?tokens=20&rate=40&thoughts=20&reasoning=reasoning")

    async def checkpointed() -> Message | None:
        reply = await get_reply(started["reply"])
        return reply if reply.last_seq > 0 and reply.status == "streaming" else None

    # What a reloaded page reads over HTTP, then subscribes from.
    saved = await eventually(checkpointed, what="a checkpoint of the streaming reply")
    page = await sync_to_async(message_to_dict)(saved)
    assert page["reasoning"] and page["status"] == "streaming"
    resumed = await connect(alice)
    await resumed.send(type="subscribe", conversation=ack["conversation"], after_seq=page["last_seq"])
    rest = await resumed.recv_until("reply_finished")
    assert rest[0]["after_seq"] == page["last_seq"]
    reasoning, answer = kinds_text(rest)
    full = kinds_text(await socket.recv_until("reply_finished"))
    assert (page["reasoning"] + reasoning, page["content"] + answer) == full


async def test_a_continued_reply_keeps_its_reasoning_and_a_subscribe_from_0_rebuilds_both(
    connect, alice, upstream
):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?fault=drip&rate=100&thoughts=3&reasoning=reasoning")
    frames = []
    while len([f for f in frames if f["type"] == "delta"]) < 2:
        frames.append(await socket.recv())
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    before = await get_reply(started["reply"])
    assert before.reasoning == "t0 t1 t2 " and before.content
    await socket.send(type="continue", reply=started["reply"])
    more = await socket.recv_until("delta")
    assert more[0]["type"] == "reply_started" and more[0]["after_seq"] == before.last_seq
    # A second tab from the start of the continued reply: the earlier part as one
    # reasoning_delta and one delta, then the live pieces, each once.
    second = await connect(alice)
    await second.send(type="subscribe", conversation=ack["conversation"], after_seq=0)
    await socket.send(type="stop", reply=started["reply"])
    more += await socket.recv_until("reply_finished")
    seen_second = await second.recv_until("reply_finished")
    reply = await get_reply(started["reply"])
    first_part = kinds_text(frames)
    rest = kinds_text(more)
    assert (reply.reasoning, reply.content) == (first_part[0] + rest[0], first_part[1] + rest[1])
    assert reply.reasoning.startswith("t0 t1 t2 ")  # the earlier part's thinking is kept
    assert kinds_text(seen_second) == (reply.reasoning, reply.content)
    seqs = delta_seqs(seen_second)
    assert seqs == sorted(set(seqs)) and seqs[-1] == reply.last_seq


def test_a_follower_across_processes_takes_a_catch_up_of_both_kinds_and_still_sees_a_gap():
    from conversations.realtime import protocol
    from conversations.realtime.subscribers import RemoteFollows, Resync

    reply = "0b6f7c9e-3f0e-4a51-9d0e-6f1f2b1f4c55"
    follows = RemoteFollows()
    follows.follow(reply, "owner")
    started = protocol.frame_reply_started(
        conversation=reply, reply=reply, model="openai/x", provider="openai", after_seq=2
    )
    assert follows.receive(started) == "deliver"
    # The catch-up: reasoning 3..5 in one frame, the answer 6..8 in the next.
    assert (
        follows.receive(protocol.frame_reasoning_delta(reply=reply, seq=5, text="t", redacted=False))
        == "deliver"
    )
    assert follows.receive(protocol.frame_delta(reply=reply, seq=8, text="w")) == "deliver"
    assert follows.receive(protocol.frame_delta(reply=reply, seq=8, text="w")) == "drop"  # a repeat
    assert follows.receive(protocol.frame_delta(reply=reply, seq=9, text="w")) == "deliver"
    # Live, a seq skipped is a gap, whatever the kind.
    verdict = follows.receive(protocol.frame_reasoning_delta(reply=reply, seq=11, text="t", redacted=False))
    assert verdict == Resync(reply, "owner", 9)
