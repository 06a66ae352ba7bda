"""The OpenAI-compatible provider against the fake upstream (real HTTP, no mocks)."""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing

import pytest

from conversations import errors
from conversations.prompt import ChatMessage
from conversations.providers import ProviderError, StreamResult
from conversations.providers.openai import OpenAIProvider
from conversations.testing.fakeupstream import MARKDOWN_REPLY, MARKDOWN_TOKENS, FakeUpstream

from .streaming import collect as collect_from

API_KEY = "sk-test-not-secret"
MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Say hello to the nice people"),
]
PROMPT_WORDS = 3 + 6


def make_provider(base_url: str, **options) -> OpenAIProvider:
    return OpenAIProvider("openai", {"BASE_URL": base_url, "API_KEY": API_KEY, "MODELS": [], **options})


@pytest.fixture
def provider(fake):
    return make_provider(fake.openai_base_url)


async def collect(provider, model, **kwargs):
    return await collect_from(provider, model, MESSAGES, **kwargs)


async def test_streams_text_usage_and_finish_reason(fake, provider):
    pieces, result, error = await collect(provider, "fake?tokens=12&rate=0")

    assert error is None
    record = fake.wait_for_requests(1)[0]
    assert "".join(pieces) == record.text_sent == "".join(f"w{i} " for i in range(12))
    assert len(pieces) == 12
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 12
    assert result.prompt_tokens == PROMPT_WORDS
    assert await record.wait_completed_async(2)  # the server finishes a moment after the client
    assert record.disconnected_at is None


async def test_markdown_reply_arrives_intact(fake, provider):
    pieces, _, error = await collect(provider, f"fake?text=markdown&tokens={len(MARKDOWN_TOKENS)}&rate=0")

    assert error is None
    assert "".join(pieces) == MARKDOWN_REPLY
    assert "```python" in "".join(pieces)


async def test_other_finish_reason_and_no_usage(fake, provider):
    pieces, result, error = await collect(
        provider, "fake?tokens=3&rate=0&finish_reason=content_filter&usage=0"
    )

    assert error is None
    assert "".join(pieces) == "w0 w1 w2 "
    assert result.finish_reason == "content_filter"
    assert result.prompt_tokens is None and result.completion_tokens is None


async def test_max_tokens_cuts_the_reply(fake, provider):
    pieces, result, error = await collect(provider, "fake?tokens=10&rate=0", max_tokens=4)

    assert error is None
    assert "".join(pieces) == "w0 w1 w2 w3 "
    assert result.finish_reason == "length"


async def test_request_carries_key_and_openai_body(fake, provider):
    await collect(provider, "fake?tokens=1&rate=0", max_tokens=50, temperature=0.25)

    record = fake.wait_for_requests(1)[0]
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-api-key" not in record.headers
    assert record.headers["accept"] == "text/event-stream"
    body = record.body
    assert body["model"] == "fake?tokens=1&rate=0"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.25


async def test_no_authorization_header_without_a_key(fake):
    provider = OpenAIProvider("local-vllm", {"BASE_URL": fake.openai_base_url, "API_KEY": ""})
    _, _, error = await collect(provider, "fake?tokens=1&rate=0")

    assert error is None
    assert "authorization" not in fake.wait_for_requests(1)[0].headers


async def test_429_with_retry_after_is_rate_limited(fake, provider):
    pieces, _, error = await collect(provider, "fake?status=429&retry_after=7")

    assert pieces == []
    assert error is not None
    assert error.kind == "rate_limited"
    assert error.retryable is True
    assert error.retry_after == 7.0
    assert error.status_code == 429
    assert "rate limited by the fake upstream" in error.message


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (400, False), (401, False), (404, False)],
)
async def test_http_error_statuses(fake, provider, status, retryable):
    _, _, error = await collect(provider, f"fake?status={status}")

    assert error is not None
    assert error.kind == "upstream_http"
    assert error.status_code == status
    assert error.retryable is retryable
    assert str(status) in error.message


async def test_unknown_scenario_key_is_a_400_with_the_servers_message(fake, provider):
    _, _, error = await collect(provider, "fake?tokenz=3")

    assert error is not None
    assert (error.kind, error.status_code, error.retryable) == ("upstream_http", 400, False)
    assert "unknown scenario key 'tokenz'" in error.message


