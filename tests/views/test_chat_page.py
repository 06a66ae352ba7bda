"""The chat page's embedded data: what the page needs at once, and only once."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import Client

from conversations.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


def page_data(html: str) -> dict:
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page embeds its data"
    return json.loads(found.group(1))


def test_the_page_embeds_the_lists_first_page_as_the_history_endpoint_answers_it(alice):
    for n in range(53):
        Conversation.objects.create(
            user=alice, title=f"chat {n}", model="openai/fake", client_id=uuid.uuid4().hex, system_prompt="x"
        )
    client = Client()
    client.force_login(alice)
    embedded = page_data(client.get("/").content.decode())["history"]
    answered = client.get("/api/history/").json()
    # The same page, with its cursor, so the sidebar asks only for the pages after it;
    # the groups are the browser's to make (it knows its time zone), and no settings ride along.
    without_groups = [{k: v for k, v in c.items() if k != "group"} for c in answered["conversations"]]
    assert embedded == {"conversations": without_groups, "next_cursor": answered["next_cursor"]}
    assert len(embedded["conversations"]) == 50 and embedded["next_cursor"]
    assert all("system_prompt" not in c for c in embedded["conversations"])
    following = client.get("/api/history/", {"cursor": embedded["next_cursor"]}).json()
    assert len(following["conversations"]) == 3
