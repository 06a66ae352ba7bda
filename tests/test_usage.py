"""Usage totals per conversation and per user and model, and their estimated cost."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from conversations import pricing, selectors
from tests import factories

pytestmark = pytest.mark.django_db

PRICES = {
    "openai/gpt-4o": {"input": "2.50", "output": "10.00"},
    "openai/gpt-4o*": {"input": "1", "output": "2"},
    "anthropic/*": {"input": "3", "output": "15"},
}


def reply(
    conversation, *, model="gpt-4o", provider="openai", status="complete", prompt=0, completion=0, **extra
):
    return factories.message(
        conversation,
        "answer",
        role="assistant",
        provider=provider,
        model=model,
        status=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        **extra,
    )


def test_a_price_is_the_models_own_else_the_most_specific_glob_else_none():
    table = pricing.price_table(prices=PRICES)
    assert pricing.price_for(model="openai/gpt-4o", prices=table) == pricing.ModelPrice(
        Decimal("2.50"), Decimal("10.00")
    )
    assert pricing.price_for(model="openai/gpt-4o-mini", prices=table).output == Decimal(2)
    assert pricing.price_for(model="anthropic/claude-x", prices=table).input == Decimal(3)
    assert pricing.price_for(model="local/SmolLM2", prices=table) is None
    cost = pricing.cost_estimate(price=table["openai/gpt-4o"], prompt_tokens=1000, completion_tokens=500)
    assert cost == Decimal("0.007500")  # 1000 * 2.5 / 1e6 + 500 * 10 / 1e6


def test_conversation_totals_sum_its_replies_per_model_with_the_stopped_ones_apart(settings):
    settings.CHATSITE_MODEL_PRICES = PRICES
    alice = factories.user("alice")
    chat = factories.conversation(alice)
    reply(chat, prompt=100, completion=40)
    reply(chat, status="stopped", prompt=120, completion=7, usage_counted=True)
    reply(chat, status="error", prompt=90, completion=0)
    reply(chat, model="SmolLM2", provider="local", prompt=10, completion=5, usage_counted=True)
    factories.message(chat, "a question")  # user messages use nothing
    other = factories.conversation(alice)
    reply(other, prompt=1_000_000, completion=1_000_000)  # another conversation's

    usage = selectors.usage_conversation(user=alice, conversation_id=chat.pk)
    total = usage.total
    assert (total.replies, total.prompt_tokens, total.completion_tokens) == (4, 320, 52)
    assert total.by_status == {"complete": 2, "stopped": 1, "error": 1}
    assert total.counted_replies == 2
    assert (total.stopped_replies, total.stopped_prompt_tokens, total.stopped_completion_tokens) == (
        1,
        120,
        7,
    )
    # gpt-4o: 310 prompt * 2.5 + 47 completion * 10, per million; the local model has no price.
    assert total.cost == Decimal("0.001245")
    assert total.stopped_cost == Decimal("0.000370")
    assert total.unpriced_models == ["local/SmolLM2"]
    assert [(m.model, m.replies) for m in usage.models] == [("openai/gpt-4o", 3), ("local/SmolLM2", 1)]


def test_with_no_prices_configured_there_is_no_cost_only_tokens(settings):
    settings.CHATSITE_MODEL_PRICES = {}
    alice = factories.user("alice")
    chat = factories.conversation(alice)
    reply(chat, prompt=10, completion=3)
    usage = selectors.usage_conversation(user=alice, conversation_id=chat.pk)
    assert usage.total.cost is None and usage.total.completion_tokens == 3
    assert usage.total.unpriced_models == ["openai/gpt-4o"]


def test_a_continued_replys_earlier_parts_count_too():
    alice = factories.user("alice")
    chat = factories.conversation(alice)
    segment = {"status": "stopped", "prompt_tokens": 50, "completion_tokens": 9}
    reply(chat, prompt=60, completion=20, segments=[segment])
    total = selectors.usage_conversation(user=alice, conversation_id=chat.pk).total
    assert (total.replies, total.prompt_tokens, total.completion_tokens) == (1, 110, 29)
    assert (total.stopped_prompt_tokens, total.stopped_completion_tokens) == (50, 9)


def test_another_users_conversation_has_no_usage_to_read():
    alice, bob = factories.user("alice"), factories.user("bob")
    chat = factories.conversation(alice)
    reply(chat, prompt=1, completion=1)
    assert selectors.usage_conversation(user=bob, conversation_id=chat.pk) is None


def test_totals_per_user_and_model_keep_to_the_date_range(settings):
    settings.CHATSITE_MODEL_PRICES = PRICES
    alice, bob = factories.user("alice"), factories.user("bob")
    day = factories.BASE.date()
    a, b = factories.conversation(alice), factories.conversation(bob)
    reply(a, prompt=10, completion=10, created_at=factories.at(0))
    reply(a, prompt=5, completion=1, status="stopped", created_at=factories.at(60 * 24))  # the next day
    reply(a, model="claude-x", provider="anthropic", prompt=1000, completion=100, created_at=factories.at(1))
    reply(b, prompt=7, completion=3, created_at=factories.at(-60 * 24))  # the day before

    rows = selectors.usage_by_user_model(since=day, until=day)
    assert [(r.username, r.model, r.replies, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("alice", "anthropic/claude-x", 1, 1000, 100),
        ("alice", "openai/gpt-4o", 1, 10, 10),
    ]
    assert rows[0].cost == Decimal("0.004500")
    every = selectors.usage_by_user_model()
    assert [(r.username, r.model, r.replies) for r in every] == [
        ("alice", "anthropic/claude-x", 1),
        ("alice", "openai/gpt-4o", 2),
        ("bob", "openai/gpt-4o", 1),
    ]
    assert every[1].by_status == {"complete": 1, "stopped": 1} and every[1].stopped_completion_tokens == 1
    later = selectors.usage_by_user_model(since=day + timedelta(days=1))
    assert [(r.username, r.replies) for r in later] == [("alice", 1)]
    assert selectors.usage_by_user_model(since=date(2030, 1, 1)) == []
