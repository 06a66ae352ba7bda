"""What the tests build in the database: users, conversations, messages, branchy trees.

The factories write rows directly (no service runs), so a test can set up any
state, including those the app only reaches over time: old, archived, still
streaming, failed. Times given to them are stored as given (``created_at`` and
``updated_at`` are otherwise set by the database).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from conversations.models import Conversation, Message

#: The clock of the built trees: ``at(minutes)`` after this.
BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


# --- users -------------------------------------------------------------------------


def password_for(username: str) -> str:
    return f"pw-{username}-123"


def user(username: str) -> AbstractBaseUser:
    """A user whose password is ``password_for(username)``."""
    return get_user_model().objects.create_user(username, password=password_for(username))


def logged_in(someone: AbstractBaseUser, **client_options: Any) -> Client:
    """A test client with ``someone``'s session."""
    client = Client(**client_options)
    client.force_login(someone)
    return client


# --- conversations and messages ------------------------------------------------------------


def conversation(
    owner: AbstractBaseUser,
    title: str = "untitled",
    *,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    **fields: Any,
) -> Conversation:
    fields.setdefault("model", "openai/fake")
    fields.setdefault("client_id", f"c-{uuid.uuid4().hex}")
    made = Conversation.objects.create(user=owner, title=title, **fields)
    times = {name: value for name, value in (("created_at", created_at), ("updated_at", updated_at)) if value}
    if times:
        Conversation.objects.filter(pk=made.pk).update(**times)
        made.refresh_from_db()
    return made


def message(
    within: Conversation,
    content: str = "",
    role: str = "user",
    *,
    parent: Message | None = None,
    created_at: datetime | None = None,
    **fields: Any,
) -> Message:
    made = Message.objects.create(conversation=within, parent=parent, role=role, content=content, **fields)
    if created_at is not None:
        Message.objects.filter(pk=made.pk).update(created_at=created_at)
        made.created_at = created_at
    return made


def lead_to(leaf: Message, **times: datetime) -> Conversation:
    """Make ``leaf`` its conversation's active leaf (and set its ``times``); the fresh conversation."""
    Conversation.objects.filter(pk=leaf.conversation_id).update(active_leaf=leaf, **times)
    return Conversation.objects.get(pk=leaf.conversation_id)


# --- whole trees -------------------------------------------------------------------------


def branchy_conversation(owner: AbstractBaseUser, *, title: str = "Sorting in Python", minutes: float = 0):
    """A regenerated reply (three versions: complete, error, stopped) and an edited
    message (two versions), every status but streaming, metrics, usage, segments;
    the last version of each is on the active branch."""
    c = conversation(
        owner,
        title,
        title_is_auto=False,
        system_prompt="You are terse.",
        temperature=0.7,
        max_tokens=512,
        pinned=True,
    )
    reply: dict[str, Any] = {"role": "assistant", "provider": "openai", "model": "fake"}
    u1 = message(c, "How do I sort a list?", created_at=at(minutes), client_id="u1")
    message(
        c,
        "Use `sorted()`.",
        parent=u1,
        created_at=at(minutes + 1),
        status="complete",
        finish_reason="stop",
        ttft_ms=120.5,
        total_ms=900.0,
        tokens_per_s=42.25,
        prompt_tokens=12,
        completion_tokens=4,
        usage_counted=True,
        last_seq=3,
        finished_at=at(minutes + 1.5),
        **reply,
    )
    message(
        c,
        "Call `list.sort",
        parent=u1,
        created_at=at(minutes + 2),
        status="error",
        error_kind="timeout_idle",
        error_message="no token for 30 s",
        last_seq=2,
        **reply,
    )
    a1c = message(
        c,
        "`sorted(xs)` returns a new list; `xs.sort()` sorts in place, and",
        parent=u1,
        created_at=at(minutes + 3),
        status="stopped",
        segments=[
            {
                "status": "stopped",
                "error_kind": None,
                "last_seq": 2,
                "chars": 10,
                "ttft_ms": 80.0,
                "tokens_per_s": 30.5,
                "total_ms": 400.0,
                "prompt_tokens": 12,
                "completion_tokens": 3,
                "finish_reason": None,
            }
        ],
        **reply,
    )
    u2 = message(c, "And in reverse?", parent=a1c, created_at=at(minutes + 4), client_id="u2")
    message(c, "Pass `reverse=True`.", parent=u2, created_at=at(minutes + 5), status="complete", **reply)
    u2b = message(c, "And by length?", parent=a1c, created_at=at(minutes + 6), client_id="u2b")
    a2b = message(c, "Use `key=len`", parent=u2b, created_at=at(minutes + 7), status="interrupted", **reply)
    return lead_to(a2b, created_at=at(minutes), updated_at=at(minutes + 7.5))


def plain_conversation(
    owner: AbstractBaseUser,
    *,
    title: str,
    minutes: float,
    archived: bool = False,
    status: str = "complete",
) -> Conversation:
    """One question ("{title}?") and its reply ("{title}!"), ``minutes`` after :data:`BASE`."""
    c = conversation(owner, title, archived=archived)
    u = message(c, f"{title}?", created_at=at(minutes))
    a = message(c, f"{title}!", "assistant", parent=u, created_at=at(minutes + 1), status=status)
    return lead_to(a, created_at=at(minutes), updated_at=at(minutes + 1))
