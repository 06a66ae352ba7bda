"""GET /api/conversations/<id>/usage/: the owner's totals, nobody else's."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db


def test_the_owner_reads_the_conversations_usage_with_an_estimated_cost(settings):
    settings.CHATSITE_MODEL_PRICES = {"openai/*": {"input": "1", "output": "4"}}
    alice = factories.user("alice")
    chat = factories.conversation(alice)
    for status, completion in (("complete", 30), ("stopped", 6)):
        factories.message(
            chat,
            "x",
            role="assistant",
            provider="openai",
            model="fake",
            status=status,
            prompt_tokens=100,
            completion_tokens=completion,
            usage_counted=status == "stopped",
        )
    answer = factories.logged_in(alice).get(f"/api/conversations/{chat.pk}/usage/")
    assert answer.status_code == 200
    body = answer.json()
    assert body["conversation"] == str(chat.pk)
    assert (body["replies"], body["prompt_tokens"], body["completion_tokens"]) == (2, 200, 36)
    assert body["by_status"] == {"complete": 1, "stopped": 1}
    assert body["counted_replies"] == 1
    assert body["cost"] == "0.000344" and body["cost_is_estimate"] is True
    assert body["stopped"] == {"replies": 1, "prompt_tokens": 100, "completion_tokens": 6, "cost": "0.000124"}
    assert body["unpriced_models"] == []
    assert [m["model"] for m in body["models"]] == ["openai/fake"]


def test_another_users_conversation_answers_exactly_like_a_missing_one():
    alice, bob = factories.user("alice"), factories.user("bob")
    chat = factories.conversation(alice)
    client = factories.logged_in(bob)
    foreign = client.get(f"/api/conversations/{chat.pk}/usage/")
    missing = client.get(f"/api/conversations/{uuid.uuid4()}/usage/")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"error": "not_found", "message": missing.json()["message"]}


def test_without_a_login_the_usage_is_refused_in_the_error_envelope():
    alice = factories.user("alice")
    chat = factories.conversation(alice)
    answer = Client().get(f"/api/conversations/{chat.pk}/usage/")
    assert answer.status_code == 401 and answer.json()["error"] == "not_authenticated"
