"""Regenerate, edit and resend, switch versions, continue a cut reply."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations import selectors, serializers
from conversations.models import Conversation, Message
from conversations.services.exchanges import CONTINUE_INSTRUCTION
from tests.realtime.test_consumer import counts, start

from .conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]
FAST = "openai/fake?tokens=6&rate=0"


@sync_to_async
def visible(conversation_id: str) -> list[dict]:
    conversation = Conversation.objects.get(pk=conversation_id)
    return [serializers.message_to_dict(m) for m in selectors.message_list(conversation=conversation)]


async def exchange(socket, text, conversation=None, model=FAST, **extra):
    await socket.send(
        type="send", client_id=uuid.uuid4().hex, conversation=conversation, text=text, model=model, **extra
    )
    frames = await socket.recv_until("reply_finished")
    ack = frames[0]
    started = next(f for f in frames if f["type"] == "reply_started")
    return ack, started, frames


async def test_regenerate_keeps_both_replies_as_versions(connect, alice, upstream):
    socket = await connect(alice)
    ack, first, _ = await exchange(socket, "question")
    await socket.send(
        type="regenerate", client_id="regen-1", reply=first["reply"], model="openai/fake?tokens=4&rate=0"
    )
    frames = await socket.recv_until("reply_finished")
    assert frames[0]["type"] == "ack" and frames[0]["message"] == ack["message"]
    second = next(f for f in frames if f["type"] == "reply_started")
    assert second["reply"] != first["reply"] and frames[-1]["status"] == "complete"
    shown = await visible(ack["conversation"])
    assert [m["id"] for m in shown] == [ack["message"], second["reply"]]
    assert shown[1]["versions"] == [first["reply"], second["reply"]]
    # Both asked the same question with the same history.
    assert upstream.requests[-1].body["messages"] == upstream.requests[-2].body["messages"]
    # A retried regenerate creates nothing new.
    before = await counts()
    await socket.send(type="regenerate", client_id="regen-1", reply=first["reply"])
    again = await socket.recv()
    assert again["type"] == "ack" and again["created"] is False
    final = await socket.recv()  # its final state is reported
    assert final["type"] == "reply_finished" and final["reply"] == second["reply"]
    assert await counts() == before


async def test_edit_and_resend_branches_and_keeps_the_old_branch(connect, alice, upstream):
    socket = await connect(alice)
    ack1, _, _ = await exchange(socket, "first")
    ack2, reply2, _ = await exchange(socket, "second, with a typo", conversation=ack1["conversation"])
    ack3, reply3, _ = await exchange(
        socket, "second, fixed", conversation=ack1["conversation"], edit_of=ack2["message"]
    )
    sent = upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first", "second, fixed"]
    shown = await visible(ack1["conversation"])
    assert [m["id"] for m in shown][-2:] == [ack3["message"], reply3["reply"]]
    assert shown[2]["versions"] == [ack2["message"], ack3["message"]]

    # Flip back to the earlier version through the HTTP API.
    client = Client()
    await sync_to_async(client.force_login)(alice)
    response = await sync_to_async(client.post)(
        f"/api/conversations/{ack1['conversation']}/branch/",
        data=json.dumps({"message": ack2["message"]}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["messages"]][-2:] == [ack2["message"], reply2["reply"]]
    # The next message continues the branch the user is looking at.
    await exchange(socket, "third", conversation=ack1["conversation"])
    sent = upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first", "second, with a typo", "third"]


async def test_another_users_branch_switch_is_not_found(connect, alice, bob, upstream):
    socket = await connect(alice)
    ack, _, _ = await exchange(socket, "mine")
    client = Client()
    await sync_to_async(client.force_login)(bob)
    for conversation, message in (
        (ack["conversation"], ack["message"]),
        (str(uuid.uuid4()), str(uuid.uuid4())),
    ):
        response = await sync_to_async(client.post)(
            f"/api/conversations/{conversation}/branch/",
            data=json.dumps({"message": message}),
            content_type="application/json",
        )
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "message": "no such conversation"}


async def test_continue_appends_to_a_stopped_reply_and_keeps_both_metrics(connect, alice, upstream):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    frames = [await socket.recv() for _ in range(3)]
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    first_part = deltas_text(frames)
    last_seq = frames[-1]["last_seq"]

    await socket.send(type="continue", reply=started["reply"])
    more = [await socket.recv() for _ in range(3)]
    await socket.send(type="stop", reply=started["reply"])
    more += await socket.recv_until("reply_finished")
    assert more[0]["type"] == "reply_started" and more[0]["after_seq"] == last_seq
    seqs = [f["seq"] for f in more if f["type"] == "delta"]
    assert seqs[0] == last_seq + 1
    assert more[-1]["status"] == "stopped"
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert reply.content == first_part + deltas_text(more)
    assert reply.last_seq == more[-1]["last_seq"]
    assert len(reply.segments) == 1 and reply.segments[0]["status"] == "stopped"
    assert reply.segments[0]["last_seq"] == last_seq
    # The model saw what it had written, and was asked to go on.
    sent = upstream.requests[-1].body["messages"]
    assert sent[-2] == {"role": "assistant", "content": first_part}
    assert sent[-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}


async def test_only_a_cut_reply_can_be_continued(connect, alice, upstream):
    socket = await connect(alice)
    _, started, _ = await exchange(socket, "done")
    await socket.send(type="continue", reply=started["reply"])
    error = await socket.recv()
    assert error["type"] == "error" and error["code"] == "not_continuable"
    await socket.send(type="continue", reply=str(uuid.uuid4()))
    assert (await socket.recv())["code"] == "not_found"


async def test_a_late_subscriber_to_a_continued_reply_gets_all_of_it(connect, alice, upstream):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?fault=drip&rate=60")
    frames = [await socket.recv() for _ in range(2)]
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    await socket.send(type="continue", reply=started["reply"])
    frames += [await socket.recv() for _ in range(3)]
    other = await connect(alice)
    await other.send(type="subscribe", conversation=ack["conversation"], after_seq=1)
    first = await other.recv()
    assert first["type"] == "reply_started" and first["after_seq"] == 0  # inside the earlier part: from 0
    await socket.send(type="stop", reply=started["reply"])
    theirs = [first] + await other.recv_until("reply_finished")
    frames += await socket.recv_until("reply_finished")
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert deltas_text(theirs) == reply.content


async def test_an_imported_reply_continues_with_the_default_model(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    await socket.recv()
    await socket.send(type="stop", reply=started["reply"])
    await socket.recv_until("reply_finished")
    # As if it came from a ChatGPT export: a provider this server does not have.
    await sync_to_async(Message.objects.filter(pk=started["reply"]).update)(
        provider="chatgpt", model="gpt-4o"
    )
    await sync_to_async(Conversation.objects.update)(model="chatgpt/gpt-4o")
    await socket.send(type="continue", reply=started["reply"])
    frames = [await socket.recv()]
    assert frames[0]["type"] == "reply_started" and frames[0]["model"] == "openai/fake"
    frames += await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"
