"""One rule for a conversation's automatic title, wherever a conversation is
made (a send, one send of a batch, an imported ChatGPT conversation without a
title), and one limit for any title."""

from __future__ import annotations

import json

import pytest

from conversations.exceptions import InvalidTitle
from conversations.models import Conversation
from conversations.services import exchanges as exchange_services
from conversations.services.conversations import (
    AUTO_TITLE_CHARS,
    TITLE_MAX_CHARS,
    title_auto,
    title_clean,
    title_shorten,
)
from conversations.transfer import importing

pytestmark = pytest.mark.django_db(transaction=True)

LONG = "How do I\n\n  reverse a list in Python without copying it, and what does it cost for a large one?"


def test_the_automatic_title_is_the_words_on_one_line_cut_to_60_characters():
    title = title_auto(text=LONG)
    assert AUTO_TITLE_CHARS == 60 and len(title) == 60 and title.endswith("…")
    assert title.startswith("How do I reverse a list in Python") and "\n" not in title
    assert title_auto(text="  short\tone ") == "short one"


def test_a_cut_title_loses_the_spaces_before_its_ellipsis():
    assert title_shorten(text="abc de" + "f" * 10, limit=5) == "abc…"


def test_no_title_is_longer_than_the_field_holds():
    assert TITLE_MAX_CHARS == Conversation._meta.get_field("title").max_length
    assert title_clean(title="é" * TITLE_MAX_CHARS) == "é" * TITLE_MAX_CHARS
    with pytest.raises(InvalidTitle):
        title_clean(title="é" * (TITLE_MAX_CHARS + 1))


def _request(user, text: str) -> exchange_services.ExchangeRequest:
    return exchange_services.ExchangeRequest(
        user=user,
        conversation_id=None,
        client_id=f"c-{text[:8]}",
        text=text,
        model="openai/m",
        provider="openai",
    )


def test_a_send_and_a_batched_send_title_their_conversation_by_the_same_rule(alice):
    one = exchange_services.exchange_start(**vars_of(_request(alice, LONG)))
    (batched,) = exchange_services.exchange_start_many(requests=[_request(alice, "Batched: " + LONG)])
    assert one.conversation.title == title_auto(text=LONG)
    assert batched.conversation.title == title_auto(text="Batched: " + LONG)


def vars_of(request: exchange_services.ExchangeRequest) -> dict:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_an_imported_conversation_without_a_title_is_titled_by_the_same_rule(alice):
    chatgpt = [
        {
            "title": None,
            "mapping": {
                "root": {"id": "root", "message": None, "parent": None, "children": ["u"]},
                "u": {
                    "id": "u",
                    "parent": "root",
                    "children": [],
                    "message": {
                        "author": {"role": "user"},
                        "content": {"content_type": "text", "parts": [LONG]},
                        "create_time": 1700000000,
                    },
                },
            },
        }
    ]
    result = importing.conversations_import(user=alice, data=json.dumps(chatgpt).encode())
    (conversation,) = result.conversations
    assert conversation.title == title_auto(text=LONG) and conversation.title_is_auto
