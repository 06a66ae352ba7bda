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
    conversation_title_claim,
    conversation_title_generated,
    conversation_title_release,
    conversation_update,
    title_auto,
    title_clean,
    title_from_model,
    title_shorten,
)
from conversations.transfer import importing
from tests import factories
from tests.chatsite.test_environment import _settings_of

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


# --- Titles made by a model (conversations/realtime/titles.py) --------------------


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ("Reversing a List in Python", "Reversing a List in Python"),
        ('Title: "Reversing a List in Python"', "Reversing a List in Python"),
        ("**Trip to Zanzibar**\n", "Trip to Zanzibar"),
        ("## `git rebase` explained.", "git rebase explained"),
        ("Sure! Here is a title:\n\n“Budget for 2027”", "Budget for 2027"),
        ("Chat title - Sourdough starter", "Sourdough starter"),
        ("- Cats vs dogs\n- Pets", "Cats vs dogs"),
        ("«Voyage à Paris»", "Voyage à Paris"),
        ("<think>The user asks about lists.\nShort title:</think>\n\nList reversal", "List reversal"),
        ("the user asks about lists</think>List reversal", "List reversal"),  # opening tag not sent
        ("Line one\nLine two", "Line one"),
        ("Tabs\tand   spaces\x00\x1b[31m", "Tabs and spaces[31m"),
        ("Why is the sky blue?", "Why is the sky blue?"),
        ("Here is <b>bold</b>", "Here is <b>bold</b>"),  # text: the page never reads it as HTML
        ("__init__ methods", "__init__ methods"),
        ("A" * 80, "A" * 59 + "…"),  # cut like a first-line title
    ],
)
def test_a_models_answer_is_cleaned_into_one_short_line(answer, title):
    assert title_from_model(text=answer) == title
    assert len(title) <= AUTO_TITLE_CHARS


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   \n\n",
        "...",
        '""',
        "<think>still thinking when the tokens ran out",
        "word " * 30,
        "**",
        "\x00\x01",
    ],
)
def test_an_answer_with_no_title_in_it_gives_none(answer):
    assert title_from_model(text=answer) is None


def test_the_title_write_is_conditional_so_a_rename_always_wins(alice):
    conv = factories.conversation(alice, "First line")
    assert conversation_title_claim(conversation_id=conv.pk, user_id=alice.pk)
    assert not conversation_title_claim(conversation_id=conv.pk, user_id=alice.pk)  # asked once
    # The user renames it while the model is making its title.
    conversation_update(user=alice, conversation_id=conv.pk, title="Mine")
    assert not conversation_title_generated(conversation_id=conv.pk, user_id=alice.pk, title="Made")
    conv.refresh_from_db()
    assert (conv.title, conv.title_is_auto) == ("Mine", False)


def test_a_title_is_written_for_its_owner_only_and_is_no_activity(alice, bob):
    conv = factories.conversation(alice, "First line")
    before = conv.updated_at
    assert not conversation_title_claim(conversation_id=conv.pk, user_id=bob.pk)
    assert not conversation_title_generated(conversation_id=conv.pk, user_id=bob.pk, title="Bob's")
    assert conversation_title_claim(conversation_id=conv.pk, user_id=alice.pk)
    assert conversation_title_generated(conversation_id=conv.pk, user_id=alice.pk, title="Made\nby a model")
    conv.refresh_from_db()
    assert (conv.title, conv.title_is_auto, conv.title_generated) == ("Made by a model", True, True)
    assert conv.updated_at == before
    conversation_title_release(conversation_id=conv.pk, user_id=alice.pk)
    assert conversation_title_claim(conversation_id=conv.pk, user_id=alice.pk)  # may be asked again


def test_titles_are_on_by_default_and_the_title_model_must_name_a_configured_provider(tmp_path):
    env = {"CHATSITE_DATA_DIR": str(tmp_path), "CHATSITE_AUTO_TITLES": "", "CHATSITE_LOCAL_MODEL": "off"}
    shown = _settings_of(
        {**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "CHATSITE_TITLE_MODEL": "openai/gpt-4o-mini"},
        "settings.CHATSITE_AUTO_TITLES",
        "settings.CHATSITE_TITLE_MODEL",
        "settings.CHATSITE_TITLE_TIMEOUT",
        "settings.CHATSITE_TITLE_BUSY_REPLIES",
    )
    assert shown.stdout.split() == ["True", "'openai/gpt-4o-mini'", "20.0", "8"], shown.stderr
    for wrong in ("anthropic/claude", "gpt-4o-mini", "openai/"):
        refused = _settings_of(
            {**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "CHATSITE_TITLE_MODEL": wrong}, "1"
        )
        assert refused.returncode != 0
        assert "CHATSITE_TITLE_MODEL must be '<provider>/<model id>' with a configured provider (openai)" in (
            refused.stderr
        ), wrong
    off = _settings_of({**env, "CHATSITE_AUTO_TITLES": "off"}, "settings.CHATSITE_AUTO_TITLES")
    assert off.stdout.split() == ["False"]


def test_a_title_made_by_a_model_is_found_by_search(alice):
    from conversations.search import search_messages

    conv = factories.conversation(alice, "First line")
    assert conversation_title_generated(conversation_id=conv.pk, user_id=alice.pk, title="Zanzibar itinerary")
    hits = search_messages(user=alice, query="zanzibar")
    assert [(hit.conversation_id, hit.kind) for hit in hits] == [(conv.pk, "title")]
