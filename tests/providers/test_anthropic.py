"""The Anthropic Messages provider against the fake upstream (real HTTP, no mocks)."""

from __future__ import annotations

import asyncio

import pytest

from conversations.prompt import ChatMessage
from conversations.providers import ProviderError, StreamResult
from conversations.providers.anthropic import API_VERSION, AnthropicProvider
from conversations.testing.fakeupstream import MARKDOWN_REPLY, MARKDOWN_TOKENS

from .streaming import collect as collect_from

API_KEY = "sk-ant-test-not-secret"
MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Say hello"),
    ChatMessage("assistant", "Hello."),
    ChatMessage("user", "Again, to everyone please"),
]
PROMPT_WORDS = 3 + 2 + 1 + 4


def make_provider(base_url: str, **options) -> AnthropicProvider:
    return AnthropicProvider("anthropic", {"BASE_URL": base_url, "API_KEY": API_KEY, "MODELS": [], **options})


@pytest.fixture
def provider(fake):
    return make_provider(fake.anthropic_base_url)


async def collect(provider, model, **kwargs):
    return await collect_from(provider, model, MESSAGES, **kwargs)


async def test_streams_text_usage_and_stop_reason(fake, provider):
    pieces, result, error = await collect(provider, "fake?tokens=9&rate=0")

    assert error is None
    record = fake.wait_for_requests(1)[0]
    assert "".join(pieces) == record.text_sent == "".join(f"w{i} " for i in range(9))
    assert result.finish_reason == "end_turn"
    assert result.prompt_tokens == PROMPT_WORDS
    assert result.completion_tokens == 9
    assert await record.wait_completed_async(2)  # the server finishes a moment after the client
    assert record.disconnected_at is None


async def test_markdown_reply_arrives_intact(fake, provider):
    pieces, _, error = await collect(provider, f"fake?text=markdown&tokens={len(MARKDOWN_TOKENS)}&rate=0")

    assert error is None
    assert "".join(pieces) == MARKDOWN_REPLY


async def test_max_tokens_cuts_the_reply_with_its_stop_reason_and_usage(fake, provider):
    pieces, result, error = await collect(provider, "fake?tokens=10&rate=0", max_tokens=3)

    assert error is None
    assert "".join(pieces) == "w0 w1 w2 "
    assert result.finish_reason == "max_tokens"
    # The Anthropic API always reports usage, a cut reply too.
    assert (result.prompt_tokens, result.completion_tokens) == (PROMPT_WORDS, 3)


async def test_without_a_key_the_api_refuses_the_request(fake):
    provider = AnthropicProvider("anthropic", {"BASE_URL": fake.anthropic_base_url, "API_KEY": ""})
    pieces, _, error = await collect(provider, "fake?tokens=3&rate=0")

    assert pieces == [] and error is not None
    assert (error.kind, error.status_code, error.retryable) == ("upstream_http", 401, False)
    assert "x-api-key header is required" in error.message


async def test_request_carries_key_version_and_messages_body(fake, provider):
    await collect(provider, "fake?tokens=1&rate=0", temperature=0.5)

    record = fake.wait_for_requests(1)[0]
    assert (record.method, record.path) == ("POST", "/v1/messages")
    assert record.headers["x-api-key"] == API_KEY
    assert record.headers["anthropic-version"] == API_VERSION
    assert "authorization" not in record.headers
    body = record.body
    assert body["stream"] is True
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES[1:]]
    assert body["max_tokens"] == 4096  # the provider's default
    assert body["temperature"] == 0.5


async def test_configured_max_tokens_is_sent(fake):
    provider = make_provider(fake.anthropic_base_url, MAX_TOKENS=123)
    await collect(provider, "fake?tokens=1&rate=0")

    assert fake.wait_for_requests(1)[0].body["max_tokens"] == 123


