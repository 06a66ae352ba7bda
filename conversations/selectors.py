"""Reads. Keyword-only, typed, and always scoped to the asking user."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser

from .models import Conversation, Message


def conversation_get(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> Conversation | None:
    """The user's conversation, or None for a missing id and for another user's alike."""
    return Conversation.objects.filter(pk=conversation_id, user=user).first()


def conversation_list(*, user: AbstractBaseUser, limit: int = 100) -> list[Conversation]:
    return list(
        Conversation.objects.filter(user=user)
        .only("id", "title", "model", "updated_at")
        .order_by("-updated_at")[:limit]
    )


def message_list(*, conversation: Conversation) -> list[Message]:
    """The branch the user is looking at, first message first."""
    messages = {m.pk: m for m in conversation.messages.all()}
    path: list[Message] = []
    node = messages.get(conversation.active_leaf_id) if conversation.active_leaf_id else None
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id) if node.parent_id else None
    if not path:  # no branch recorded: every message in order
        return sorted(messages.values(), key=lambda m: (m.created_at, m.role))
    path.reverse()
    # Versions of each message (regenerated replies, edited messages), oldest first.
    children: dict = {}
    for m in sorted(messages.values(), key=lambda m: m.created_at):
        children.setdefault(m.parent_id, []).append(m.pk)
    for m in path:
        m.sibling_ids = children.get(m.parent_id, [m.pk])
    return path


def message_to_dict(message: Message) -> dict:
    data: dict = {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "parent": str(message.parent_id) if message.parent_id else None,
    }
    sibling_ids = getattr(message, "sibling_ids", None)
    if sibling_ids is not None:
        data["versions"] = [str(pk) for pk in sibling_ids]
    if message.role == Message.Role.ASSISTANT:
        data.update(
            status=message.status,
            error_kind=message.error_kind or None,
            error=message.error_message or None,
            last_seq=message.last_seq,
            provider=message.provider,
            model=message.model,
            finish_reason=message.finish_reason or None,
            usage={
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "counted": message.usage_counted,
            },
            metrics={
                "ttft_ms": message.ttft_ms,
                "tokens_per_s": message.tokens_per_s,
                "total_ms": message.total_ms,
            },
            segments=message.segments,
        )
    return data


def conversation_to_dict(conversation: Conversation) -> dict:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "updated_at": conversation.updated_at.isoformat(),
    }
