"""Writes. Keyword-only, typed functions named <entity>_<action>; synchronous
(the async side calls them through ``database_sync_to_async``)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from .models import Conversation, Message
from .providers import ChatMessage

#: Identifies this process on replies it runs (host:pid:start).
WORKER_ID = f"{socket.gethostname()[:30]}:{os.getpid()}:{int(time.time())}"

TITLE_CHARS = 60


class NotFound(Exception):
    """A missing id, or one that belongs to another user (indistinguishable)."""


@dataclass(frozen=True, slots=True)
class StartedExchange:
    conversation: Conversation
    user_message: Message
    reply: Message
    created: bool  # False: the client id was seen before; nothing new was stored
    prompt: list[ChatMessage]


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _prompt_for(conversation: Conversation) -> list[ChatMessage]:
    """The conversation as the model should see it: empty replies dropped and
    consecutive messages of one role merged, so every API accepts it."""
    prompt: list[ChatMessage] = []
    rows = conversation.messages.order_by("created_at", "role").values_list("role", "content")
    for role, content in rows:
        if not content:
            continue
        if prompt and prompt[-1].role == role:
            prompt[-1] = ChatMessage(role, prompt[-1].content + "\n\n" + content)
        else:
            prompt.append(ChatMessage(role, content))
    return prompt


def exchange_start(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID | None,
    client_id: str,
    text: str,
    model: str,
    provider: str,
) -> StartedExchange:
    """Store the user's message and an empty streaming reply, in one transaction.

    A client id seen before returns what was stored then (``created=False``).
    """
    try:
        return _exchange_start(
            user=user,
            conversation_id=conversation_id,
            client_id=client_id,
            text=text,
            model=model,
            provider=provider,
        )
    except IntegrityError:
        # A concurrent send with the same client id won the race; return its result.
        return _exchange_start(
            user=user,
            conversation_id=conversation_id,
            client_id=client_id,
            text=text,
            model=model,
            provider=provider,
        )


def _existing(conversation: Conversation, user_message: Message) -> StartedExchange:
    reply = (
        conversation.messages.filter(role=Message.Role.ASSISTANT, created_at__gte=user_message.created_at)
        .order_by("created_at")
        .first()
    )
    if reply is None:  # pragma: no cover - both are always written together
        raise NotFound("the reply to this message is missing")
    return StartedExchange(conversation, user_message, reply, False, [])


def _exchange_start(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID | None,
    client_id: str,
    text: str,
    model: str,
    provider: str,
) -> StartedExchange:
    with transaction.atomic():
        if conversation_id is None:
            conversation = Conversation.objects.filter(user=user, client_id=client_id).first()
            if conversation is None:
                conversation = Conversation.objects.create(
                    user=user, client_id=client_id, model=model, title=_title_from(text)
                )
        else:
            conversation = Conversation.objects.filter(pk=conversation_id, user=user).first()
            if conversation is None:
                raise NotFound("no such conversation")
        seen = conversation.messages.filter(client_id=client_id).first()
        if seen is not None:
            return _existing(conversation, seen)
        if conversation.messages.filter(status=Message.Status.STREAMING).exists():
            raise ReplyRunning()
        user_message = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=text, client_id=client_id
        )
        reply = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            provider=provider,
            model=model.partition("/")[2],
            worker=WORKER_ID,
        )
        if conversation.model != model:
            conversation.model = model
        conversation.save(update_fields=["model", "updated_at"])
        prompt = _prompt_for(conversation)
    return StartedExchange(conversation, user_message, reply, True, prompt)


class ReplyRunning(Exception):
    """The conversation already has a reply streaming."""


def reply_checkpoint_many(*, checkpoints: list[tuple[uuid.UUID, str, int]]) -> None:
    """Save the partial text of many streaming replies in one transaction."""
    with transaction.atomic():
        for reply_id, content, last_seq in checkpoints:
            Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
                content=content, last_seq=last_seq
            )


def reply_finish(
    *,
    reply_id: uuid.UUID,
    content: str,
    last_seq: int,
    status: str,
    error_kind: str = "",
    error_message: str = "",
    finish_reason: str = "",
    ttft_ms: float | None = None,
    total_ms: float | None = None,
    tokens_per_s: float | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    usage_counted: bool = False,
    attempts: int = 20,
    backoff: float = 0.05,
) -> None:
    """Write a reply's terminal state. Retried while the database is locked:
    the terminal state must always be written."""
    for attempt in range(attempts):
        try:
            with transaction.atomic():
                Message.objects.filter(pk=reply_id).update(
                    content=content,
                    last_seq=last_seq,
                    status=status,
                    error_kind=error_kind,
                    error_message=error_message[:500],
                    finish_reason=finish_reason[:64],
                    ttft_ms=ttft_ms,
                    total_ms=total_ms,
                    tokens_per_s=tokens_per_s,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    usage_counted=usage_counted,
                    finished_at=timezone.now(),
                )
                Conversation.objects.filter(messages__pk=reply_id).update(updated_at=timezone.now())
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(min(1.0, backoff * (2**attempt)))


def reply_sweep_dead_workers() -> int:
    """Mark replies left ``streaming`` by a process of this host that is gone as
    ``interrupted``. Replies of live processes are not touched."""
    host = WORKER_ID.split(":", 1)[0]
    count = 0
    for reply_id, worker in Message.objects.filter(status=Message.Status.STREAMING).values_list(
        "pk", "worker"
    ):
        if worker == WORKER_ID:
            continue
        parts = worker.split(":")
        if len(parts) != 3 or parts[0] != host:
            continue
        try:
            pid = int(parts[1])
            # Our own pid under an older start time: a previous life of this container.
            alive = pid != os.getpid()
            if alive:
                os.kill(pid, 0)
        except (ProcessLookupError, ValueError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            count += Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
                status=Message.Status.INTERRUPTED, finished_at=timezone.now()
            )
    return count
