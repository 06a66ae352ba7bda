"""Stop and send: a ``send`` with ``interrupt`` stops the conversation's running
reply (saved ``stopped``, exactly as seen) and sends the new message, in one
step, through the real ASGI stack."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from conversations.models import Conversation, Message, Worker
from conversations.realtime import cluster, commands
from conversations.realtime.registry import registry
from conversations.services import exchanges as exchange_services
from tests.conftest import deltas_text
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

DRIP = "openai/fake?fault=drip&rate=100"  # streams until stopped


@sync_to_async
def row(pk: str) -> Message:
    return Message.objects.get(pk=pk)


@sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


async def started_streaming(socket, model=DRIP, client_id="first", deltas=3):
    """A reply that streams on, and the frames of it the socket saw so far."""
    await socket.send(
        type="send", client_id=client_id, conversation=None, text="tell me a story", model=model
    )
    frames = await socket.recv_until("reply_started")
    for _ in range(deltas):
        frames.append(await socket.recv())
    assert [f["type"] for f in frames] == ["ack", "reply_started"] + ["delta"] * deltas
    return frames[0], frames[1], frames


async def test_stop_and_send_saves_the_old_reply_as_seen_then_streams_the_new_one(connect, alice, upstream):
    socket = await connect(alice)
    ack, started, frames = await started_streaming(socket)
    old = started["reply"]
    await socket.send(
        type="send",
        client_id="second",
        conversation=ack["conversation"],
        text="no, a poem",
        model="openai/fake?tokens=5&rate=0",
        interrupt=True,
    )
    frames += await socket.recv_until("reply_finished")
    ended = frames[-1]
    assert (ended["reply"], ended["status"], ended["finish_reason"]) == (old, "stopped", "stopped")
    assert upstream.requests[0].wait_disconnected(2.0), "the old upstream stream was never closed"
    # The old reply's end comes first, then the new exchange.
    new_ack = await socket.recv()
    new_started = await socket.recv()
    assert (new_ack["type"], new_ack["client_id"], new_ack["created"]) == ("ack", "second", True)
    assert new_started["type"] == "reply_started" and new_started["reply"] != old
    later = await socket.recv_until("reply_finished")
    assert (later[-1]["reply"], later[-1]["status"]) == (new_started["reply"], "complete")

    stopped = await row(old)
    assert stopped.status == "stopped"
    assert stopped.content == deltas_text(frames, old)  # saved == seen
    assert stopped.last_seq == ended["last_seq"]
    assert upstream.requests[0].text_sent.startswith(stopped.content)
    prompt = await row(new_ack["message"])
    assert (prompt.content, prompt.parent_id) == ("no, a poem", uuid.UUID(old))
    reply = await row(new_started["reply"])
    assert (reply.parent_id, reply.status, reply.content) == (prompt.pk, "complete", deltas_text(later))
    # The model read the stopped reply as the conversation's history.
    sent = upstream.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == stopped.content and sent[2]["content"] == "no, a poem"
    conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert conversation.active_leaf_id == reply.pk


async def test_there_is_no_moment_when_both_replies_run_or_the_old_one_is_unsaved(
    connect, alice, upstream, monkeypatch
):
    """At the store of the new exchange the old reply is saved ``stopped`` and
    live nowhere; when the new reply is added it is the only one live."""
    socket = await connect(alice)
    ack, started, frames = await started_streaming(socket)
    old = started["reply"]
    at_store: list[tuple[str, str, bool]] = []
    at_add: list[list[str]] = []
    store = exchange_services.exchange_start_many
    add = registry.add

    def spying_store(*, requests):
        saved = Message.objects.get(pk=old)
        at_store.append((saved.status, saved.content, registry.get(old) is not None))
        return store(requests=requests)

    def spying_add(reply):
        at_add.append([r.key for r in registry.by_id.values() if r.conversation_id == reply.conversation_id])
        add(reply)

    monkeypatch.setattr(exchange_services, "exchange_start_many", spying_store)
    monkeypatch.setattr(registry, "add", spying_add)
    await socket.send(
        type="send",
        client_id="second",
        conversation=ack["conversation"],
        text="again",
        model="openai/fake?tokens=3&rate=0",
        interrupt=True,
    )
    frames += await socket.recv_until("reply_finished")
    frames += await socket.recv_until("reply_finished")
    assert at_store == [("stopped", deltas_text(frames, old), False)]
    assert at_add == [[]]
    old_request, new_request = upstream.requests
    assert old_request.disconnected_at is not None
    assert old_request.disconnected_at <= new_request.started_at


async def test_stop_and_send_of_a_continued_reply_saves_both_parts_as_seen(connect, alice, upstream):
    socket = await connect(alice)
    ack, started, frames = await started_streaming(socket)
    reply = started["reply"]
    await socket.send(type="stop", reply=reply)
    frames += await socket.recv_until("reply_finished")
    await socket.send(type="continue", reply=reply)
    frames += await socket.recv_until("reply_started")
    frames += [await socket.recv() for _ in range(2)]
    assert frames[-1]["type"] == "delta" and frames[-1]["reply"] == reply
    await socket.send(
        type="send",
        client_id="second",
        conversation=ack["conversation"],
        text="enough",
        model="openai/fake?tokens=3&rate=0",
        interrupt=True,
    )
    frames += await socket.recv_until("reply_finished")
    assert (frames[-1]["reply"], frames[-1]["status"]) == (reply, "stopped")
    saved = await row(reply)
    assert saved.status == "stopped" and saved.content == deltas_text(frames, reply)
    assert len(saved.segments) == 1  # the first part's record, kept by the continue
    later = await socket.recv_until("reply_finished")
    assert later[0]["created"] is True and later[-1]["status"] == "complete"


async def test_a_plain_send_while_a_reply_streams_is_still_refused(connect, alice, upstream):
    socket = await connect(alice)
    ack, started, _ = await started_streaming(socket)
    await socket.send(
        type="send", client_id="second", conversation=ack["conversation"], text="x", interrupt=False
    )
    refused = (await socket.recv_until("error"))[-1]  # after the deltas that came meanwhile
    assert (refused["code"], refused["ref"]) == ("reply_running", "second")
    assert registry.get(started["reply"]) is not None  # it streams on
    assert await counts() == (1, 2)
    await socket.send(type="stop", reply=started["reply"])
    await socket.recv_until("reply_finished")


async def test_interrupt_with_nothing_running_is_a_plain_send(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="first", conversation=None, text="hi", model="openai/fake?tokens=3"
    )
    frames = await socket.recv_until("reply_finished")
    ack, first_reply = frames[0], frames[1]["reply"]
    await socket.send(
        type="send", client_id="second", conversation=ack["conversation"], text="more", interrupt=True
    )
    frames = await socket.recv_until("reply_finished")
    assert [f["type"] for f in frames][:2] == ["ack", "reply_started"]
    assert frames[0]["created"] is True and frames[-1]["status"] == "complete"
    assert (await row(first_reply)).status == "complete"  # untouched
    assert (await row(frames[0]["message"])).parent_id == uuid.UUID(first_reply)


async def test_a_retried_interrupting_send_does_not_stop_the_reply_it_started(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="first", conversation=None, text="hi", model="openai/fake?tokens=2"
    )
    ack = (await socket.recv_until("reply_finished"))[0]
    conv = ack["conversation"]
    await socket.send(type="send", client_id="x", conversation=conv, text="go", model=DRIP, interrupt=True)
    frames = await socket.recv_until("reply_started")
    running = frames[-1]["reply"]
    frames.append(await socket.recv())
    # The same send again (the page resends what was not acknowledged, after a reconnect).
    await socket.send(type="send", client_id="x", conversation=conv, text="go", model=DRIP, interrupt=True)
    again = [f for f in await socket.recv_until("reply_started") if f["type"] != "delta"]
    assert [f["type"] for f in again] == ["ack", "reply_started"] and again[0]["created"] is False
    assert again[-1]["reply"] == running and registry.get(running) is not None
    assert all(f["type"] != "reply_finished" for f in again)
    assert await counts() == (1, 4) and len(upstream.requests) == 2
    # A retry of an earlier, finished send stops nothing either.
    await socket.send(type="send", client_id="first", conversation=conv, text="hi", interrupt=True)
    retried = [f for f in await socket.recv_until("reply_finished") if f["type"] != "delta"]
    assert [f["type"] for f in retried] == ["ack", "reply_finished"] and retried[0]["created"] is False
    assert retried[-1]["reply"] != running and retried[-1]["status"] == "complete"
    assert registry.get(running) is not None
    await socket.send(type="stop", reply=running)
    await socket.recv_until("reply_finished")


async def test_interrupt_must_be_a_boolean(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="send", client_id="c1", conversation=None, text="hi", interrupt="yes")
    refused = await socket.recv()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "invalid_field", "c1")
    assert await counts() == (0, 0)


async def test_another_users_interrupt_stops_nothing(connect, alice, bob, upstream):
    socket_a = await connect(alice)
    ack, started, _ = await started_streaming(socket_a)
    socket_b = await connect(bob)
    await socket_b.send(
        type="send", client_id="evil", conversation=ack["conversation"], text="x", interrupt=True
    )
    refused = await socket_b.recv()
    assert (refused["code"], refused["ref"]) == ("not_found", "evil")
    assert registry.get(started["reply"]) is not None
    assert await counts() == (1, 2)
    await socket_a.send(type="stop", reply=started["reply"])
    await socket_a.recv_until("reply_finished")


async def test_a_stop_and_send_from_another_tab_ends_the_reply_in_both(connect, alice, upstream):
    tab_a = await connect(alice)
    ack, started, frames_a = await started_streaming(tab_a)
    tab_b = await connect(alice)
    await tab_b.send(type="subscribe", conversation=ack["conversation"], after_seq=0)
    frames_b = await tab_b.recv_until("delta")
    await tab_b.send(
        type="send",
        client_id="from-b",
        conversation=ack["conversation"],
        text="stop that",
        model="openai/fake?tokens=3&rate=0",
        interrupt=True,
    )
    frames_b += await tab_b.recv_until("reply_finished")
    frames_a += await tab_a.recv_until("reply_finished")
    assert frames_a[-1] == frames_b[-1] and frames_a[-1]["status"] == "stopped"
    assert deltas_text(frames_a) == deltas_text(frames_b) == (await row(started["reply"])).content
    later = await tab_b.recv_until("reply_finished")
    assert later[0]["client_id"] == "from-b" and later[-1]["status"] == "complete"


async def test_two_interrupting_sends_at_once_start_one_reply(connect, alice, upstream):
    tab_a = await connect(alice)
    ack, started, _ = await started_streaming(tab_a)
    tab_b = await connect(alice)
    conv = ack["conversation"]
    model = "openai/fake?tokens=3&rate=0"
    await asyncio.gather(
        tab_a.send(type="send", client_id="a2", conversation=conv, text="a", model=model, interrupt=True),
        tab_b.send(type="send", client_id="b2", conversation=conv, text="b", model=model, interrupt=True),
    )
    answers = []
    for tab in (tab_a, tab_b):
        got = []
        while not any(f["type"] == "error" for f in got) and not any(
            f["type"] == "reply_finished" and f["reply"] != started["reply"] for f in got
        ):
            got.append(await tab.recv())
        answers.append(got)
    acks = [f for got in answers for f in got if f["type"] == "ack"]
    errors = [f for got in answers for f in got if f["type"] == "error"]
    assert len(acks) == 1 and [e["code"] for e in errors] == ["reply_running"]
    assert {acks[0]["client_id"], errors[0]["ref"]} == {"a2", "b2"}
    assert (await row(started["reply"])).status == "stopped"
    assert await counts() == (1, 4)


# --- the running reply is in another process (played by the test) ---------------

OWNER = "elsewhere:1:1"


@sync_to_async
def reply_running_elsewhere(user, owner_channel: str) -> Message:
    Worker.objects.create(pk=OWNER, channel=owner_channel, heartbeat_at=timezone.now())
    conversation = Conversation.objects.create(user=user, title="t", model="openai/fake")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="go")
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=question,
        status=Message.Status.STREAMING,
        worker=OWNER,
        provider="openai",
        model="fake",
        content="once upon",
        last_seq=2,
    )
    conversation.active_leaf = reply
    conversation.save(update_fields=["active_leaf"])
    return reply


@sync_to_async
def owner_saves_it_stopped(reply: Message) -> None:
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STOPPED, finished_at=timezone.now())


async def test_a_reply_in_another_process_is_stopped_there_and_waited_for(connect, alice, upstream):
    layer = get_channel_layer()
    owner_channel = await layer.new_channel()
    reply = await reply_running_elsewhere(alice, owner_channel)
    socket = await connect(alice)
    conv = str(reply.conversation_id)
    await socket.send(type="send", client_id="n1", conversation=conv, text="next", interrupt=True)
    asked = await asyncio.wait_for(layer.receive(owner_channel), 5)
    assert asked == {"type": "reply.stop", "reply": str(reply.pk), "user": alice.pk}
    # Nothing is stored while the owner has not saved it.
    assert await socket.nothing(0.2)
    assert await counts() == (1, 2)
    await owner_saves_it_stopped(reply)
    frames = await socket.recv_until("reply_finished")
    assert frames[0]["type"] == "ack" and frames[0]["created"] is True
    assert frames[-1]["status"] == "complete"
    assert (await row(frames[0]["message"])).parent_id == reply.pk


async def test_an_unreachable_process_refuses_the_send_and_stores_nothing(
    connect, alice, upstream, monkeypatch
):
    reply = await reply_running_elsewhere(alice, "nowhere")

    async def layer_down(**kwargs):
        return False

    monkeypatch.setattr(cluster, "reply_stop_remote", layer_down)
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="n1", conversation=str(reply.conversation_id), text="x", interrupt=True
    )
    refused = await socket.recv()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "unavailable", "n1")
    assert "not sent" in refused["message"]
    assert await counts() == (1, 2)
    assert (await row(str(reply.pk))).status == "streaming"
    assert registry.starting == {}


async def test_a_reply_elsewhere_that_does_not_stop_in_time_refuses_the_send(
    connect, alice, upstream, monkeypatch
):
    monkeypatch.setattr(commands, "INTERRUPT_WAIT_SECONDS", 0.3)
    layer = get_channel_layer()
    reply = await reply_running_elsewhere(alice, await layer.new_channel())
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="n1", conversation=str(reply.conversation_id), text="x", interrupt=True
    )
    refused = await socket.recv()
    assert (refused["code"], refused["ref"]) == ("unavailable", "n1")
    assert "did not stop in time" in refused["message"]
    assert await counts() == (1, 2)
    # The conversation is free again: once the reply is saved, a send goes through.
    await owner_saves_it_stopped(reply)
    await socket.send(
        type="send", client_id="n2", conversation=str(reply.conversation_id), text="x", interrupt=True
    )
    frames = await socket.recv_until("reply_finished")
    assert frames[0]["type"] == "ack" and frames[-1]["status"] == "complete"
    await eventually(lambda: not registry.by_id, what="the reply to leave the registry")


def test_interrupt_is_parsed_as_a_boolean_flag_of_send():
    from conversations.realtime.protocol import ProtocolError, parse_client_frame

    def parse(**fields):
        frame = {"type": "send", "client_id": "c1", "text": "hi", **fields}
        return parse_client_frame(json.dumps(frame), max_bytes=10_000, max_prompt_chars=100)

    assert parse().interrupt is False
    assert parse(interrupt=None).interrupt is False
    assert parse(interrupt=False).interrupt is False
    assert parse(interrupt=True).interrupt is True
    for wrong in (1, "true", [True]):
        with pytest.raises(ProtocolError) as refused:
            parse(interrupt=wrong)
        assert (refused.value.code, refused.value.ref) == ("invalid_field", "c1")
