"""A streaming reply's writes: its checkpoints, its terminal state, and the
replies whose process died while they streamed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.workers import WORKER_ID, workers_dead


@dataclass(frozen=True, slots=True)
class ReplyCheckpoint:
    """A streaming reply's partial text (answer and reasoning) up to ``last_seq``."""

    reply_id: uuid.UUID
    content: str
    last_seq: int
    reasoning: str = ""


def reply_checkpoint_many(*, checkpoints: list[ReplyCheckpoint]) -> None:
    """Save the partial text of many streaming replies: one statement, one transaction."""
    if not checkpoints:
        return
    table = connection.ops.quote_name(Message._meta.db_table)
    id_field = Message._meta.pk
    streaming = str(Message.Status.STREAMING)
    rows = [
        (c.content, c.reasoning, c.last_seq, id_field.get_db_prep_value(c.reply_id, connection), streaming)
        for c in checkpoints
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET content = %s, reasoning = %s, last_seq = %s WHERE id = %s AND status = %s",
            rows,
        )


@dataclass(frozen=True, slots=True)
class ReplyFinish:
    """A reply's terminal state, as :func:`reply_finish_many` writes it."""

    reply_id: uuid.UUID
    content: str
    last_seq: int
    status: str
    error_kind: str = ""
    error_message: str = ""
    finish_reason: str = ""
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_counted: bool = False
    omitted_messages: int = 0
    context_tokens: int | None = None
    reasoning: str = ""
    reasoning_ms: float | None = None
    first_answer_ms: float | None = None
    reasoning_redacted: bool = False
    reasoning_signature: str = ""
    moderation_rule: str = ""


_FINISH_FIELDS = (
    "content",
    "last_seq",
    "status",
    "error_kind",
    "error_message",
    "finish_reason",
    "ttft_ms",
    "total_ms",
    "tokens_per_s",
    "prompt_tokens",
    "completion_tokens",
    "usage_counted",
    "omitted_messages",
    "context_tokens",
    "reasoning",
    "reasoning_ms",
    "first_answer_ms",
    "reasoning_redacted",
    "reasoning_signature",
    "moderation_rule",
    "finished_at",
)


def reply_finish_many(*, finishes: list[ReplyFinish], attempts: int = 20, backoff: float = 0.05) -> None:
    """Write the terminal state of many replies: one ``UPDATE`` of the messages
    (``executemany``) and one of their conversations, in one transaction.

    Retried while the database is locked: the terminal state must always be
    written.
    """
    if not finishes:
        return
    fields = [Message._meta.get_field(name) for name in _FINISH_FIELDS]
    table = connection.ops.quote_name(Message._meta.db_table)
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    id_field = Message._meta.pk
    for attempt in range(attempts):
        try:
            now = timezone.now()
            rows = []
            for f in finishes:
                values = {
                    **{name: getattr(f, name) for name in _FINISH_FIELDS[:-1]},
                    "error_message": f.error_message[:500],
                    "finish_reason": f.finish_reason[:64],
                    "moderation_rule": f.moderation_rule[:100],
                    "finished_at": now,
                }
                rows.append(
                    [field.get_db_prep_value(values[field.name], connection) for field in fields]
                    + [id_field.get_db_prep_value(f.reply_id, connection)]
                )
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", rows)
                Conversation.objects.filter(messages__pk__in=[f.reply_id for f in finishes]).update(
                    updated_at=now
                )
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(min(1.0, backoff * (2**attempt)))


def reply_finish(*, reply_id: uuid.UUID, **state) -> None:
    """Write one reply's terminal state (see :func:`reply_finish_many`)."""
    reply_finish_many(finishes=[ReplyFinish(reply_id=reply_id, **state)])


def reply_sweep_dead_workers() -> list[str]:
    """Mark replies left ``streaming`` by dead processes as ``interrupted``;
    returns their ids.

    A process is dead if it is on this host and its pid is gone, or if its
    heartbeat is older than ``CHATSITE_WORKER_STALE``. Replies of live
    processes are never touched. The text saved at the last checkpoint stays.
    """
    workers = set(
        Message.objects.filter(status=Message.Status.STREAMING)
        .exclude(worker=WORKER_ID)
        .values_list("worker", flat=True)
        .distinct()
    )
    swept: list[str] = []
    for worker in workers_dead(worker_ids=workers):
        streaming = Message.objects.filter(worker=worker, status=Message.Status.STREAMING)
        ids = list(streaming.values_list("pk", flat=True))
        Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
            status=Message.Status.INTERRUPTED,
            error_message="the server stopped while this reply was streaming",
            finished_at=timezone.now(),
        )
        swept += [str(pk) for pk in ids]
    return swept


def reply_ended_unannounced(*, reply_ids: set[str]) -> list[Message]:
    """Of ``reply_ids`` (replies that sockets here follow in another process),
    those that ended where their process cannot announce it: it is dead (the
    reply was swept), or the reply ended more than ``CHATSITE_WORKER_STALE``
    seconds ago and its frames never came."""
    ended = list(
        Message.objects.filter(pk__in=reply_ids, role=Message.Role.ASSISTANT).exclude(
            status=Message.Status.STREAMING
        )
    )
    if not ended:
        return []
    dead = workers_dead(worker_ids={m.worker for m in ended if m.worker})
    long_ago = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    return [m for m in ended if m.worker in dead or (m.finished_at is not None and m.finished_at < long_ago)]
