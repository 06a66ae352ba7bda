"""Conversations longer than the model's window, and counting its tokens."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from conversations import errors, serializers
from conversations.models import Message
from conversations.prompt import ChatMessage
from conversations.providers import (
    BaseProvider,
    CommonOptions,
    ProviderError,
    StreamResult,
    common_options,
    get_provider,
)
from conversations.providers.base import listed_context_tokens, prompt_fit
from conversations.providers.failures import http_error
from conversations.providers.local import MODEL_NAME, LocalProvider
from conversations.testing.fakeupstream import MODELS

from .conftest import deltas_text


class Window(BaseProvider):
    """A provider double with a fixed window; counts are the base estimate."""

    def __init__(
        self, context_tokens: int, default_max_tokens: int | None = None, common: CommonOptions | None = None
    ) -> None:
        super().__init__("stub", {"CONTEXT_TOKENS": context_tokens}, common)
        self.default_max_tokens = default_max_tokens


def _history(turns: int, chars: int = 300) -> list[ChatMessage]:
    messages = [ChatMessage("system", "Be brief.")]
    for i in range(turns):
        messages.append(ChatMessage("user", f"question {i} " + "q" * chars))
        messages.append(ChatMessage("assistant", f"answer {i} " + "a" * chars))
    messages.append(ChatMessage("user", "the newest question"))
    return messages


async def test_a_history_over_the_window_leaves_out_the_oldest_turns_and_keeps_the_system_prompt():
    messages = _history(10)
    fit = await prompt_fit(provider=Window(1000), model="m", messages=messages, max_tokens=200)
    assert 0 < fit.omitted < len(messages) - 2
    assert fit.messages[0] == messages[0] and fit.messages[-1] == messages[-1]
    assert fit.messages[1].role == "user"  # the history starts with a whole turn
    assert fit.messages[1:] == messages[1 + fit.omitted :]
    assert fit.prompt_tokens + 200 <= 1000 and fit.max_tokens == 200 and not fit.capped


async def test_a_history_that_fits_is_sent_whole():
    messages = _history(2, chars=20)
    fit = await prompt_fit(provider=Window(4096), model="m", messages=messages, max_tokens=None)
    assert fit.messages == messages and fit.omitted == 0 and fit.max_tokens is None


async def test_the_reply_length_is_capped_to_what_the_window_has_left():
    messages = [ChatMessage("user", "x" * 2400)]  # about 800 tokens
    fit = await prompt_fit(
        provider=Window(1000, default_max_tokens=512), model="m", messages=messages, max_tokens=None
    )
    assert fit.capped and fit.max_tokens < 512 and fit.prompt_tokens + fit.max_tokens <= 1000


async def test_a_single_message_over_the_window_is_a_context_length_error_that_says_what_to_do():
    with pytest.raises(ProviderError) as info:
        await prompt_fit(
            provider=Window(500),
            model="m",
            messages=[*_history(0), ChatMessage("user", "x" * 3000)],
            max_tokens=None,
        )
    error = info.value
    assert (error.kind, error.cause, error.context_tokens) == ("context_length", "message", 500)
    words = errors.error_describe(
        kind=error.kind, cause=error.cause, limit=error.context_tokens, tokens=error.prompt_tokens
    )
    assert "500-token context window" in words and "new conversation" in words


def test_an_upstream_400_over_the_window_is_context_length_and_names_the_window():
    error = http_error(
        400, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens"
    )
    assert error.kind == "context_length" and error.context_tokens == 4096 and not error.retryable
    assert http_error(400, "temperature must be at most 2").kind == "upstream_http"


def test_per_model_windows_come_from_the_environment(monkeypatch):
    from chatsite.settings import env_context_tokens

    monkeypatch.setenv("X_WINDOWS", "openai/llama3:8b=8192, openai/org/model.gguf=512")
    assert env_context_tokens("X_WINDOWS") == {"openai/llama3:8b": 8192, "openai/org/model.gguf": 512}
    monkeypatch.setenv("X_WINDOWS", "llama3=lots")
    with pytest.raises(ImproperlyConfigured, match="<provider>/<model>=<tokens>"):
        env_context_tokens("X_WINDOWS")


async def test_a_model_window_setting_overrides_the_default(settings):
    settings.CHATSITE_CONTEXT_TOKENS_MODELS = {"stub/big": 100_000}
    provider = Window(0, common=common_options())  # as get_providers() builds it
    provider.options = {}
    assert await provider.context_tokens(model="big") == 100_000
    assert await provider.context_tokens(model="other") == settings.CHATSITE_CONTEXT_TOKENS


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_window_the_servers_model_list_names_is_used_and_a_setting_still_overrides_it(
    upstream, settings
):
    upstream.models = [("vllm-served", "vllm-served"), ("plain", "plain")]
    upstream.model_windows = {"vllm-served": 2048}
    try:
        provider = get_provider("openai")
        listed = {m.name for m in await provider.list_models()}
        assert {"vllm-served", "plain"} <= listed
        assert await provider.context_tokens(model="vllm-served") == 2048
        assert await provider.context_tokens(model="plain") == settings.CHATSITE_CONTEXT_TOKENS
        settings.CHATSITE_CONTEXT_TOKENS_MODELS = {"openai/vllm-served": 1024}
        provider = get_provider("openai")  # built again with the new setting
        await provider.list_models()  # which lists 2048 again
        assert provider._listed_context["vllm-served"] == 2048
        assert await provider.context_tokens(model="vllm-served") == 1024
    finally:
        upstream.model_windows = {}
        upstream.models = list(MODELS)


def test_windows_are_read_from_each_servers_model_list_shape():
    assert listed_context_tokens({"id": "m", "max_model_len": 4096}) == 4096  # vLLM
    assert listed_context_tokens({"id": "m", "context_length": 131072}) == 131072  # OpenRouter
    assert listed_context_tokens({"id": "m", "meta": {"n_ctx": 2048, "n_ctx_train": 8192}}) == 2048
    assert listed_context_tokens({"id": "m", "context_length": "big"}) is None
    assert listed_context_tokens({"id": "m", "max_model_len": True}) is None


# --- The bundled model --------------------------------------------------------

SMALL_WINDOW = 512


@pytest.fixture(scope="module")
def local():
    provider = LocalProvider("local", {"MODEL_PATH": "bundled", "MAX_TOKENS": 16})
    assert provider.available, "the bundled model or llama-cpp-python is not installed"
    provider.preload()
    return provider


@pytest.mark.slow
async def test_the_bundled_model_counts_its_prompt_exactly_as_llama_cpp_does(local):
    messages = [
        ChatMessage("user", "Hi! Who are you?"),
        ChatMessage("assistant", "A model."),
        ChatMessage("user", "Why?"),
    ]

    def llama_cpp_count() -> int:
        with local._lock:
            answer = local._load().create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages], max_tokens=1
            )
        return answer["usage"]["prompt_tokens"]

    counted = await local.count_prompt_tokens(model=MODEL_NAME, messages=messages)
    assert counted.exact and counted.tokens == await asyncio.to_thread(llama_cpp_count)
    result = StreamResult()
    async for _ in local.stream(model=MODEL_NAME, messages=messages, result=result, max_tokens=4):
        pass
    assert result.prompt_tokens == counted.tokens


@pytest.fixture
def small_local(settings):
    settings.CHATSITE_PROVIDERS = {
        "local": {
            "BACKEND": "conversations.providers.local.LocalProvider",
            "MODEL_PATH": "bundled",
            "MAX_TOKENS": 8,
            "N_CTX": SMALL_WINDOW,
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = f"local/{MODEL_NAME}"


async def _exchange(socket, conversation, text):
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=conversation, text=text)
    frames = await socket.recv_until("reply_finished", timeout=120)
    ack = next(f for f in frames if f["type"] == "ack")
    return ack["conversation"], frames


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state", "small_local")
async def test_a_conversation_past_the_bundled_models_window_keeps_working(connect, alice):
    socket = await connect(alice)
    conversation = None
    finished = []
    for i in range(4):
        text = f"Message {i}: " + "Tell me about the sea and its tides. " * 16  # about 150 tokens
        conversation, frames = await _exchange(socket, conversation, text)
        finished.append(frames[-1])
        assert frames[-1]["error_kind"] in {None, "length_limit"}, frames[-1]["error"]
        assert frames[-1]["context_tokens"] == SMALL_WINDOW
    assert finished[0]["omitted_messages"] == 0
    last = finished[-1]
    assert last["omitted_messages"] > 0
    reply = await sync_to_async(Message.objects.get)(pk=last["reply"])
    assert (reply.omitted_messages, reply.context_tokens) == (last["omitted_messages"], SMALL_WINDOW)
    assert reply.content == deltas_text(frames)
    data = serializers.message_to_dict(reply)
    assert data["omitted_messages"] == last["omitted_messages"] and data["context_tokens"] == SMALL_WINDOW


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state", "small_local")
async def test_one_message_over_the_window_is_context_length_and_the_next_message_works(connect, alice):
    socket = await connect(alice)
    conversation, frames = await _exchange(socket, None, "Hello there.")
    assert frames[-1]["status"] in {"complete", "error"} and frames[-1]["error_kind"] in {
        None,
        "length_limit",
    }
    conversation, frames = await _exchange(socket, conversation, "The sea is wide. " * 200)
    assert (frames[-1]["status"], frames[-1]["error_kind"]) == ("error", "context_length")
    assert "new conversation" in frames[-1]["error"] and "ValueError" not in frames[-1]["error"]
    assert frames[-1]["context_tokens"] == SMALL_WINDOW
    conversation, frames = await _exchange(socket, conversation, "What is a wave?")
    assert frames[-1]["error_kind"] in {None, "length_limit"}, frames[-1]["error"]
    assert deltas_text(frames).strip()


# --- Replies cut by a full window, through the consumer -------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_reply_the_server_cuts_with_no_limit_set_says_it_filled_the_window(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=None,
        text="hello",
        model="openai/fake?tokens=5&rate=0&finish_reason=length",
    )
    finished = (await socket.recv_until("reply_finished"))[-1]
    assert finished["error_kind"] == "length_limit"
    assert "window" in finished["error"] and "token limit" not in finished["error"]
    assert "max_tokens" not in upstream.requests[-1].body


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_reply_cut_at_the_limit_set_still_says_it_reached_that_limit(
    connect, alice, upstream, settings
):
    settings.CHATSITE_MAX_TOKENS = 3
    socket = await connect(alice)
    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=None,
        text="hello",
        model="openai/fake?tokens=9&rate=0",
    )
    finished = (await socket.recv_until("reply_finished"))[-1]
    assert finished["error_kind"] == "length_limit"
    assert "length limit (3 tokens)" in finished["error"] and "window" not in finished["error"]
    assert upstream.requests[-1].body["max_tokens"] == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_the_requested_length_is_capped_to_the_window_and_a_reply_cut_there_says_so(
    connect, alice, upstream, settings
):
    settings.CHATSITE_MAX_TOKENS = 4000
    settings.CHATSITE_CONTEXT_TOKENS = 1000
    socket = await connect(alice)
    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=None,
        text="x" * 1500,
        model="openai/fake?tokens=900&rate=0",
    )
    finished = (await socket.recv_until("reply_finished"))[-1]
    sent = upstream.requests[-1].body["max_tokens"]
    assert sent < 1000 - 500 and finished["context_tokens"] == 1000
    assert finished["error_kind"] == "length_limit" and "1,000-token context window" in finished["error"]


async def test_a_continuation_keeps_the_reply_it_continues_and_its_question_however_long_the_history():
    messages = [
        *_history(10)[:-1],
        ChatMessage("user", "the question"),
        ChatMessage("assistant", "the partial reply " + "p" * 600),
        ChatMessage("user", "Continue."),
    ]
    fit = await prompt_fit(provider=Window(300), model="m", messages=messages, max_tokens=50, keep_last=3)
    assert fit.omitted > 0 and fit.messages[-3:] == messages[-3:]