async def test_fail_first_then_success(fake, provider):
    model = "fake?tokens=2&rate=0&fail_first=1&status=503&key=openai-retry"
    _, _, first = await collect(provider, model)
    pieces, _, second = await collect(provider, model)

    assert first is not None and first.status_code == 503
    assert second is None and "".join(pieces) == "w0 w1 "


async def test_malformed_event_is_an_upstream_stream_error(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=0&fault=malformed&after=2")

    assert error is not None and error.kind == "upstream_stream"
    assert "".join(pieces) == "w0 w1 "


async def test_connection_reset_mid_stream(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=50&fault=reset&after=3")

    assert error is not None
    assert error.kind == "upstream_stream"
    assert error.retryable is True
    record = fake.wait_for_requests(1)[0]
    assert "".join(pieces) == record.text_sent == "w0 w1 w2 "
    assert not record.completed


async def test_in_stream_error_event(fake, provider):
    pieces, _, error = await collect(provider, "fake?tokens=10&rate=0&fault=error_event&after=2")

    assert error is not None and error.kind == "upstream_error"
    assert "injected an error" in error.message
    assert "".join(pieces) == "w0 w1 "


@pytest.mark.parametrize("after", [0, 3])
async def test_stream_ending_without_done(fake, provider, after):
    pieces, result, error = await collect(provider, f"fake?tokens=5&rate=0&fault=no_done&after={after}")

    assert error is not None and error.kind == "upstream_stream"
    assert "".join(pieces) == "".join(f"w{i} " for i in range(after or 5))
    assert result.finish_reason is None


async def test_an_empty_event_stream_is_an_upstream_stream_error(fake, provider):
    pieces, result, error = await collect(provider, "fake?fault=empty")

    assert pieces == [] and result.finish_reason is None
    assert error is not None and error.kind == "upstream_stream"


async def test_done_without_a_finish_reason_then_a_cut_body_keeps_the_text_and_is_a_stream_error(
    fake, provider
):
    pieces, result, error = await collect(provider, "fake?tokens=9&rate=0&fault=done_cut&after=4")

    assert "".join(pieces) == fake.wait_for_requests(1)[0].text_sent == "w0 w1 w2 w3 "
    assert result.finish_reason is None
    assert error is not None and error.kind == "upstream_stream" and error.retryable is True


async def test_no_usage_even_when_asked_for_leaves_the_counts_unknown(fake, provider):
    pieces, result, error = await collect(provider, "fake?tokens=3&rate=0&usage=false")

    assert error is None and "".join(pieces) == "w0 w1 w2 "
    assert fake.wait_for_requests(1)[0].body["stream_options"] == {"include_usage": True}
    assert result.finish_reason == "stop"
    assert result.prompt_tokens is None and result.completion_tokens is None


async def test_a_path_shaped_model_id_is_listed_and_streams():
    with FakeUpstream(models=[("/srv/models/x.gguf", "/srv/models/x.gguf")]) as server:
        provider = make_provider(server.openai_base_url)
        [model] = await provider.list_models()
        pieces, result, error = await collect(provider, model.name)

    assert (model.name, model.id) == ("/srv/models/x.gguf", "openai//srv/models/x.gguf")
    assert error is None and result.finish_reason == "stop"
    assert "".join(pieces) == "".join(f"w{i} " for i in range(20))
    assert server.requests[-1].body["model"] == "/srv/models/x.gguf"


async def test_a_single_stream_server_listing_models_mid_stream_breaks_the_stream():
    with FakeUpstream(single_stream=True) as server:
        provider = make_provider(server.openai_base_url)
        result, error = StreamResult(), None
        stream = provider.stream(model="fake?tokens=200&rate=20", messages=MESSAGES, result=result)
        async with aclosing(stream):
            pieces = [await anext(stream)]  # the reply is streaming
            await make_provider(server.openai_base_url).list_models()  # another tab opens the page
            try:
                async for piece in stream:
                    pieces.append(piece)
            except ProviderError as exc:
                error = exc
        record = server.requests[0]

    assert record.interrupted
    assert "".join(pieces) == record.text_sent and 0 < len(pieces) < 200  # the text seen is kept
    assert result.finish_reason is None
    assert error is not None and error.kind == "upstream_stream"


async def test_connection_refused(closed_port_url):
    provider = make_provider(closed_port_url + "/v1")
    pieces, _, error = await collect(provider, "fake")

    assert pieces == []
    assert error is not None and error.kind == "upstream_connect"
    assert error.retryable is True


async def test_a_closed_port_is_reported_as_refused_with_its_host(closed_port_url):
    # The httpx-aiohttp transport calls every aiohttp connector error a
    # ConnectTimeout; the cause underneath says what really happened.
    provider = make_provider(closed_port_url + "/v1")
    _, _, error = await collect(provider, "fake")

    assert (error.kind, error.cause) == ("upstream_connect", "refused")
    host = closed_port_url.removeprefix("http://")
    assert provider.host == host
    words = errors.error_describe(kind=error.kind, host=provider.host, cause=error.cause)
    assert words == f"Couldn't reach the model server at {host}. Is it running?"


@pytest.fixture
def stalled_port_url():
    """A loopback port whose accept queue is full: the kernel drops new SYNs, so
    a connection attempt hangs until the client's connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for s in [*fillers, listener]:
            s.close()


async def test_a_port_that_never_accepts_is_reported_as_a_connect_timeout(stalled_port_url, settings):
    settings.CHATSITE_HTTP_TIMEOUT = 0.3
    provider = make_provider(stalled_port_url + "/v1")
    _, _, error = await collect(provider, "fake")

    assert (error.kind, error.cause) == ("upstream_connect", "timeout")
    words = errors.error_describe(kind=error.kind, host=provider.host, cause=error.cause)
    assert words.startswith(f"The model server at {provider.host} did not answer the connection in time.")


async def test_https_to_a_server_that_speaks_plain_http_is_reported_as_tls():
    async def answer_in_plain_http(reader, writer):
        await reader.read(64)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_in_plain_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, _, error = await collect(make_provider(f"https://127.0.0.1:{port}/v1"), "fake")
    finally:
        server.close()
        await server.wait_closed()

    assert (error.kind, error.cause) == ("upstream_connect", "tls")


def test_the_host_in_error_words_never_carries_the_urls_user_info():
    provider = make_provider("http://admin:sk-in-the-url-123456@127.0.0.1:8123/v1")

    assert provider.host == "127.0.0.1:8123"
    words = errors.error_describe(kind="upstream_connect", host=provider.host, cause="refused")
    assert "admin" not in words and "sk-in-the-url" not in words


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
                await task  # raises whatever stopped it early
                pytest.fail("the stream ended before it was cancelled")
            await asyncio.sleep(0.01)
    record = (await fake.wait_for_requests_async(1))[0]
    assert record.disconnected_at is None and not record.completed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return record, pieces


async def test_cancel_during_stall_closes_the_upstream(fake, provider):
    record, pieces = await _cancel_after(fake, provider, "fake?tokens=10&rate=0&fault=stall&after=2", 2)

    assert await record.wait_disconnected_async(2), "the fake upstream never saw the client leave"
    assert "".join(pieces) == record.text_sent == "w0 w1 "
    assert not record.completed


async def test_cancel_during_endless_drip_stops_the_upstream(fake, provider):
    record, _ = await _cancel_after(fake, provider, "fake?rate=40&fault=drip", 3)

    assert await record.wait_disconnected_async(2), "the fake upstream never saw the client leave"
    written = len(record.token_times)
    await asyncio.sleep(0.5)  # at 40 tokens/s a live stream would write ~20 more
    assert len(record.token_times) == written


async def test_list_models_merges_configured_and_listed(fake):
    provider = make_provider(fake.openai_base_url, MODELS=["my-model", "fake"])
    models = await provider.list_models()

    assert [m.name for m in models] == [
        "my-model",
        "fake",
        "fake?text=markdown&tokens=80&rate=40",
        "fake-vision",
    ]
    assert {m.provider for m in models} == {"openai"}
    assert models[0].id == "openai/my-model"
    record = fake.wait_for_requests(1)[0]
    assert (record.method, record.path) == ("GET", "/v1/models")
    assert record.headers["authorization"] == f"Bearer {API_KEY}"


async def test_listing_a_server_that_is_down_raises_a_connect_error_and_configured_models_remain(
    closed_port_url,
):
    provider = make_provider(closed_port_url + "/v1", MODELS=["configured-a", "configured-b"])

    with pytest.raises(ProviderError) as caught:
        await provider.list_models()
    assert caught.value.kind == "upstream_connect"
    assert [m.id for m in provider.configured_models()] == ["openai/configured-a", "openai/configured-b"]
