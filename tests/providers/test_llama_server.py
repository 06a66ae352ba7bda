"""chatsite's OpenAI-compatible provider against a real model server:
llama-cpp-python's own (``python -m llama_cpp.server``) serving the bundled GGUF.

Locally these are skipped when the server's extras are not installed; in CI
(``manage.py test`` installs them) they run.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import AsyncClient

from conversations import catalog
from conversations.models import Message
from conversations.prompt import ChatMessage
from conversations.providers import StreamResult
from conversations.providers.openai import OpenAIProvider
from tests.conftest import deltas_text
from tests.llama_server import LlamaServer, llama_server_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_loop_state"),
    pytest.mark.skipif(
        not llama_server_available() and not os.environ.get("CI"),
        reason="llama-cpp-python[server] or the bundled model is not installed",
    ),
]


@pytest.fixture(scope="module")
def llama():
    with LlamaServer(n_ctx=2048) as server:
        yield server


@pytest.fixture
def served(llama, settings):
    """The llama.cpp server as the only provider, "openai", listing only what it lists."""
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": llama.base_url,
            "MODELS": [],
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = ""
    settings.CHATSITE_MODELS_REFRESH = 3600.0
    settings.CHATSITE_MAX_TOKENS = 24
    settings.CHATSITE_CHECKPOINT_INTERVAL = 0.2
    return llama


def listings_logged(llama: LlamaServer) -> int:
    """``GET /v1/models`` requests the server has answered (its access log)."""
    return llama.log().count('"GET /v1/models HTTP/1.1"')


async def send(socket, text: str, model: str | None) -> dict:
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text=text, model=model)
    ack = await socket.recv(timeout=30)
    assert ack["type"] == "ack", ack
    started = await socket.recv(timeout=30)
    assert started["type"] == "reply_started", started
    return started


async def test_the_server_lists_its_model_by_path_and_a_send_with_that_id_completes(connect, alice, served):
    assert served.model_id.startswith("/") and served.model_id.endswith(".gguf")
    await catalog.model_refresh()
    client = AsyncClient()
    await database_sync_to_async(client.force_login)(alice)
    listed = (await client.get("/api/models/")).json()
    assert [m["id"] for m in listed["models"]] == [f"openai/{served.model_id}"]
    assert listed["default"] == f"openai/{served.model_id}"
    assert listed["providers"]["openai"]["reachable"] is True

    socket = await connect(alice)
    started = await send(socket, "Say hello.", listed["default"])
    frames = await socket.recv_until("reply_finished", timeout=120)

    finished = frames[-1]
    assert (finished["status"], finished["error_kind"]) in {("complete", None), ("error", "length_limit")}
    text = deltas_text(frames)
    assert text.strip()
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert (reply.provider, reply.model, reply.content) == ("openai", served.model_id, text)


async def test_the_provider_streams_the_servers_reply_in_pieces_with_its_finish_reason(served):
    provider = OpenAIProvider("openai", {"BASE_URL": served.base_url})
    result = StreamResult()
    pieces = [
        piece
        async for piece in provider.stream(
            model=served.model_id,
            messages=[ChatMessage("user", "Count from one to twenty, in words.")],
            result=result,
            max_tokens=24,
            temperature=0.0,  # greedy: the same answer every run (a sampled one was once "1920")
        )
    ]

    # A piece per token as the server generates them, not the answer in one lump.
    assert len(pieces) > 5
    if result.completion_tokens is not None:
        assert len(pieces) >= result.completion_tokens - 1
    assert "".join(pieces).strip()
    assert result.finish_reason in {"stop", "length"}


async def test_stop_closes_the_stream_and_the_server_goes_idle(connect, alice, served, settings):
    settings.CHATSITE_MAX_TOKENS = 1500
    socket = await connect(alice)
    started = await send(socket, "Write a very long story about a dragon and a lighthouse.", None)
    seen: list[dict] = []
    while len(deltas_text(seen)) < 40:
        frame = await socket.recv(timeout=60)
        seen.append(frame)
        assert frame["type"] == "delta", frame

    stopped_at = time.monotonic()
    await socket.send(type="stop", reply=started["reply"])
    seen += await socket.recv_until("reply_finished", timeout=30)
    assert seen[-1]["status"] == "stopped"

    # Idle: the server's CPU time stops growing (it stays the same for 0.5 s).
    last_cpu, last_change, deadline = served.cpu_seconds(), time.monotonic(), stopped_at + 20
    while time.monotonic() - last_change < 0.5:
        assert time.monotonic() < deadline, "the server kept working after the stop"
        await asyncio.sleep(0.005)
        cpu = served.cpu_seconds()
        if cpu != last_cpu:
            last_cpu, last_change = cpu, time.monotonic()
    print(f"\nllama_cpp.server: stop to idle {1000 * max(0.0, last_change - stopped_at):.0f} ms")

    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert reply.status == "stopped" and reply.content == deltas_text(seen)


async def test_the_page_and_the_models_api_loaded_while_a_reply_streams_do_not_break_it(
    connect, alice, served, settings
):
    # A single-stream server: llama-cpp-python's drops a running stream for the
    # next request, a model listing included.
    settings.CHATSITE_PROVIDERS["openai"]["SINGLE_STREAM"] = True
    settings.CHATSITE_MAX_TOKENS = 150
    await catalog.model_refresh()
    client = AsyncClient()
    await database_sync_to_async(client.force_login)(alice)
    socket = await connect(alice)
    started = await send(socket, "Write a long story about a dragon.", f"openai/{served.model_id}")
    frames = [await socket.recv(timeout=60)]
    before = listings_logged(served)
    settings.CHATSITE_MODELS_REFRESH = 0.1  # the background refresher is due all the time from now

    # A second tab opens while the reply streams.
    page = await client.get("/")
    api = await client.get("/api/models/")
    assert page.status_code == 200
    assert api.json()["providers"]["openai"]["reachable"] is True
    await catalog.model_refresh(due_only=True)
    listing = catalog._current().listings["openai"]
    while listing.skipped < 2:  # the background refresher came due (and skipped) while it streamed
        frame = await socket.recv(timeout=60)
        frames.append(frame)
        assert frame["type"] == "delta", frame
    settings.CHATSITE_MODELS_REFRESH = 3600.0

    frames += await socket.recv_until("reply_finished", timeout=120)
    finished = frames[-1]
    assert (finished["status"], finished["error_kind"]) in {("complete", None), ("error", "length_limit")}
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert reply.content == deltas_text(frames)
    # No listing reached the server while it streamed; once idle, it is listed again.
    assert listings_logged(served) == before
    await catalog.model_refresh()
    assert listings_logged(served) == before + 1


async def test_a_non_streaming_provider_gets_the_servers_whole_answer_with_usage(served):
    provider = OpenAIProvider("openai", {"BASE_URL": served.base_url, "STREAM": False})
    result = StreamResult()
    pieces = [
        piece
        async for piece in provider.stream(
            model=served.model_id,
            messages=[ChatMessage("user", "Count from one to twenty, in words.")],
            result=result,
            max_tokens=24,
        )
    ]

    assert len(pieces) == 1 and pieces[0].strip()
    assert result.finish_reason in {"stop", "length"} and result.streamed is False
    assert result.prompt_tokens and result.prompt_tokens > 5
    assert result.completion_tokens and 0 < result.completion_tokens <= 24


async def test_a_non_streaming_reply_through_the_socket_is_one_delta_with_the_servers_usage(
    connect, alice, served, settings
):
    settings.CHATSITE_PROVIDERS = {"openai": {**settings.CHATSITE_PROVIDERS["openai"], "STREAM": False}}
    socket = await connect(alice)
    started = await send(socket, "Say hello.", f"openai/{served.model_id}")
    frames = await socket.recv_until("reply_finished", timeout=120)

    deltas = [f for f in frames if f["type"] == "delta"]
    finished = frames[-1]
    assert len(deltas) == 1 and deltas[0]["text"].strip()
    assert (finished["status"], finished["error_kind"]) in {("complete", None), ("error", "length_limit")}
    assert finished["usage"]["completion_tokens"] > 0 and finished["metrics"]["tokens_per_s"] is None
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert reply.content == deltas[0]["text"]