async def test_429_with_retry_after_is_rate_limited(fake, provider):
    pieces, _, error = await collect(provider, "fake?status=429&retry_after=2.5")

    assert pieces == []
    assert error is not None
    assert (error.kind, error.status_code, error.retryable) == ("rate_limited", 429, True)
    assert error.retry_after == 2.5
    assert "rate limited by the fake upstream" in error.message


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (529, True), (400, False), (403, False)],
)
async def test_http_error_statuses(fake, provider, status, retryable):
    _, _, error = await collect(provider, f"fake?status={status}")

    assert error is not None
    assert error.kind == "upstream_http"
    assert error.status_code == status
    assert error.retryable is retryable


async def test_malformed_event_is_an_upstream_stream_error(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=0&fault=malformed&after=4")

    assert error is not None and error.kind == "upstream_stream"
    assert "".join(pieces) == "w0 w1 w2 w3 "


async def test_connection_reset_mid_stream(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=50&fault=reset&after=2")

    assert error is not None and error.kind == "upstream_stream"
    record = fake.wait_for_requests(1)[0]
    assert "".join(pieces) == record.text_sent == "w0 w1 "
    assert not record.completed


async def test_in_stream_error_event(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=0&fault=error_event&after=1")

    assert error is not None and error.kind == "upstream_error"
    assert "overloaded_error" in error.message
    assert error.retryable is True  # overloaded is worth another try
    assert "".join(pieces) == "w0 "


async def test_stream_ending_without_message_stop(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=4&rate=0&fault=no_done")

    assert error is not None and error.kind == "upstream_stream"
    assert "".join(pieces) == "w0 w1 w2 w3 "


async def test_connection_refused(closed_port_url):
    _, _, error = await collect(make_provider(closed_port_url), "fake")

    assert error is not None and error.kind == "upstream_connect"
    assert error.retryable is True


async def _cancel_after(fake, provider, model: str, pieces_wanted: int):
    """Start streaming in a task, cancel it once ``pieces_wanted`` pieces arrived; the record."""
    pieces: list[str] = []

    async def consume():
        async for piece in provider.stream(model=model, messages=MESSAGES, result=StreamResult()):
            pieces.append(piece)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        while len(pieces) < pieces_wanted:
            if task.done():
                await task
                pytest.fail("the stream ended before it was cancelled")
            await asyncio.sleep(0.01)
    record = (await fake.wait_for_requests_async(1))[0]
    assert record.disconnected_at is None and not record.completed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return record, pieces


async def test_cancel_during_stall_closes_the_upstream(fake, provider):
    record, pieces = await _cancel_after(fake, provider, "fake?tokens=10&rate=0&fault=stall&after=3", 3)

    assert await record.wait_disconnected_async(2), "the fake upstream never saw the client leave"
    assert "".join(pieces) == "w0 w1 w2 "


async def test_cancel_during_endless_drip_stops_the_upstream(fake, provider):
    record, _ = await _cancel_after(fake, provider, "fake?rate=40&fault=drip", 2)

    assert await record.wait_disconnected_async(2), "the fake upstream never saw the client leave"
    written = len(record.token_times)
    await asyncio.sleep(0.5)
    assert len(record.token_times) == written


async def test_list_models_uses_display_names(fake):
    provider = make_provider(fake.anthropic_base_url, MODELS=["claude-configured"])
    models = await provider.list_models()

    assert [(m.name, m.label) for m in models] == [
        ("claude-configured", "claude-configured"),
        ("fake", "Fake (plain words)"),
        ("fake?text=markdown&tokens=80&rate=40", "Fake (markdown)"),
        ("fake-vision", "Fake (vision)"),
    ]
    record = fake.wait_for_requests(1)[0]
    assert (record.method, record.path) == ("GET", "/v1/models")
    assert record.headers["x-api-key"] == API_KEY


async def test_listing_a_server_that_is_down_raises_a_connect_error_and_configured_models_remain(
    closed_port_url,
):
    provider = make_provider(closed_port_url, MODELS=["claude-configured"])

    with pytest.raises(ProviderError) as caught:
        await provider.list_models()
    assert caught.value.kind == "upstream_connect"
    assert [m.name for m in provider.configured_models()] == ["claude-configured"]
