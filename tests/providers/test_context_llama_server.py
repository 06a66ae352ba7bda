"""Context windows against llama-cpp-python's own server, started with a small window."""

from __future__ import annotations

import uuid

import httpx
import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from tests.llama_server import LlamaServer, llama_server_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not llama_server_available(), reason="llama-cpp-python[server] is not installed"),
]

N_CTX = 512


@pytest.fixture(scope="module")
def server():
    with LlamaServer(n_ctx=N_CTX, extra_args=("--model_alias", "smol")) as running:
        yield running


def _configure(settings, server, *, window: int) -> None:
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": server.base_url,
            "TOKENIZE_URL": server.base_url.removesuffix("/v1") + "/extras/tokenize",
            "CONTEXT_TOKENS": window,
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = f"openai/{server.model_id}"
    settings.CHATSITE_MAX_TOKENS = 24


async def _exchange(socket, conversation, text):
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=conversation, text=text)
    frames = await socket.recv_until("reply_finished", timeout=150)
    return next(f for f in frames if f["type"] == "ack")["conversation"], frames


@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_conversation_past_the_servers_window_keeps_working(connect, alice, settings, server):
    _configure(settings, server, window=N_CTX)
    settings.CHATSITE_MAX_TOKENS = 8
    socket = await connect(alice)
    conversation, finished = None, []
    for i in range(4):
        conversation, frames = await _exchange(
            socket, conversation, f"Note {i}: " + "Tell me about the sea and its tides. " * 16
        )
        assert frames[-1]["error_kind"] in {None, "length_limit"}, frames[-1]["error"]
        finished.append(frames[-1])
    assert finished[0]["omitted_messages"] == 0 and finished[-1]["omitted_messages"] > 0
    assert finished[-1]["context_tokens"] == N_CTX
    assert finished[-1]["usage"]["prompt_tokens"] + 8 <= N_CTX


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_the_servers_empty_stream_for_a_prompt_over_its_window_is_context_length(
    connect, alice, settings, server
):
    # chatsite believes the window is a little larger than the server's: the
    # request is sent, and llama-cpp-python answers 200 with no events.
    _configure(settings, server, window=N_CTX + 40)
    socket = await connect(alice)
    _, frames = await _exchange(socket, None, "The sea is wide. " * 97)
    assert (frames[-1]["status"], frames[-1]["error_kind"]) == ("error", "context_length"), frames[-1][
        "error"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_message_over_the_servers_window_is_context_length_and_the_next_one_works(
    connect, alice, settings, server
):
    _configure(settings, server, window=N_CTX)
    socket = await connect(alice)
    conversation, frames = await _exchange(socket, None, "The sea is wide. " * 200)
    assert (frames[-1]["status"], frames[-1]["error_kind"]) == ("error", "context_length")
    conversation, frames = await _exchange(socket, conversation, "What is a wave?")
    assert frames[-1]["error_kind"] in {None, "length_limit"}, frames[-1]["error"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_usage_the_server_does_not_send_is_counted_with_its_tokenizer(connect, alice, settings, server):
    _configure(settings, server, window=N_CTX)
    socket = await connect(alice)
    text = "Hi! Who are you?"
    _, frames = await _exchange(socket, None, text)
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["reply"])
    async with httpx.AsyncClient(trust_env=False) as client:
        tokenize = server.base_url.removesuffix("/v1") + "/extras/tokenize"
        reply_tokens = (await client.post(tokenize, json={"input": reply.content})).json()["tokens"]
        own = await client.post(
            f"{server.base_url}/chat/completions",
            json={"model": server.model_id, "messages": [{"role": "user", "content": text}], "max_tokens": 1},
            timeout=60,
        )
    server_prompt = own.json()["usage"]["prompt_tokens"]
    print(f"prompt tokens: chatsite {reply.prompt_tokens}, server {server_prompt}")
    assert reply.usage_counted  # still an estimate: the template is not the server's
    assert reply.completion_tokens == len(reply_tokens)
    assert reply.prompt_tokens > len(text) // 4
