"""Servers that cannot stream: ``STREAM: False`` (or ``CHATSITE_NON_STREAMING_MODELS``)
asks with streaming off and the whole answer arrives as one piece; and a server
that answers a streaming request with a JSON body is read as a whole answer.
Against the fake upstream (real HTTP, no mocks), both APIs."""

from __future__ import annotations

import asyncio
import time

import pytest

from conversations.prompt import ChatMessage
from conversations.providers import CommonOptions, ProviderError, StreamResult, get_provider
from conversations.providers.anthropic import AnthropicProvider, anthropic_answer
from conversations.providers.openai import OpenAIProvider, openai_answer
from conversations.providers.reasoning import Reasoning, RedactedReasoning
from conversations.testing.fakeupstream import FAKE_SIGNATURE

from .streaming import collect

MESSAGES = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello to the nice people")]
PROMPT_WORDS = 3 + 6
WORDS3 = "w0 w1 w2 "
THOUGHTS = "t0 t1 t2 t3 "


def openai(fake, *, stream: bool = False, **common) -> OpenAIProvider:
    options = {"BASE_URL": fake.openai_base_url, "API_KEY": "sk-test-not-secret", "STREAM": stream}
    return OpenAIProvider("openai", options, CommonOptions(**common))


def anthropic(fake, *, stream: bool = False, **options) -> AnthropicProvider:
    base = {"BASE_URL": fake.anthropic_base_url, "API_KEY": "sk-ant-test-not-secret", "STREAM": stream}
    return AnthropicProvider("anthropic", {**base, **options})


# --- OpenAI-compatible, streaming off -------------------------------------------


async def test_a_non_streaming_openai_request_gets_the_whole_answer_as_one_piece(fake):
    pieces, result, error = await collect(openai(fake), "fake?tokens=3&rate=0", MESSAGES)

    assert error is None
    assert pieces == [WORDS3] and type(pieces[0]) is str
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (PROMPT_WORDS, 3, "stop")
    assert result.streamed is False
    body = fake.wait_for_requests(1)[0].body
    assert body["stream"] is False and "stream_options" not in body


async def test_chatsite_non_streaming_models_turns_streaming_off_for_the_models_it_names(fake):
    provider = openai(fake, stream=True, non_streaming_models=("openai/batch-*",))

    assert not provider.streams(model="batch-7") and provider.streams(model="fake")
    whole, _, _ = await collect(provider, "batch-1?tokens=3&rate=0", MESSAGES)
    streamed, result, _ = await collect(provider, "fake?tokens=3&rate=0", MESSAGES)

    assert whole == [WORDS3] and streamed == ["w0 ", "w1 ", "w2 "] and result.streamed
    first, second = fake.wait_for_requests(2)
    assert first.body["stream"] is False and second.body["stream"] is True


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "think"])
async def test_a_whole_answers_reasoning_is_split_out_first(fake, field):
    pieces, result, error = await collect(
        openai(fake), f"fake?tokens=3&rate=0&reasoning={field}&thoughts=4", MESSAGES
    )

    assert error is None
    assert pieces == [THOUGHTS, WORDS3]
    assert type(pieces[0]) is Reasoning and type(pieces[1]) is str
    assert result.completion_tokens == 3 + 4


async def test_a_whole_answer_cut_by_max_tokens_finishes_for_length(fake):
    pieces, result, _ = await collect(openai(fake), "fake?tokens=10&rate=0", MESSAGES, max_tokens=4)

    assert pieces == ["w0 w1 w2 w3 "] and result.finish_reason == "length"
    assert fake.wait_for_requests(1)[0].body["max_tokens"] == 4


async def test_a_whole_answer_without_usage_leaves_the_counts_unknown(fake):
    pieces, result, _ = await collect(openai(fake), "fake?tokens=2&rate=0&usage=false", MESSAGES)

    assert pieces == ["w0 w1 "] and result.prompt_tokens is None and result.completion_tokens is None


