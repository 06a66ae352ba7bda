"""The admin's usage page: staff see every user's totals per model for the chosen days."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests import factories

pytestmark = pytest.mark.django_db


def staff(username: str):
    someone = factories.user(username)
    get_user_model().objects.filter(pk=someone.pk).update(is_staff=True)
    return someone


def reply(conversation, minutes: float, **fields):
    return factories.message(
        conversation,
        "x",
        role="assistant",
        provider="openai",
        model="gpt-4o",
        created_at=factories.at(minutes),
        **fields,
    )


def test_staff_see_totals_per_user_and_model_for_the_chosen_days(settings):
    settings.CHATSITE_MODEL_PRICES = {"openai/gpt-4o": {"input": "2.5", "output": "10"}}
    admin, alice, bob = staff("root"), factories.user("alice"), factories.user("bob")
    reply(factories.conversation(alice), 0, status="complete", prompt_tokens=1000, completion_tokens=100)
    reply(factories.conversation(alice), 5, status="stopped", prompt_tokens=1000, completion_tokens=3)
    reply(factories.conversation(bob), 60 * 24 * 3, status="complete", prompt_tokens=9, completion_tokens=9)
    client = factories.logged_in(admin)

    index = client.get("/admin/")
    assert index.status_code == 200 and b'href="/admin/usage/"' in index.content

    day = factories.BASE.date().isoformat()
    page = client.get("/admin/usage/", {"since": day, "until": day})
    assert page.status_code == 200
    rows = page.context["rows"]
    assert [(r["username"], r["model"], r["replies"], r["completion_tokens"]) for r in rows] == [
        ("alice", "openai/gpt-4o", 2, 103)
    ]
    assert rows[0]["by_status"][:2] == [1, 1]  # complete, stopped
    assert rows[0]["cost"] == "0.006030" and rows[0]["stopped_cost"] == "0.002530"
    assert b"alice" in page.content and b"bob" not in page.content

    everything = client.get("/admin/usage/")
    assert [r["username"] for r in everything.context["rows"]] == ["alice", "bob"]
    assert everything.context["total"]["replies"] == 3


def test_a_bad_date_is_named_and_left_out():
    client = factories.logged_in(staff("root"))
    page = client.get("/admin/usage/", {"since": "yesterday"})
    assert page.status_code == 200
    assert page.context["problems"] and "yesterday" in page.context["problems"][0]


def test_users_who_are_not_staff_are_sent_to_the_admin_login():
    client = factories.logged_in(factories.user("alice"))
    answer = client.get("/admin/usage/")
    assert answer.status_code == 302 and answer["Location"].startswith("/admin/login/")
