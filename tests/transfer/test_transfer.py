"""Export and import: chatsite JSON round trips, Markdown, ChatGPT exports, hostile files."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import AsyncClient, Client

from conversations import selectors
from conversations.exceptions import ImportRejected
from conversations.models import Conversation, Message
from conversations.transfer import importing
from conversations.transfer.exporting import (
    conversation_export_json,
    conversation_export_markdown,
    user_export_json_chunks,
)
from tests import factories
from tests.factories import at, branchy_conversation, logged_in, plain_conversation

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "chatgpt"


# --- Building conversations (tests/factories.py) --------------------------------------------


@pytest.fixture
def ann(db):
    return factories.user("ann")


@pytest.fixture
def ben(db):
    return factories.user("ben")


def export_of(user) -> dict:
    return json.loads("".join(user_export_json_chunks(user=user)))


def normalized(document: dict) -> list[dict]:
    """The export with ids replaced by positions: what must survive a round trip."""
    out = []
    for conversation in document["conversations"]:
        position = {m["id"]: n for n, m in enumerate(conversation["messages"])}
        conversation = {k: v for k, v in conversation.items() if k != "id"}
        leaf = conversation["active_leaf"]
        conversation["active_leaf"] = position[leaf] if leaf else None
        conversation["messages"] = [
            {**m, "id": position[m["id"]], "parent": position[m["parent"]] if m["parent"] else None}
            for m in conversation["messages"]
        ]
        out.append(conversation)
    return out


def streamed(response) -> bytes:
    """The body of a streamed (async) download, read from a synchronous test."""

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def everything() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


def upload(client: Client, data: bytes, name: str = "export.json"):
    return client.post("/import/", {"file": SimpleUploadedFile(name, data, "application/json")})


def dumps(document) -> bytes:
    return json.dumps(document).encode()


# --- chatsite JSON: export and round trip -----------------------------------------------


def test_the_json_export_holds_every_branch_in_a_documented_shape(ann):
    c = branchy_conversation(ann)
    document = json.loads(conversation_export_json(conversation=c))
    assert document["format"] == "chatsite" and document["version"] == 1
    datetime.fromisoformat(document["exported_at"])
    [exported] = document["conversations"]
    assert exported["id"] == str(c.pk)
    assert exported["title"] == "Sorting in Python" and exported["title_is_auto"] is False
    assert exported["system_prompt"] == "You are terse."
    assert (exported["temperature"], exported["max_tokens"], exported["pinned"]) == (0.7, 512, True)
    assert exported["created_at"] == at(0).isoformat() and exported["updated_at"] == at(7.5).isoformat()
    messages = exported["messages"]
    assert len(messages) == 8 == c.messages.count()
    seen: set[str] = set()
    for m in messages:  # parents always come first
        assert m["parent"] is None or m["parent"] in seen
        seen.add(m["id"])
    assert exported["active_leaf"] == messages[-1]["id"]
    first_reply = messages[1]
    assert first_reply == {
        "id": first_reply["id"],
        "parent": messages[0]["id"],
        "role": "assistant",
        "content": "Use `sorted()`.",
        "created_at": at(1).isoformat(),
        "status": "complete",
        "error_kind": None,
        "error": None,
        "provider": "openai",
        "model": "fake",
        "finish_reason": "stop",
        "finished_at": at(1.5).isoformat(),
        "last_seq": 3,
        "metrics": {
            "ttft_ms": 120.5,
            "tokens_per_s": 42.25,
            "total_ms": 900.0,
            "first_answer_ms": None,
            "reasoning_ms": None,
        },
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "counted": True},
        "segments": [],
        "reasoning": "",
        "reasoning_redacted": False,
        "reasoning_signature": None,
    }
    assert messages[0] == {
        "id": messages[0]["id"],
        "parent": None,
        "role": "user",
        "content": "How do I sort a list?",
        "created_at": at(0).isoformat(),
    }
    assert [m["status"] for m in messages if m["role"] == "assistant"] == [
        "complete",
        "error",
        "stopped",
        "complete",
        "interrupted",
    ]


def test_export_then_import_round_trips_exactly_branches_included(ann, ben):
    branchy_conversation(ann)
    plain_conversation(ann, title="Archived one", minutes=60, archived=True)
    empty = Conversation.objects.create(user=ann, client_id="empty", title="Nothing yet", model="openai/fake")
    Conversation.objects.filter(pk=empty.pk).update(created_at=at(90), updated_at=at(90))
    original = export_of(ann)

    result = importing.conversations_import(user=ben, data=dumps(original))

    assert result.source == "chatsite" and len(result.conversations) == 3 and result.skipped == []
    copied = export_of(ben)
    assert normalized(copied) == normalized(original)
    # New ids everywhere; the originals are untouched and still ann's.
    assert {c["id"] for c in copied["conversations"]}.isdisjoint(c["id"] for c in original["conversations"])
    assert Conversation.objects.filter(user=ann).count() == 3
    assert normalized(export_of(ann)) == normalized(original)
    # What the chat page shows: the same active branch, statuses and text.
    mine = Conversation.objects.get(user=ben, title="Sorting in Python")
    theirs = Conversation.objects.get(user=ann, title="Sorting in Python")
    shown = [(m.role, m.content, m.status) for m in selectors.message_list(conversation=mine)]
    assert shown == [(m.role, m.content, m.status) for m in selectors.message_list(conversation=theirs)]
    assert [s for _, _, s in shown] == ["", "stopped", "", "interrupted"]
    assert mine.client_id.startswith("import-")
    assert not mine.messages.exclude(client_id="").exists()


def test_reasoning_is_exported_apart_from_the_answer_and_imported_back(ann, ben):
    c = plain_conversation(ann, title="Thinking", minutes=0)
    Message.objects.filter(conversation=c, role="assistant").update(
        reasoning="First, **think**.",
        reasoning_ms=12000.0,
        first_answer_ms=12100.0,
        reasoning_redacted=True,
        reasoning_signature="c2ln",
    )
    [exported] = json.loads(conversation_export_json(conversation=c))["conversations"]
    reply = next(m for m in exported["messages"] if m["role"] == "assistant")
    assert reply["reasoning"] == "First, **think**." and "think" not in reply["content"]
    assert (reply["reasoning_redacted"], reply["reasoning_signature"]) == (True, "c2ln")
    assert reply["metrics"]["reasoning_ms"] == 12000.0 and reply["metrics"]["first_answer_ms"] == 12100.0
    importing.conversations_import(user=ben, data=conversation_export_json(conversation=c).encode())
    copied = Message.objects.get(conversation__user=ben, role="assistant")
    assert (copied.reasoning, copied.reasoning_ms, copied.first_answer_ms) == (
        "First, **think**.",
        12000.0,
        12100.0,
    )
    assert (copied.reasoning_redacted, copied.reasoning_signature) == (True, "c2ln")
    assert normalized(export_of(ben)) == normalized(export_of(ann))
    # The Markdown export quotes it above the answer.
    markdown = conversation_export_markdown(conversation=c)
    assert "> **Thought for 12 s**\n>\n> First, **think**.\n>\n> _(Part of the reasoning" in markdown


def test_importing_the_same_file_twice_makes_two_copies(ann):
    branchy_conversation(ann)
    data = dumps(export_of(ann))
    importing.conversations_import(user=ann, data=data)
    importing.conversations_import(user=ann, data=data)
    assert Conversation.objects.filter(user=ann, title="Sorting in Python").count() == 3
    assert Message.objects.filter(conversation__user=ann).count() == 24


def test_a_reply_exported_while_streaming_comes_back_interrupted(ann):
    c = plain_conversation(ann, title="Live", minutes=0)
    Message.objects.filter(conversation=c, role="assistant").update(status="streaming")
    importing.conversations_import(user=ann, data=conversation_export_json(conversation=c).encode())
    copy_ = Conversation.objects.get(user=ann, title="Live", client_id__startswith="import-")
    assert copy_.messages.get(role="assistant").status == "interrupted"


def _doc(*conversations: object) -> dict:
    return {
        "format": "chatsite",
        "version": 1,
        "exported_at": at(0).isoformat(),
        "conversations": list(conversations),
    }


def _conversation(**overrides) -> dict:
    base = {
        "id": "c1",
        "title": "Hand-written",
        "model": "openai/fake",
        "created_at": at(0).isoformat(),
        "updated_at": at(3).isoformat(),
        "active_leaf": "m2",
        "messages": [
            {"id": "m1", "parent": None, "role": "user", "content": "Hi", "created_at": at(1).isoformat()},
            {
                "id": "m2",
                "parent": "m1",
                "role": "assistant",
                "content": "Hello!",
                "created_at": at(2).isoformat(),
                "status": "complete",
            },
        ],
    }
    base.update(overrides)
    return base


def test_a_system_message_in_an_import_becomes_the_system_prompt(ann):
    conversation = _conversation(active_leaf="m2")
    conversation["messages"] = [
        {
            "id": "s",
            "parent": None,
            "role": "system",
            "content": "Answer in French.",
            "created_at": at(0.5).isoformat(),
        },
        {**conversation["messages"][0], "parent": "s"},
        conversation["messages"][1],
    ]
    [c] = importing.conversations_import(user=ann, data=dumps(_doc(conversation))).conversations
    c.refresh_from_db()
    assert c.system_prompt == "Answer in French."
    assert [(m.role, m.parent_id is None) for m in selectors.message_list(conversation=c)] == [
        ("user", True),
        ("assistant", False),
    ]


def test_messages_may_come_in_any_order_and_times_are_kept(ann):
    conversation = _conversation()
    conversation["messages"].reverse()
    [c] = importing.conversations_import(user=ann, data=dumps(_doc(conversation))).conversations
    c.refresh_from_db()
    assert (c.created_at, c.updated_at) == (at(0), at(3))
    assert [(m.content, m.created_at) for m in selectors.message_list(conversation=c)] == [
        ("Hi", at(1)),
        ("Hello!", at(2)),
    ]
    assert c.title_is_auto is False and c.active_leaf.content == "Hello!"


# --- Markdown ---------------------------------------------------------------------------


def test_markdown_shows_the_active_branch_with_notes_and_other_versions(ann):
    c = branchy_conversation(ann)
    response = logged_in(ann).get(f"/c/{c.pk}/export.md")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="sorting-in-python-{str(c.pk)[:8]}.md"'
    text = response.content.decode()
    assert text.startswith("# Sorting in Python\n")
    assert "**System prompt:**\n\n> You are terse." in text
    body = text[text.index("## You") :]
    assert body == (
        "## You\n\nHow do I sort a list?\n\n"
        "## Assistant (fake)\n\n`sorted(xs)` returns a new list; `xs.sort()` sorts in place, and\n\n"
        "> **Stopped:** this reply was stopped before it finished.\n\n"
        "_(2 other versions of this reply are in the JSON export.)_\n\n"
        "## You\n\nAnd by length?\n\n"
        "_(1 other version of this message is in the JSON export.)_\n\n"
        "## Assistant (fake)\n\nUse `key=len`\n\n"
        "> **Interrupted:** this reply was cut off while it was being written; it is incomplete.\n"
    )
    # Other branches are not in the Markdown.
    assert "reverse=True" not in text and "Use `sorted()`" not in text


def test_markdown_of_a_reply_that_ended_in_an_error(ann):
    c = branchy_conversation(ann)
    c.active_leaf = c.messages.get(status="error")
    c.save(update_fields=["active_leaf"])
    text = logged_in(ann).get(f"/c/{c.pk}/export.md").content.decode()
    assert "> **Error (timeout_idle):** no token for 30 s. This reply is incomplete." in text
    assert text.rstrip().endswith("_(2 other versions of this reply are in the JSON export.)_")


def test_export_all_markdown_and_json_hold_only_the_users_conversations(ann, ben):
    branchy_conversation(ann)
    plain_conversation(ann, title="Second", minutes=30)
    plain_conversation(ben, title="Bens secret", minutes=10)
    client = logged_in(ann)
    markdown = streamed(client.get("/export/all.md")).decode()
    assert markdown.count("\n---\n") == 1 and "# Second" in markdown and "Bens secret" not in markdown
    response = client.get("/export/all.json")
    document = json.loads(streamed(response))
    assert response["Content-Disposition"].startswith('attachment; filename="chatsite-ann-')
    assert [c["title"] for c in document["conversations"]] == ["Sorting in Python", "Second"]


@pytest.mark.django_db(transaction=True)
async def test_export_all_streams_through_the_asgi_stack(ann):
    # database_sync_to_async closes its connection after each call (none is left
    # open in a worker thread when the test database is dropped).
    from channels.db import database_sync_to_async

    await database_sync_to_async(branchy_conversation)(ann)
    for n in range(3):
        await database_sync_to_async(plain_conversation)(ann, title=f"Chat {n}", minutes=100 + n)
    client = AsyncClient()
    await database_sync_to_async(client.force_login)(ann)
    response = await client.get("/export/all.json")
    assert response.status_code == 200 and response.streaming
    body = b"".join([chunk async for chunk in response.streaming_content])
    document = json.loads(body)
    assert [c["title"] for c in document["conversations"]] == [
        "Sorting in Python",
        "Chat 0",
        "Chat 1",
        "Chat 2",
    ]
    assert response["Cache-Control"] == "private, no-store"
    # The view's database work ran in asgiref's shared thread: close its connection
    # (the test client keeps connections open across requests).
    await sync_to_async(connections.close_all)()


# --- Views: ownership, login, CSRF, file names ------------------------------------------


@pytest.mark.parametrize("suffix", ["export.json", "export.md"])
def test_another_users_conversation_is_exactly_as_missing_as_a_missing_one(ann, ben, suffix):
    theirs = branchy_conversation(ben)
    client = logged_in(ann)
    foreign = client.get(f"/c/{theirs.pk}/{suffix}")
    missing = client.get(f"/c/{uuid.uuid4()}/{suffix}")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert sorted(foreign.headers) == sorted(missing.headers)
    assert b"Sorting" not in foreign.content


def test_exports_need_a_login_and_import_needs_one_too(ann):
    c = branchy_conversation(ann)
    anonymous = Client()
    for url in (f"/c/{c.pk}/export.json", f"/c/{c.pk}/export.md", "/export/all.json", "/export/all.md"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    before = everything()
    response = upload(anonymous, conversation_export_json(conversation=c).encode())
    assert response.status_code == 401 and everything() == before


def test_import_only_accepts_post_and_export_only_get(ann):
    c = branchy_conversation(ann)
    client = logged_in(ann)
    assert client.get("/import/").status_code == 405
    assert client.post(f"/c/{c.pk}/export.json").status_code == 405


def test_the_import_is_csrf_protected(ann):
    c = branchy_conversation(ann)
    data = conversation_export_json(conversation=c).encode()
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    before = everything()
    refused = upload(client, data)
    assert refused.status_code == 403 and everything() == before
    token = "a" * 32
    client.cookies["csrftoken"] = token
    accepted = client.post(
        "/import/", {"file": SimpleUploadedFile("x.json", data)}, headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 200 and accepted.json()["imported"] == 1


def test_download_names_are_safe(ann):
    c = plain_conversation(ann, title='../../etc/passwd"\r\nX-Evil: 1 <script>', minutes=0)
    response = logged_in(ann).get(f"/c/{c.pk}/export.json")
    assert response["Content-Disposition"] == (
        f'attachment; filename="etcpasswd-x-evil-1-script-{str(c.pk)[:8]}.json"'
    )
    assert "X-Evil" not in response.headers
    untitled = plain_conversation(ann, title="", minutes=5)
    response = logged_in(ann).get(f"/c/{untitled.pk}/export.md")
    assert response["Content-Disposition"] == f'attachment; filename="conversation-{str(untitled.pk)[:8]}.md"'


def test_the_import_endpoint_answers_with_the_new_ids(ann, ben):
    branchy_conversation(ben)
    plain_conversation(ben, title="Other", minutes=20)
    data = dumps(export_of(ben))
    response = upload(logged_in(ann), data)
    assert response.status_code == 200
    body = response.json()
    assert body["imported"] == 2 and body["skipped"] == 0 and body["source"] == "chatsite"
    assert body["skipped_conversations"] == []
    mine = {str(pk) for pk in Conversation.objects.filter(user=ann).values_list("pk", flat=True)}
    assert set(body["conversations"]) == mine and len(mine) == 2
    # Ben's conversations are untouched and still only his.
    assert Conversation.objects.filter(user=ben).count() == 2
    assert not set(body["conversations"]) & {str(c["id"]) for c in export_of(ben)["conversations"]}


def test_a_file_naming_someone_elses_ids_still_only_creates_the_importers_own(ann, ben):
    theirs = branchy_conversation(ben)
    document = json.loads(conversation_export_json(conversation=theirs))
    document["conversations"][0]["messages"][0]["content"] = "Overwritten?"
    upload(logged_in(ann), dumps(document))
    assert ben.conversations.get().messages.filter(content="Overwritten?").count() == 0
    assert ann.conversations.get().messages.filter(content="Overwritten?").count() == 1


# --- ChatGPT's conversations.json ---------------------------------------------------------


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def chatgpt(name: str) -> list:
    return json.loads(fixture(name))


def test_chatgpt_branches_are_all_kept_and_the_current_node_is_the_active_branch(ann):
    result = importing.conversations_import(user=ann, data=fixture("branches.json"))
    assert result.source == "chatgpt" and result.skipped == []
    reverse, csv = result.conversations
    reverse.refresh_from_db()
    assert reverse.title == "Reversing a list in Python" and reverse.title_is_auto is False
    assert reverse.model == "chatgpt/gpt-4o" and reverse.archived is False
    t = datetime.fromtimestamp(1718031200.0, tz=UTC)
    assert reverse.created_at == t and reverse.updated_at == t + timedelta(seconds=900.5)

    messages = {m.content.split("\n")[0][:24]: m for m in reverse.messages.all()}
    assert len(messages) == 7  # the null root and the hidden system message are not messages
    u1 = messages["How do I reverse a list "]
    first, regenerated = messages["Use slicing: `my_list[::"], messages["There are three common w"]
    edited_away, edited = messages["And without creating a c"], messages["And how do I reverse a s"]
    assert u1.parent_id is None and u1.created_at == t + timedelta(seconds=1.25)
    assert first.parent_id == regenerated.parent_id == u1.pk  # a regenerated reply: siblings
    assert edited_away.parent_id == edited.parent_id == regenerated.pk  # an edited message: siblings
    assert messages["`my_list.reverse()` work"].parent_id == edited_away.pk
    shown = selectors.message_list(conversation=reverse)
    assert [m.pk for m in shown] == [u1.pk, regenerated.pk, edited.pk, reverse.active_leaf_id]
    leaf = shown[-1]
    assert (leaf.provider, leaf.model, leaf.status, leaf.finish_reason) == (
        "chatgpt",
        "gpt-4o-mini",
        "complete",
        "stop",
    )
    assert all(m.status == "" for m in shown if m.role == "user")

    csv.refresh_from_db()
    assert csv.archived is True
    user, answer = selectors.message_list(conversation=csv)
    # The code the model ran, then (the tool's output left out) its answer: one reply.
    assert answer.content == (
        "```python\nimport pandas as pd\ndf = pd.read_csv('/mnt/data/sales.csv')\ndf['price'].mean()\n```"
        "\n\nThe average price is **42.5**."
    )
    assert csv.messages.count() == 2


def test_chatgpt_multimodal_parts_keep_their_text_and_mark_the_rest(ann):
    [photo] = importing.conversations_import(user=ann, data=fixture("multimodal.json")).conversations
    photo.refresh_from_db()
    assert [(m.role, m.content) for m in selectors.message_list(conversation=photo)] == [
        ("user", "[image]\n\nWhat's in this photo?"),
        ("assistant", "A tabby cat asleep on a sunny windowsill."),
        ("user", "Can you describe the colours?"),  # a voice message: its transcription
        ("assistant", "Orange and cream fur, with a pale blue sky behind."),
    ]
    # Custom instructions were the system prompt of the conversation; not a message.
    assert "I am a wildlife photographer." in photo.system_prompt
    assert "Keep answers short." in photo.system_prompt
    assert photo.messages.count() == 4


def test_chatgpt_null_root_reasoning_unfinished_replies_and_empty_conversations(ann):
    result = importing.conversations_import(user=ann, data=fixture("null_root.json"))
    lisbon, untitled = result.conversations
    # "New chat": nothing but a hidden system message
    assert result.skipped == [importing.Skipped(3, "New chat", importing.NOTHING_TO_SHOW, "empty")]
    lisbon.refresh_from_db()
    user, reply = selectors.message_list(conversation=lisbon)
    assert user.parent_id is None and reply.parent_id == user.pk
    assert reply.content.startswith("**Day 1: Alfama") and "Thought for" not in reply.content
    assert "Sintra" not in reply.content  # the reasoning is not the answer...
    # ...it is the reply's reasoning (ChatGPT's thoughts), and how long it took (its recap).
    assert reply.reasoning == "**Planning the days**\n\nDay 1 Alfama, day 2 Belém, day 3 Sintra."
    assert reply.reasoning_ms == 9000.0
    assert (reply.status, reply.finish_reason, reply.model) == ("stopped", "interrupted", "o3")
    assert lisbon.model == "chatgpt/o3" and lisbon.messages.count() == 2

    untitled.refresh_from_db()
    assert untitled.title == "Translate 'good morning' into Portuguese" and untitled.title_is_auto is True
    assert untitled.model == "chatgpt/gpt-4o-mini"
    # No current_node: the newest message ends the active branch.
    assert untitled.active_leaf.content == "Bom dia" and untitled.active_leaf.status == "interrupted"


def test_chatgpt_import_through_the_endpoint_then_exports_the_same_tree(ann):
    client = logged_in(ann)
    body = upload(client, fixture("branches.json"), "conversations.json").json()
    assert body == {
        "imported": 2,
        "conversations": body["conversations"],
        "skipped": 0,
        "skipped_conversations": [],
        "source": "chatgpt",
    }
    first = export_of(ann)
    # Its chatsite export round-trips like any other.
    upload(client, dumps(first))
    second = json.loads("".join(user_export_json_chunks(user=ann)))
    imported_again = [c for c in second["conversations"] if c["id"] not in body["conversations"]]
    assert normalized({"conversations": imported_again}) == normalized(first)


def test_other_tools_chatgpt_shape_is_read_leniently_and_unreadable_conversations_are_reported(ann):
    response = upload(logged_in(ann), fixture("other_tools.json"), "conversations.json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["imported"] == 2 and body["skipped"] == 3 and body["source"] == "chatgpt"
    tool, charts = (Conversation.objects.get(pk=pk) for pk in body["conversations"])

    # No content_type: parts (every one of them) and a bare text are text.
    assert [(m.role, m.content) for m in selectors.message_list(conversation=tool)] == [
        ("user", "What is a monad?\n\nKeep it short."),
        ("assistant", "A monad wraps a value and says how to chain steps on it."),
        ("user", "Thanks!"),
    ]
    assert tool.title == "Exported by another tool" and tool.model == "chatgpt/llama-3.1-8b"
    # Parts that are text objects keep their text; only the image is a placeholder.
    assert [(m.role, m.content) for m in selectors.message_list(conversation=charts)] == [
        ("user", "Compare these two charts.\n\n[image]\n\nThe second one is from last year."),
        ("assistant", "Sales grew in spring.\n\nLast year they fell."),
    ]

    assert [(s["index"], s["title"], s["code"]) for s in body["skipped_conversations"]] == [
        (3, "A broken link", "invalid"),
        (4, "Nothing but the root", "empty"),
        (5, "", "invalid"),
    ]
    broken, empty, anonymous = (s["message"] for s in body["skipped_conversations"])
    assert broken == (
        "Skipped conversation 3 ('A broken link'): it could not be read "
        "(node 'x2': its parent 'x9' is not in this conversation)."
    )
    assert empty == (
        "Skipped conversation 4 ('Nothing but the root'): it has no messages to show "
        "(only hidden, empty or tool messages)."
    )
    assert anonymous == (
        "Skipped conversation 5: it could not be read "
        "(node 'q1': its message has no author, so who wrote it is not known)."
    )
    assert Conversation.objects.filter(user=ann).count() == 2


def test_a_single_chatgpt_conversation_object_is_accepted(ann):
    [one] = chatgpt("multimodal.json")
    result = importing.conversations_import(user=ann, data=dumps(one))
    assert len(result.conversations) == 1


# --- Bad and hostile files: a clear error, nothing imported --------------------------------


def _chatgpt_with_bad_second(mutate) -> bytes:
    """A good conversation first, so a partial import would show."""
    good, bad = chatgpt("branches.json")
    mutate(bad)
    return dumps([good, bad])


def _node(conversation: dict, fragment: str) -> dict:
    """The mapping node whose text contains ``fragment``."""
    for node in conversation["mapping"].values():
        message = node["message"]
        if message and fragment in json.dumps(message["content"]):
            return node
    raise KeyError(fragment)


def _root(conversation: dict) -> dict:
    return next(n for n in conversation["mapping"].values() if n["parent"] is None)


def _set(path: str, value):
    """Set a key inside the second conversation of a chatsite document."""

    def mutate(document):
        target = document["conversations"][1]
        *parts, last = path.split(".")
        for part in parts:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _chatsite_with_bad_second(mutate) -> bytes:
    document = _doc(_conversation(), _conversation(id="c2"))
    mutate(document)
    return dumps(document)


def _cycle(document):
    messages = document["conversations"][1]["messages"]
    messages[0]["parent"] = "m2"


def _chatgpt_cycle(conversation):
    a, b = _node(conversation, "average price"), _node(conversation, "execution_output")
    b["parent"] = a["id"]


def _chatgpt_self_parent(conversation):
    node = _node(conversation, "average price")
    node["parent"] = node["id"]


def _chatgpt_orphan(conversation):
    _node(conversation, "average price")["parent"] = "no-such-node"


HOSTILE = [
    # (what, bytes, code, words in the message)
    ("not JSON", b"conversations, but not JSON", "not_json", "not valid JSON"),
    ("truncated JSON", fixture("branches.json")[:-200], "not_json", "not valid JSON"),
    ("not UTF-8", b'{"format": "chatsite", \xff\xfe}', "not_json", "not UTF-8"),
    ("empty", b"  \n", "empty", "empty"),
    ("a ZIP archive", b"PK\x03\x04" + b"\x00" * 40, "zip", "ZIP archive"),
    ("NaN", b'{"format": "chatsite", "version": NaN}', "not_json", "NaN"),
    (
        "an endless number",
        b'{"format": "chatsite", "version": ' + b"9" * 5000 + b"}",
        "not_json",
        "not valid",
    ),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, "too_deep", "nested too deeply"),
    (
        "deep inside a conversation",
        b'[{"mapping": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]",
        "too_deep",
        "nested",
    ),
    ("a number", b"42", "unknown_format", "not a chatsite export or a ChatGPT"),
    ("an unrelated object", b'{"hello": "world"}', "unknown_format", "not a chatsite export"),
    (
        "another format",
        b'{"format": "other-app", "version": 1}',
        "invalid",
        "Unknown export format 'other-app'",
    ),
    ("a newer version", dumps({**_doc(), "version": 2}), "version", "newer chatsite"),
    ("version as text", dumps({**_doc(), "version": "1"}), "invalid", "version: must be a whole number"),
    ("no conversations", dumps(_doc()), "empty", "no conversations"),
    ("an empty ChatGPT list", b"[]", "empty", "no conversations"),
    ("ChatGPT-shaped but cut off", fixture("other_tools.json")[:-50], "not_json", "not valid JSON"),
    ("a list of numbers", b"[1, 2, 3]", "unknown_format", "none of its entries is a conversation"),
    ("a list of other objects", b'[{"hello": "world"}]', "unknown_format", "none of its entries is a"),
    (
        "no ChatGPT conversation that can be read",
        dumps([chatgpt("other_tools.json")[2], chatgpt("other_tools.json")[4]]),
        "invalid",
        "None of the file's 2 conversations could be read. Conversation 1 ('A broken link'): "
        "it could not be read (node 'x2': its parent 'x9' is not in this conversation).",
    ),
    (
        "conversations not a list",
        dumps({**_doc(), "conversations": {"a": 1}}),
        "invalid",
        "conversations: must be a list, not an object",
    ),
    (
        "a conversation that is a string",
        dumps(_doc(_conversation(), "oops")),
        "invalid",
        "conversations[1]: must be an object, not text",
    ),
    (
        "content of the wrong type",
        _chatsite_with_bad_second(_set("messages.1.content", 12)),
        "invalid",
        "conversations[1].messages[1].content: must be text, not a number",
    ),
    (
        "an unknown role",
        _chatsite_with_bad_second(_set("messages.0.role", "wizard")),
        "invalid",
        "must be 'user', 'assistant' or 'system', not 'wizard'",
    ),
    (
        "an unknown status",
        _chatsite_with_bad_second(_set("messages.1.status", "exploded")),
        "invalid",
        "messages[1].status: must be one of complete, error, interrupted, stopped",
    ),
    (
        "a parent pointing nowhere",
        _chatsite_with_bad_second(_set("messages.1.parent", "m9")),
        "invalid",
        "conversations[1].messages[1]: its parent 'm9' is not in this conversation",
    ),
    ("a cycle", _chatsite_with_bad_second(_cycle), "invalid", "form a cycle"),
    (
        "a duplicate id",
        _chatsite_with_bad_second(_set("messages.1.id", "m1")),
        "invalid",
        "'m1' is used by another message too",
    ),
    (
        "an active leaf of another conversation",
        _chatsite_with_bad_second(_set("active_leaf", "zz")),
        "invalid",
        "active_leaf: 'zz' is not a message of this conversation",
    ),
    (
        "a date that is not one",
        _chatsite_with_bad_second(_set("messages.0.created_at", "yesterday")),
        "invalid",
        "'yesterday' is not an ISO 8601 date",
    ),
    (
        "a missing date",
        _chatsite_with_bad_second(_set("created_at", None)),
        "invalid",
        "conversations[1].created_at: must be an ISO 8601 date",
    ),
    (
        "a temperature that is text",
        _chatsite_with_bad_second(_set("temperature", "hot")),
        "invalid",
        "temperature: must be a number or null",
    ),
    (
        "a boolean for a number",
        _chatsite_with_bad_second(_set("max_tokens", True)),
        "invalid",
        "max_tokens: must be a whole number or null",
    ),
    (
        "negative token counts",
        _chatsite_with_bad_second(_set("messages.1.usage", {"prompt_tokens": -1})),
        "invalid",
        "usage.prompt_tokens: must be between 0 and",
    ),
    (
        "nested segments",
        _chatsite_with_bad_second(_set("messages.1.segments", [{"deep": {"x": [1]}}])),
        "invalid",
        "segments[0]: field 'deep' must hold a plain value",
    ),
    (
        "a gigantic message",
        _chatsite_with_bad_second(_set("messages.0.content", "x" * (importing.MAX_TEXT_CHARS + 1))),
        "invalid",
        "is 1,000,001 characters long; the limit is 1,000,000",
    ),
    (
        "a gigantic title",
        _chatsite_with_bad_second(_set("title", "t" * 201)),
        "invalid",
        "conversations[1].title: is 201 characters long; the limit is 200",
    ),
    (
        "a gigantic id",
        _chatsite_with_bad_second(_set("messages.0.id", "i" * 5000)),
        "invalid",
        "messages[0].id: is 5,000 characters long",
    ),
]


#: ChatGPT-shaped files with one conversation that cannot be read (the second).
UNREADABLE = [
    # (what, bytes, code, words in the reason)
    (
        "a ChatGPT conversation without a mapping",
        _chatgpt_with_bad_second(lambda c: c.pop("mapping")),
        "invalid",
        'it has no "mapping"',
    ),
    (
        "a ChatGPT mapping that is a list",
        _chatgpt_with_bad_second(lambda c: c.update(mapping=[])),
        "invalid",
        "mapping: must be an object, not a list",
    ),
    (
        "a ChatGPT parent pointing nowhere",
        _chatgpt_with_bad_second(_chatgpt_orphan),
        "invalid",
        "its parent 'no-such-node' is not in this conversation",
    ),
    ("a ChatGPT cycle", _chatgpt_with_bad_second(_chatgpt_cycle), "invalid", "form a cycle"),
    (
        "a ChatGPT node its own parent",
        _chatgpt_with_bad_second(_chatgpt_self_parent),
        "invalid",
        "form a cycle",
    ),
    (
        "ChatGPT parts of the wrong type",
        _chatgpt_with_bad_second(lambda c: _node(c, "average price")["message"]["content"].update(parts=[1])),
        "invalid",
        ".message.content.parts[0]: must be text or an object, not a number",
    ),
    (
        "a ChatGPT message without an author",
        _chatgpt_with_bad_second(lambda c: _node(c, "average price")["message"].pop("author")),
        "invalid",
        "its message has no author",
    ),
    (
        "a ChatGPT time that is text",
        _chatgpt_with_bad_second(lambda c: c.update(create_time="2024-06-10")),
        "invalid",
        "create_time: must be a number of seconds since 1970 or null",
    ),
    (
        "an implausible ChatGPT time",
        _chatgpt_with_bad_second(lambda c: c.update(update_time=1e300)),
        "invalid",
        "is not a plausible time",
    ),
    (
        "a ChatGPT current node that does not exist",
        _chatgpt_with_bad_second(lambda c: c.update(current_node="elsewhere")),
        "invalid",
        "current_node: 'elsewhere' is not a node of this conversation",
    ),
    (
        "a gigantic ChatGPT message",
        _chatgpt_with_bad_second(
            lambda c: _node(c, "average price")["message"]["content"].update(
                parts=["y" * 600_000, "z" * 600_000]
            )
        ),
        "invalid",
        "the limit is 1,000,000",
    ),
    (
        "a ChatGPT list with a string in it",
        dumps([chatgpt("multimodal.json")[0], "conversation"]),
        "invalid",
        "it is text, not a conversation (an object)",
    ),
    (
        "a null root pretending to be a message",
        _chatgpt_with_bad_second(lambda c: _root(c).update(message="root")),
        "invalid",
        ".message: must be an object, not text",
    ),
]


@pytest.mark.parametrize(("what", "data", "code", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_bad_file_gets_a_clear_error_and_imports_nothing(ann, ben, what, data, code, words):
    branchy_conversation(ben)
    before = everything()
    response = upload(logged_in(ann), data)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == code and words in body["message"], body
    assert len(body["message"]) < 400  # a message for a person, not a dump of the file
    assert everything() == before
    assert not Conversation.objects.filter(user=ann).exists()


@pytest.mark.parametrize(("what", "data", "code", "words"), UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_a_chatgpt_conversation_that_cannot_be_read_is_skipped_and_the_rest_imported(
    ann, ben, what, data, code, words
):
    branchy_conversation(ben)
    before = everything()
    response = upload(logged_in(ann), data)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["imported"] == 1 and body["skipped"] == 1
    [skipped] = body["skipped_conversations"]
    assert skipped["index"] == 2 and skipped["code"] == code and words in skipped["reason"], skipped
    name = f"conversation 2 ({skipped['title']!r})" if skipped["title"] else "conversation 2"
    assert skipped["message"] == f"Skipped {name}: {skipped['reason']}."
    assert len(skipped["message"]) < 400  # words for a person, not a dump of the file
    # Only the readable conversation was written, and only for ann.
    assert Conversation.objects.filter(user=ann).count() == 1
    assert Conversation.objects.filter(user=ben).count() == before[0]


def test_too_many_conversations(ann):
    stub = {"title": "x", "mapping": {}}
    response = upload(logged_in(ann), dumps([stub] * (importing.MAX_CONVERSATIONS + 1)))
    assert response.status_code == 400
    assert response.json()["error"] == "too_many"
    assert "20,001 entries; the limit is 20,000" in response.json()["message"]
    assert not Conversation.objects.exists()


def test_too_many_messages_in_one_file(ann, monkeypatch):
    monkeypatch.setattr(importing, "MAX_MESSAGES", 10)
    many = _doc(*[_conversation(id=f"c{n}") for n in range(6)])  # 12 messages
    response = upload(logged_in(ann), dumps(many))
    assert response.json()["error"] == "too_many" and "more than 10 messages" in response.json()["message"]
    assert not Conversation.objects.exists()


def test_a_failure_while_writing_rolls_back_the_whole_file(ann, monkeypatch):
    real = importing._insert_as_is

    def fail_on_messages(model, objs):
        if model is Message:
            real(model, objs[:3])
            raise RuntimeError("disk full")
        real(model, objs)

    monkeypatch.setattr(importing, "_insert_as_is", fail_on_messages)
    with pytest.raises(RuntimeError):
        importing.conversations_import(user=ann, data=fixture("branches.json"))
    assert everything() == (0, 0)


# --- The size limit -------------------------------------------------------------------------


def test_by_default_a_50_mb_file_is_read_and_one_byte_more_is_refused():
    fifty_mb = 50 * 1024 * 1024
    # A ZIP archive's signature: the check right after the size, so nothing is parsed.
    at_the_limit = b"PK\x03\x04" + b"\0" * (fifty_mb - 4)
    with pytest.raises(importing.ImportRejected) as read:
        importing.parse_file(at_the_limit)
    assert read.value.code == "zip"
    with pytest.raises(importing.ImportRejected) as refused:
        importing.parse_file(at_the_limit + b"\0")
    assert refused.value.code == "too_large"
    assert str(refused.value).endswith("the largest file this server imports is 50.0 MB.")


def test_a_file_over_the_size_limit_is_refused(ann, settings):
    data = fixture("branches.json")
    settings.CHATSITE_MAX_IMPORT_BYTES = len(data) - 1
    response = upload(logged_in(ann), data)
    assert response.status_code == 400 and response.json()["error"] == "too_large"
    assert "the largest file this server imports is" in response.json()["message"]
    assert not Conversation.objects.exists()
    # The service checks it too (the management path, other callers).
    with pytest.raises(ImportRejected) as refused:
        importing.conversations_import(user=ann, data=data)
    assert refused.value.code == "too_large"
    settings.CHATSITE_MAX_IMPORT_BYTES = len(data)
    assert upload(logged_in(ann), data).status_code == 200


def test_an_upload_far_over_the_limit_is_refused_before_it_is_parsed(ann, settings, monkeypatch):
    settings.CHATSITE_MAX_IMPORT_BYTES = 1000
    parsed = []
    monkeypatch.setattr(importing, "parse_file", lambda data: parsed.append(data))
    response = upload(logged_in(ann), b" " * 200_000)
    assert response.status_code == 400 and response.json()["error"] == "too_large"
    assert parsed == []


def test_an_upload_without_a_file(ann):
    response = logged_in(ann).post("/import/", {"other": "x"})
    assert response.status_code == 400 and response.json()["error"] == "no_file"
