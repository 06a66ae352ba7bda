"""A socket following a reply that another process runs, with that process played by the test.

The owner's frames come over the channel layer. If some are lost on the way (a
Redis that died held them), the socket asks the owner again from the last seq
it passed on, and the client still gets every piece of text exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from conversations.models import Conversation, Message, Worker
from conversations.realtime import cluster, protocol
from tests.conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]
OWNER = "elsewhere:1:1"


@sync_to_async
def reply_running_elsewhere(user, owner_channel: str) -> Message:
    Worker.objects.create(pk=OWNER, channel=owner_channel, heartbeat_at=timezone.now())
    conversation = Conversation.objects.create(user=user, title="t", model="openai/fake")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="go")
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=question,
        status=Message.Status.STREAMING,
        worker=OWNER,
        provider="openai",
        model="fake",
    )


@sync_to_async
def owner_died_and_was_swept(reply: Message) -> None:
    Worker.objects.filter(pk=OWNER).update(heartbeat_at=timezone.now() - timedelta(days=1))
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.INTERRUPTED)


def finished(reply: Message, last_seq: int) -> str:
    return protocol.frame_reply_finished(
        end=protocol.ReplyEnd(
            conversation=str(reply.conversation_id),
            reply=str(reply.pk),
            status="complete",
            error_kind=None,
            error=None,
            last_seq=last_seq,
            finish_reason="stop",
            usage={"prompt_tokens": 1, "completion_tokens": 5, "counted": False},
            metrics={"ttft_ms": 1.0, "tokens_per_s": 1.0, "total_ms": 1.0},
            omitted_messages=0,
            context_tokens=None,
        )
    )


def started(reply: Message, after_seq: int) -> str:
    return protocol.frame_reply_started(
        conversation=str(reply.conversation_id),
        reply=str(reply.pk),
        model="openai/fake",
        provider="openai",
        after_seq=after_seq,
    )


async def test_frames_lost_between_processes_are_asked_for_again_and_arrive_exactly_once(connect, alice):
    layer = get_channel_layer()
    owner_channel = await layer.new_channel()
    reply = await reply_running_elsewhere(alice, owner_channel)
    key = str(reply.pk)
    socket = await connect(alice)
    await socket.send(type="subscribe", conversation=str(reply.conversation_id), after_seq=0)
    ask = await asyncio.wait_for(layer.receive(owner_channel), 5)
    assert (ask["type"], ask["reply"], ask["after_seq"]) == ("reply.subscribe", key, 0)

    async def owner_sends(*frames: str) -> None:
        for frame in frames:
            await layer.send(ask["channel"], {"type": "chat.frame", "text": frame})

    await owner_sends(
        started(reply, 0),
        protocol.frame_delta(reply=key, seq=1, text="a"),
        protocol.frame_delta(reply=key, seq=2, text="b"),
        protocol.frame_delta(reply=key, seq=4, text="d"),  # 3 was lost on the way
    )
    again = await asyncio.wait_for(layer.receive(owner_channel), 5)
    assert (again["type"], again["reply"], again["after_seq"], again["channel"]) == (
        "reply.subscribe",
        key,
        2,
        ask["channel"],
    )
    # What the owner had queued before it was asked again, then its answer.
    await owner_sends(
        protocol.frame_delta(reply=key, seq=5, text="e"),
        started(reply, 2),
        protocol.frame_delta(reply=key, seq=5, text="cde"),
        protocol.frame_delta(reply=key, seq=6, text="f"),
        finished(reply, 6),
        finished(reply, 6),  # e.g. its process was also swept meanwhile: told once
    )
    frames = await socket.recv_until("reply_finished")
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("reply_started", None),
        ("delta", 1),
        ("delta", 2),
        ("delta", 5),
        ("delta", 6),
        ("reply_finished", None),
    ]
    assert deltas_text(frames) == "abcdef"
    assert await socket.nothing()


async def test_a_closed_socket_tells_the_owner_it_is_gone(connect, alice):
    layer = get_channel_layer()
    owner_channel = await layer.new_channel()
    reply = await reply_running_elsewhere(alice, owner_channel)
    socket = await connect(alice)
    await socket.send(type="subscribe", conversation=str(reply.conversation_id), after_seq=0)
    ask = await asyncio.wait_for(layer.receive(owner_channel), 5)
    assert ask["type"] == "reply.subscribe"
    await socket.close()
    gone = await asyncio.wait_for(layer.receive(owner_channel), 5)
    assert gone == {
        "type": "reply.unsubscribe",
        "reply": str(reply.pk),
        "user": alice.pk,
        "channel": ask["channel"],
    }


async def test_a_followed_reply_whose_owner_died_is_told_once_from_the_database(connect, alice):
    layer = get_channel_layer()
    owner_channel = await layer.new_channel()
    reply = await reply_running_elsewhere(alice, owner_channel)
    socket = await connect(alice)
    await socket.send(type="subscribe", conversation=str(reply.conversation_id), after_seq=0)
    await asyncio.wait_for(layer.receive(owner_channel), 5)
    await owner_died_and_was_swept(reply)
    await cluster._tell_followers_of_ended_replies(cluster.current())
    (finished,) = await socket.recv_until("reply_finished")
    assert (finished["reply"], finished["status"]) == (str(reply.pk), "interrupted")
    await cluster._tell_followers_of_ended_replies(cluster.current())  # not told twice
    assert await socket.nothing()
