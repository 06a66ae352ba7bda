"""Reasoning in each dialect: OpenAI-compatible delta fields, inline <think>, and
Anthropic's thinking blocks, through the providers against the fake upstream."""

from __future__ import annotations

import random

import pytest

from conversations.prompt import ChatMessage
from conversations.providers.anthropic import AnthropicProvider
from conversations.providers.base import CommonOptions
from conversations.providers.openai import OpenAIProvider
from conversations.providers.reasoning import Reasoning, RedactedReasoning, ThinkSplitter
from conversations.testing.fakeupstream import FAKE_SIGNATURE

from .streaming import collect

MESSAGES = [ChatMessage("user", "Think, then say hello")]
THOUGHTS = "".join(f"t{i} " for i in range(8))
ANSWER = "".join(f"w{i} " for i in range(5))


def split(pieces: list[str]) -> tuple[str, str]:
    """(reasoning, answer) of a stream's pieces."""
    reasoning = "".join(p for p in pieces if isinstance(p, Reasoning))
    answer = "".join(p for p in pieces if not isinstance(p, Reasoning))
    return reasoning, answer


def openai(fake) -> OpenAIProvider:
    return OpenAIProvider("openai", {"BASE_URL": fake.openai_base_url, "API_KEY": "sk-test", "MODELS": []})


def anthropic(fake, budget: int = 2048, **common) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic",
        {
            "BASE_URL": fake.anthropic_base_url,
            "API_KEY": "sk-ant-test",
            "MODELS": [],
            "THINKING_BUDGET": budget,
        },
        CommonOptions(**common),
    )


@pytest.mark.parametrize("dialect", ["reasoning_content", "reasoning", "think"])
async def test_openai_compatible_reasoning_is_split_from_the_answer(fake, dialect):
    pieces, result, error = await collect(openai(fake), f"fake?tokens=5&rate=0&reasoning={dialect}", MESSAGES)

    assert error is None
    record = fake.wait_for_requests(1)[0]
    assert split(pieces) == (THOUGHTS, ANSWER) == (record.reasoning_sent, record.text_sent)
    # Every reasoning piece comes before the first answer piece; answer pieces are plain str.
    kinds = [isinstance(p, Reasoning) for p in pieces]
    assert kinds == sorted(kinds, reverse=True)
    assert all(type(p) is str for p in pieces if not isinstance(p, Reasoning))
    assert result.finish_reason == "stop"


async def test_a_stream_without_reasoning_yields_plain_strings_only(fake):
    pieces, _, error = await collect(openai(fake), "fake?tokens=5&rate=0", MESSAGES)
    assert error is None
    assert "".join(pieces) == ANSWER and all(type(p) is str for p in pieces)


def feed_all(chunks: list[str]) -> list[str]:
    splitter = ThinkSplitter()
    out: list[str] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.end()


def cut(text: str, rng: random.Random) -> list[str]:
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, 4)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def test_think_tags_cut_anywhere_across_chunks_are_split_out():
    text = "\n<think>Let me see: 2 < 3, and </thin is not a tag.</think>\n\nThe answer is **yes**."
    rng = random.Random(12)
    for _ in range(200):
        out = feed_all(cut(text, rng))
        assert split(out) == ("Let me see: 2 < 3, and </thin is not a tag.", "The answer is **yes**.")
    # One character at a time, too.
    assert split(feed_all(list(text)))[0] == "Let me see: 2 < 3, and </thin is not a tag."


def test_a_think_tag_inside_a_code_block_or_later_in_the_answer_is_left_alone():
    code = "Here is the template:\n```html\n<think>placeholder</think>\n```\n"
    assert split(feed_all(cut(code, random.Random(3)))) == ("", code)
    fenced_first = "```\n<think>x</think>\n```"
    assert split(feed_all(list(fenced_first))) == ("", fenced_first)
    # Not a tag at all, just text starting with "<thi".
    assert split(feed_all(["<thi", "s is bold>"])) == ("", "<this is bold>")
    assert split(feed_all(["<thi"])) == ("", "<thi")


def test_an_unclosed_think_is_all_reasoning():
    assert split(feed_all(["<think>still ", "thinking </thi"])) == ("still thinking </thi", "")


async def test_anthropic_extended_thinking(fake):
    provider = anthropic(fake)
    pieces, result, error = await collect(
        provider, "fake?tokens=5&rate=0&reasoning=thinking", MESSAGES, max_tokens=500, temperature=0.3
    )

    assert error is None
    record = fake.wait_for_requests(1)[0]
    # Thinking on: a budget, max_tokens above it, and no temperature but 1 (the API's rules).
    assert record.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert record.body["max_tokens"] == 2048 + 500
    assert "temperature" not in record.body
    assert split(pieces) == (THOUGHTS, ANSWER)
    assert result.extra["reasoning_signature"] == FAKE_SIGNATURE


async def test_anthropic_redacted_thinking_is_marked(fake):
    pieces, _, error = await collect(anthropic(fake), "fake?tokens=3&rate=0&reasoning=redacted", MESSAGES)
    assert error is None
    assert isinstance(pieces[0], RedactedReasoning) and pieces[0] == ""
    assert split(pieces) == ("", "w0 w1 w2 ")


async def test_anthropic_thinking_per_model_and_off(fake):
    # A per-model budget wins over the provider's; 0 turns it off.
    off = anthropic(fake, budget=4096, thinking_budget_models={"anthropic/fake?reasoning=thinking": 0})
    pieces, _, error = await collect(off, "fake?reasoning=thinking", MESSAGES, temperature=0.3)
    assert error is None
    record = fake.wait_for_requests(1)[0]
    assert "thinking" not in record.body and record.body["temperature"] == 0.3
    assert split(pieces)[0] == ""
    # A budget below the API's least is raised to it.
    small = anthropic(fake, budget=100)
    _, _, error = await collect(small, "fake?tokens=2&rate=0&reasoning=thinking", MESSAGES)
    assert error is None
    assert fake.wait_for_requests(2)[1].body["thinking"]["budget_tokens"] == 1024


async def test_anthropic_continuation_does_not_turn_thinking_on(fake):
    # Prefilling the answer is refused with thinking on: a continuation asks without it.
    messages = [*MESSAGES, ChatMessage("assistant", "Hello th")]
    pieces, _, error = await collect(anthropic(fake), "fake?tokens=2&rate=0&reasoning=thinking", messages)
    assert error is None
    assert "thinking" not in fake.wait_for_requests(1)[0].body
    assert split(pieces) == ("", "w0 w1 ")


async def test_the_fake_refuses_what_the_anthropic_api_refuses_with_thinking(fake):
    import httpx

    async with httpx.AsyncClient() as client:
        base = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        cases = [
            ({"max_tokens": 1000, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "max_tokens"),
            ({"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 100}}, "1024"),
            (
                {
                    "max_tokens": 3000,
                    "temperature": 0.5,
                    "thinking": {"type": "enabled", "budget_tokens": 1024},
                },
                "temperature",
            ),
        ]
        for extra, words in cases:
            response = await client.post(
                f"{fake.anthropic_base_url}/v1/messages", json={**base, **extra}, headers=headers
            )
            assert response.status_code == 400
            assert words in response.json()["error"]["message"]