@pytest.mark.parametrize(
    ("model", "kind", "status", "retryable"),
    [
        ("fake?status=429&retry_after=2", "rate_limited", 429, True),
        ("fake?status=500", "upstream_http", 500, True),
        ("fake?status=404", "upstream_http", 404, False),
        ("fake?fault=json_error", "upstream_error", None, False),
    ],
)
async def test_errors_of_a_whole_answer_map_as_a_streams_do(fake, model, kind, status, retryable):
    pieces, _, error = await collect(openai(fake), model, MESSAGES)

    assert pieces == [] and error is not None
    assert (error.kind, error.status_code, error.retryable) == (kind, status, retryable)
    if status == 429:
        assert error.retry_after == 2
    if kind == "upstream_error":
        assert error.detail == "the fake upstream injected an error"


async def test_a_non_streaming_request_to_a_closed_port_is_refused(closed_port_url):
    provider = OpenAIProvider("openai", {"BASE_URL": closed_port_url, "STREAM": False})
    _, _, error = await collect(provider, "fake", MESSAGES)

    assert error is not None and (error.kind, error.cause) == ("upstream_connect", "refused")


async def _cancel_while_pending(fake, provider, model: str):
    """Start the request in a task and cancel it while its answer is pending:
    (the fake's record, seconds from the cancel to the fake seeing the client leave)."""
    pieces: list[str] = []

    async def consume():
        async for piece in provider.stream(model=model, messages=MESSAGES, result=StreamResult()):
            pieces.append(piece)

    task = asyncio.create_task(consume())
    record = (await fake.wait_for_requests_async(1))[0]
    await asyncio.sleep(0.1)  # let the request reach its wait (the fake recorded it on arrival)
    assert not task.done() and not record.completed
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await record.wait_disconnected_async(5), "the fake upstream never saw the client leave"
    assert pieces == [] and not record.completed
    seconds = record.disconnected_at - cancelled_at
    print(f"\nstop to the upstream seeing the connection closed: {1000 * seconds:.1f} ms")
    return record, seconds


@pytest.mark.parametrize(
    "model",
    ["fake?tokens=3&ttft=30", "fake?tokens=3&fault=stall"],
    ids=["before the head", "head sent, body pending"],
)
async def test_cancelling_a_pending_whole_answer_closes_the_connection_at_once(fake, model):
    record, seconds = await _cancel_while_pending(fake, openai(fake), model)

    # Closed by the client, not waited out: the answer was due in 30 s, or never.
    assert seconds < 2.0
    assert record.text_sent == ""


# --- OpenAI-compatible, a stream request answered with JSON -----------------------


async def test_a_stream_request_answered_with_json_is_read_as_the_whole_answer(fake):
    pieces, result, error = await collect(
        openai(fake, stream=True), "fake?tokens=3&rate=0&fault=json&reasoning=think&thoughts=4", MESSAGES
    )

    assert error is None
    assert pieces == [THOUGHTS, WORDS3] and type(pieces[0]) is Reasoning
    assert (result.completion_tokens, result.finish_reason, result.streamed) == (7, "stop", False)
    assert fake.wait_for_requests(1)[0].body["stream"] is True


async def test_a_stream_request_answered_200_with_a_json_error_body_is_an_upstream_error(fake):
    pieces, _, error = await collect(openai(fake, stream=True), "fake?fault=json_error", MESSAGES)

    assert pieces == [] and error is not None
    assert error.kind == "upstream_error" and error.detail == "the fake upstream injected an error"


@pytest.mark.parametrize(
    "data",
    [[1, 2], {"object": "list", "data": []}, {"choices": []}, {"choices": [{"index": 0}]}],
    ids=["not an object", "a model list", "no choices", "no message"],
)
def test_json_that_is_no_completion_is_an_answer_chatsite_cannot_read(data):
    with pytest.raises(ProviderError) as raised:
        openai_answer(data, StreamResult())

    assert (raised.value.kind, raised.value.cause) == ("upstream_error", "malformed")


def test_json_that_is_no_message_is_an_anthropic_answer_chatsite_cannot_read():
    with pytest.raises(ProviderError) as raised:
        anthropic_answer({"type": "completion", "completion": "hi"}, StreamResult())

    assert (raised.value.kind, raised.value.cause) == ("upstream_error", "malformed")


# --- Anthropic --------------------------------------------------------------------


async def test_a_non_streaming_anthropic_request_gets_the_whole_answer_as_one_piece(fake):
    pieces, result, error = await collect(anthropic(fake), "fake?tokens=3&rate=0", MESSAGES)

    assert error is None
    assert pieces == [WORDS3]
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (
        PROMPT_WORDS,
        3,
        "end_turn",
    )
    assert result.streamed is False
    assert "stream" not in fake.wait_for_requests(1)[0].body


