"""A conversation's own thinking budget, set over HTTP, turns Anthropic's
extended thinking on or off for its next reply."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation
from tests.realtime.test_consumer import start
from tests.realtime.test_reasoning import kinds_text
from tests.views.test_conversation_settings import _post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

MODEL = "anthropic/fake?tokens=2&rate=0&reasoning=thinking&thoughts=3"


@pytest.fixture
def anthropic(upstream, settings):
    settings.CHATSITE_PROVIDERS = {
        **settings.CHATSITE_PROVIDERS,
        "anthropic": {
            "BACKEND": "conversations.providers.anthropic.AnthropicProvider",
            "BASE_URL": upstream.anthropic_base_url,
            "API_KEY": "sk-ant-test-not-a-secret",
            "MODELS": ["fake"],
            "THINKING_BUDGET": 0,
        },
    }
    return upstream


async def test_the_conversations_budget_turns_thinking_on_and_off(connect, alice, anthropic):
    socket = await connect(alice)
    ack, _ = await start(socket, model=MODEL)
    frames = await socket.recv_until("reply_finished")
    assert "thinking" not in anthropic.requests[-1].body and kinds_text(frames)[0] == ""
    client = Client()
    await sync_to_async(client.force_login)(alice)
    conversation = ack["conversation"]
    response = await _post(client, conversation, {"thinking_budget": 4000, "temperature": 0.5})
    assert response.status_code == 200
    detail = (await sync_to_async(client.get)(f"/api/conversations/{conversation}/")).json()
    assert detail["conversation"]["thinking_budget"] == 4000

    await start(socket, text="think now", conversation=conversation, model=None)
    frames = await socket.recv_until("reply_finished")
    body = anthropic.requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert "temperature" not in body and body["max_tokens"] > 4000
    assert kinds_text(frames) == ("t0 t1 t2 ", "w0 w1 ")

    assert (await _post(client, conversation, {"thinking_budget": 0})).status_code == 200
    await start(socket, text="no thinking", conversation=conversation, model=None)
    await socket.recv_until("reply_finished")
    body = anthropic.requests[-1].body
    assert "thinking" not in body and body["temperature"] == 0.5


@pytest.mark.parametrize("value", [1, 1023, 128_001, -1, 1.5, "on", True])
async def test_a_bad_budget_is_refused_and_changes_nothing(connect, alice, anthropic, value):
    socket = await connect(alice)
    ack, _ = await start(socket, model=MODEL)
    await socket.recv_until("reply_finished")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    response = await _post(client, ack["conversation"], {"thinking_budget": value})
    assert response.status_code == 400 and response.json()["error"] == "invalid"
    assert "thinking_budget" in response.json()["message"]
    conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert conversation.thinking_budget is None
