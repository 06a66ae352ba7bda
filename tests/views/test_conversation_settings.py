"""Per-conversation system prompt and sampling, set over HTTP, used by the next reply."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation
from tests.realtime.test_consumer import start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


async def _post(client: Client, conversation: str, body: dict):
    return await sync_to_async(client.post)(
        f"/api/conversations/{conversation}/update/", data=json.dumps(body), content_type="application/json"
    )


async def test_settings_shape_the_next_request_upstream(connect, alice, upstream):
    socket = await connect(alice)
    ack, _ = await start(socket, text="hello", model="openai/fake?tokens=2&rate=0")
    await socket.recv_until("reply_finished")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    response = await _post(
        client,
        ack["conversation"],
        {"system_prompt": "  Answer like a pirate.  ", "temperature": 0.3, "max_tokens": 64},
    )
    assert response.status_code == 200
    detail = (await sync_to_async(client.get)(f"/api/conversations/{ack['conversation']}/")).json()
    assert detail["conversation"]["system_prompt"] == "Answer like a pirate."
    assert (detail["conversation"]["temperature"], detail["conversation"]["max_tokens"]) == (0.3, 64)

    await start(socket, text="again", conversation=ack["conversation"], model=None)
    await socket.recv_until("reply_finished")
    body = upstream.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert body["temperature"] == 0.3 and body["max_tokens"] == 64

    # Back to the provider's defaults.
    assert (
        await _post(client, ack["conversation"], {"temperature": None, "max_tokens": None})
    ).status_code == 200
    await start(socket, text="third", conversation=ack["conversation"], model=None)
    await socket.recv_until("reply_finished")
    assert "temperature" not in upstream.requests[-1].body and "max_tokens" not in upstream.requests[-1].body


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": 3},
        {"temperature": "hot"},
        {"temperature": True},
        {"max_tokens": 0},
        {"max_tokens": 1.5},
        {"system_prompt": 5},
        {"system_prompt": "x" * 20_001},
        {"seed": 1},
    ],
)
async def test_invalid_settings_are_refused_and_change_nothing(connect, alice, upstream, body):
    socket = await connect(alice)
    ack, _ = await start(socket, model="openai/fake?tokens=2&rate=0")
    await socket.recv_until("reply_finished")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    response = await _post(client, ack["conversation"], body)
    assert response.status_code == 400 and response.json()["error"] == "invalid"
    conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert (conversation.system_prompt, conversation.temperature, conversation.max_tokens) == ("", None, None)


async def test_another_users_settings_are_not_found(connect, alice, bob, upstream):
    socket = await connect(alice)
    ack, _ = await start(socket, model="openai/fake?tokens=2&rate=0")
    await socket.recv_until("reply_finished")
    client = Client()
    await sync_to_async(client.force_login)(bob)
    foreign = await _post(client, ack["conversation"], {"system_prompt": "pwned"})
    missing = await _post(client, str(uuid.uuid4()), {"system_prompt": "pwned"})
    assert foreign.status_code == missing.status_code == 404 and foreign.json() == missing.json()
    assert (await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])).system_prompt == ""