async def test_a_whole_anthropic_answer_cut_by_max_tokens_says_so(fake):
    pieces, result, _ = await collect(anthropic(fake), "fake?tokens=10&rate=0", MESSAGES, max_tokens=2)

    assert pieces == ["w0 w1 "] and result.finish_reason == "max_tokens"


async def test_a_whole_anthropic_answers_thinking_comes_first_with_its_signature(fake):
    provider = anthropic(fake, THINKING_BUDGET=1024)
    model = "fake?tokens=3&rate=0&reasoning=thinking&thoughts=4"
    pieces, result, error = await collect(provider, model, MESSAGES)

    assert error is None
    assert pieces == [THOUGHTS, WORDS3] and type(pieces[0]) is Reasoning
    assert result.extra["reasoning_signature"] == FAKE_SIGNATURE
    assert result.completion_tokens == 3 + 4


async def test_a_whole_anthropic_answers_redacted_thinking_is_hidden_reasoning(fake):
    provider = anthropic(fake, THINKING_BUDGET=1024)
    pieces, _, error = await collect(provider, "fake?tokens=3&rate=0&reasoning=redacted", MESSAGES)

    assert error is None
    assert type(pieces[0]) is RedactedReasoning and pieces[1:] == [WORDS3]


@pytest.mark.parametrize(
    ("model", "kind", "retryable"),
    [
        ("fake?status=429", "rate_limited", True),
        ("fake?status=529", "upstream_http", True),
        ("fake?fault=json_error", "upstream_error", True),  # overloaded_error
    ],
)
async def test_anthropic_errors_of_a_whole_answer_map_as_a_streams_do(fake, model, kind, retryable):
    pieces, _, error = await collect(anthropic(fake), model, MESSAGES)

    assert pieces == [] and error is not None
    assert (error.kind, error.retryable) == (kind, retryable)


async def test_an_anthropic_stream_request_answered_with_json_is_read_as_the_whole_answer(fake):
    provider = anthropic(fake, stream=True)
    pieces, result, error = await collect(provider, "fake?tokens=3&rate=0&fault=json", MESSAGES)

    assert error is None
    assert pieces == [WORDS3] and result.finish_reason == "end_turn" and result.completion_tokens == 3
    assert fake.wait_for_requests(1)[0].body["stream"] is True


async def test_an_anthropic_stream_request_answered_200_with_an_error_body_is_overloaded(fake):
    _, _, error = await collect(anthropic(fake, stream=True), "fake?fault=json_error", MESSAGES)

    assert error is not None and (error.kind, error.cause) == ("upstream_error", "overloaded")


async def test_cancelling_a_pending_anthropic_answer_closes_the_connection_at_once(fake):
    _, seconds = await _cancel_while_pending(fake, anthropic(fake), "fake?tokens=3&ttft=30")

    assert seconds < 2.0


def test_the_settings_reach_the_built_providers(fake, settings):
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": fake.openai_base_url,
        },
        "whole": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": fake.openai_base_url,
            "STREAM": False,
        },
    }
    settings.CHATSITE_NON_STREAMING_MODELS = ["openai/batch-*"]

    assert get_provider("openai").streams(model="fake")
    assert not get_provider("openai").streams(model="batch-1")
    assert not get_provider("whole").streams(model="fake")


async def test_a_server_that_streams_although_asked_not_to_is_read_as_the_stream_it_is(fake):
    pieces, result, error = await collect(openai(fake), "fake?tokens=3&rate=0&fault=sse", MESSAGES)

    assert error is None
    assert pieces == ["w0 ", "w1 ", "w2 "] and result.finish_reason == "stop" and result.streamed
    record = fake.wait_for_requests(1)[0]
    assert record.body["stream"] is False and record.headers["accept"] == "application/json"


async def test_an_anthropic_server_that_streams_although_asked_not_to_is_read_as_the_stream_it_is(fake):
    pieces, result, error = await collect(anthropic(fake), "fake?tokens=3&rate=0&fault=sse", MESSAGES)

    assert error is None
    assert pieces == ["w0 ", "w1 ", "w2 "] and result.finish_reason == "end_turn"
    assert "stream" not in fake.wait_for_requests(1)[0].body
