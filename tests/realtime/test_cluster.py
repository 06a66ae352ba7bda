"""This process's answers to other processes' commands (``cluster._handle``), and
what a socket leaves behind in the channel layer when it closes.

Another process is played by the test: it sends the commands and listens on
the channel a viewer of its would have.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from conversations.models import Conversation, Message
from conversations.realtime import cluster
from conversations.realtime.cluster import user_group
from conversations.realtime.registry import registry
from conversations.realtime.replies import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

#: Long enough to be live for the whole test; every test stops it at the end.
SLOW = "openai/fake?tokens=2000&rate=50"


async def live_reply(socket) -> Reply:
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="go", model=SLOW)
    frames = await socket.recv_until("delta")
    reply = registry.get(frames[-1]["reply"])
    assert reply is not None and not reply.finished
    return reply


def state() -> cluster.WorkerState:
    current = cluster.current()
    assert current is not None  # the socket's connection started this process's worker
    return current


async def received(channel: str, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(get_channel_layer().receive(channel), timeout)


async def nothing_for(channel: str, timeout: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(get_channel_layer().receive(channel), timeout)
    except TimeoutError:
        return True
    return False


@sync_to_async
def finished_reply(user) -> Message:
    conversation = Conversation.objects.create(user=user, title="t", model="openai/fake")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="go")
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=question,
        content="done",
        status=Message.Status.COMPLETE,
        last_seq=3,
        provider="openai",
        model="fake",
    )


async def test_a_stop_from_another_process_stops_the_users_reply(connect, alice, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    await cluster._handle(state(), {"type": "reply.stop", "reply": reply.key, "user": alice.pk})
    finished = (await socket.recv_until("reply_finished"))[-1]
    assert finished["reply"] == reply.key and finished["status"] == "stopped"


async def test_a_stop_claimed_for_another_user_is_ignored(connect, alice, bob, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    await cluster._handle(state(), {"type": "reply.stop", "reply": reply.key, "user": bob.pk})
    assert reply.task is not None and reply.task.cancelling() == 0 and not reply.finished
    await reply.stop()


async def test_a_stop_for_a_reply_not_live_here_changes_nothing(connect, alice, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    await cluster._handle(state(), {"type": "reply.stop", "reply": str(uuid.uuid4()), "user": alice.pk})
    assert reply.task is not None and reply.task.cancelling() == 0
    await reply.stop()


async def test_a_subscribe_streams_the_live_reply_to_the_viewers_channel(connect, alice, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    viewer = await get_channel_layer().new_channel()
    worker = state()
    await cluster._handle(
        worker,
        {"type": "reply.subscribe", "reply": reply.key, "user": alice.pk, "channel": viewer, "after_seq": 0},
    )
    started = json.loads((await received(viewer))["text"])
    assert (started["type"], started["reply"], started["after_seq"]) == ("reply_started", reply.key, 0)
    catch_up = json.loads((await received(viewer))["text"])
    assert catch_up["type"] == "delta" and catch_up["seq"] >= 1
    forwarder = worker.remote[(reply.key, viewer)]
    assert forwarder in reply.subscribers
    await reply.stop()
    # The forwarder sends the reply's last frame, then lets go of it.
    while True:
        frame = json.loads((await received(viewer))["text"])
        if frame["type"] == "reply_finished":
            break
    await asyncio.wait_for(forwarder.task, 5)
    assert (reply.key, viewer) not in worker.remote


async def test_a_subscribe_claimed_for_another_user_sends_nothing(connect, alice, bob, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    viewer = await get_channel_layer().new_channel()
    worker = state()
    await cluster._handle(
        worker,
        {"type": "reply.subscribe", "reply": reply.key, "user": bob.pk, "channel": viewer, "after_seq": 0},
    )
    assert not worker.remote
    assert len(reply.subscribers) == 1  # alice's socket only
    assert await nothing_for(viewer)
    await reply.stop()


async def test_a_subscribe_to_a_finished_reply_sends_its_saved_end(connect, alice, upstream):
    await connect(alice)
    message = await finished_reply(alice)
    viewer = await get_channel_layer().new_channel()
    await cluster._handle(
        state(),
        {"type": "reply.subscribe", "reply": str(message.pk), "user": alice.pk, "channel": viewer},
    )
    frame = json.loads((await received(viewer))["text"])
    assert frame["type"] == "reply_finished"
    assert (frame["reply"], frame["status"], frame["last_seq"]) == (str(message.pk), "complete", 3)


async def test_a_subscribe_to_another_users_finished_reply_sends_nothing(connect, alice, bob, upstream):
    await connect(alice)
    message = await finished_reply(alice)
    viewer = await get_channel_layer().new_channel()
    await cluster._handle(
        state(),
        {"type": "reply.subscribe", "reply": str(message.pk), "user": bob.pk, "channel": viewer},
    )
    assert await nothing_for(viewer)


async def test_an_unsubscribe_lets_the_viewer_go(connect, alice, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    viewer = await get_channel_layer().new_channel()
    worker = state()
    subscribe = {"type": "reply.subscribe", "reply": reply.key, "user": alice.pk, "channel": viewer}
    await cluster._handle(worker, subscribe)
    forwarder = worker.remote[(reply.key, viewer)]
    await cluster._handle(
        worker, {"type": "reply.unsubscribe", "reply": reply.key, "user": alice.pk, "channel": viewer}
    )
    assert (reply.key, viewer) not in worker.remote
    assert forwarder not in reply.subscribers
    await asyncio.wait({forwarder.task}, timeout=5)
    assert forwarder.task.cancelled()
    await reply.stop()


async def test_an_unsubscribe_claimed_for_another_user_is_ignored(connect, alice, bob, upstream):
    socket = await connect(alice)
    reply = await live_reply(socket)
    viewer = await get_channel_layer().new_channel()
    worker = state()
    await cluster._handle(
        worker, {"type": "reply.subscribe", "reply": reply.key, "user": alice.pk, "channel": viewer}
    )
    forwarder = worker.remote[(reply.key, viewer)]
    await cluster._handle(
        worker, {"type": "reply.unsubscribe", "reply": reply.key, "user": bob.pk, "channel": viewer}
    )
    assert worker.remote[(reply.key, viewer)] is forwarder
    assert forwarder in reply.subscribers
    await reply.stop()


@pytest.mark.parametrize(
    "command",
    [
        {"type": "reply.stop"},  # no user
        {"type": "reply.stop", "user": "alice's id, as text"},
        {"type": "reply.subscribe", "channel": "viewer"},  # no user
    ],
)
async def test_a_command_without_a_user_is_ignored(connect, alice, upstream, command):
    socket = await connect(alice)
    reply = await live_reply(socket)
    if command.get("user"):
        command["user"] = str(alice.pk)
    await cluster._handle(state(), dict(command, reply=reply.key))
    assert reply.task is not None and reply.task.cancelling() == 0
    assert not state().remote and len(reply.subscribers) == 1
    await reply.stop()


async def test_a_command_without_a_valid_reply_id_is_ignored(connect, alice):
    await connect(alice)
    viewer = await get_channel_layer().new_channel()
    for reply in (None, "", "not-a-uuid"):
        command = {"type": "reply.subscribe", "user": alice.pk, "channel": viewer}
        if reply is not None:
            command["reply"] = reply
        await cluster._handle(state(), command)  # no database lookup of a malformed id: no error
    assert await nothing_for(viewer)


async def group_size(layer, group: str) -> int:
    """How many channels the layer holds in ``group``: the in-memory layer's own
    table, or Redis' sorted set for it (channels_redis keeps a group there)."""
    if hasattr(layer, "groups"):
        return len(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zcard(layer._group_key(group))


async def test_a_closed_socket_leaves_its_user_group(connect, alice):
    layer = get_channel_layer()
    first, second = await connect(alice), await connect(alice)
    group = user_group(alice.pk)
    assert await group_size(layer, group) == 2
    await first.close()
    assert await group_size(layer, group) == 1
    await second.close()
    assert await group_size(layer, group) == 0
