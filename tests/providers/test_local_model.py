"""The bundled offline model: real weights, real llama.cpp, no network."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from conversations.prompt import ChatMessage
from conversations.providers import StreamResult
from conversations.providers.local import MODEL_NAME, LocalProvider, bundled_model_path
from tests.conftest import deltas_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    provider = LocalProvider("local", {"MODEL_PATH": "bundled", "MAX_TOKENS": 48})
    assert provider.available, "the bundled model or llama-cpp-python is not installed"
    provider.preload()
    return provider


PROMPT = [ChatMessage("user", "Write three sentences about the sea.")]


def test_bundled_model_file_ships_in_the_wheel():
    path = bundled_model_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


async def test_lists_itself_as_a_tiny_offline_model(local):
    (model,) = await local.list_models()
    assert model.id == f"local/{MODEL_NAME}"
    assert "offline" in model.label


async def test_streams_text_and_reports_usage(local):
    result = StreamResult()
    pieces = [p async for p in local.stream(model=MODEL_NAME, messages=PROMPT, result=result, max_tokens=24)]
    assert len(pieces) >= 5
    assert "".join(pieces).strip()
    assert result.completion_tokens == len(pieces)
    assert result.prompt_tokens and result.prompt_tokens > 5
    assert result.finish_reason in {"stop", "length"}


@pytest.mark.parametrize(("option", "sent"), [(1.15, 1.15), (None, 1.0)], ids=["set", "unset"])
async def test_the_repeat_penalty_option_reaches_llama_cpp(option, sent, monkeypatch):
    provider = LocalProvider("local", {"MODEL_PATH": "bundled", "REPEAT_PENALTY": option})
    llm = provider._load()
    asked: list[dict] = []
    real = llm.create_chat_completion

    def spy(**kwargs):
        asked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(llm, "create_chat_completion", spy)
    stream = provider.stream(model=MODEL_NAME, messages=PROMPT, result=StreamResult(), max_tokens=4)
    pieces = [p async for p in stream]
    assert pieces and [a["repeat_penalty"] for a in asked] == [sent]


def test_the_default_settings_give_the_offline_model_a_repeat_penalty(settings):
    assert settings.CHATSITE_PROVIDERS["local"]["REPEAT_PENALTY"] == 1.1


async def test_stops_at_the_next_token_when_cancelled(local):
    pieces: list[str] = []
    third = asyncio.Event()

    async def consume():
        async for piece in local.stream(
            model=MODEL_NAME, messages=PROMPT, result=StreamResult(), max_tokens=400
        ):
            pieces.append(piece)
            if len(pieces) == 3:
                third.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(third.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker thread lets go of the model within a token or two, not after 400.
    acquired = await asyncio.to_thread(local._lock.acquire, True, 5.0)
    assert acquired
    local._lock.release()
    assert len(pieces) < 10
    # And the model is usable again at once.
    again = [
        p async for p in local.stream(model=MODEL_NAME, messages=PROMPT, result=StreamResult(), max_tokens=4)
    ]
    assert again


async def test_unknown_local_model_is_a_named_error(local):
    from conversations.providers import ProviderError

    with pytest.raises(ProviderError) as info:
        async for _ in local.stream(model="nope", messages=PROMPT, result=StreamResult()):
            pass
    assert info.value.kind == "model_unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_chat_with_the_offline_model_end_to_end(connect, alice, settings):
    settings.CHATSITE_PROVIDERS = {
        "local": {
            "BACKEND": "conversations.providers.local.LocalProvider",
            "MODEL_PATH": "bundled",
            "MAX_TOKENS": 32,
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = ""
    socket = await connect(alice)
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="Hi! Who are you?")
    frames = await socket.recv_until("reply_finished", timeout=60)
    started = next(f for f in frames if f["type"] == "reply_started")
    assert started["model"] == f"local/{MODEL_NAME}"
    assert frames[-1]["status"] in {"complete", "error"}
    assert frames[-1]["error_kind"] in {None, "length_limit"}
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert reply.content == deltas_text(frames) and reply.content.strip()
    assert reply.completion_tokens and reply.completion_tokens > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_stop_the_offline_model_mid_reply(connect, alice, settings):
    settings.CHATSITE_PROVIDERS = {
        "local": {
            "BACKEND": "conversations.providers.local.LocalProvider",
            "MODEL_PATH": "bundled",
            "MAX_TOKENS": 400,
        }
    }
    socket = await connect(alice)
    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=None,
        text="Tell me a long story.",
        model=f"local/{MODEL_NAME}",
    )
    frames = await socket.recv_until("delta", timeout=60)
    reply_id = frames[-1]["reply"]
    await socket.send(type="stop", reply=reply_id)
    frames += await socket.recv_until("reply_finished", timeout=30)
    assert frames[-1]["status"] == "stopped"
    reply = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert reply.status == "stopped" and reply.content == deltas_text(frames)
