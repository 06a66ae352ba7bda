"""The per-user send limits: messages a minute, replies streaming at once
(``CHATSITE_MAX_MESSAGES_PER_MINUTE``, ``CHATSITE_MAX_CONCURRENT_REPLIES``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.utils import timezone

from conversations.exceptions import Refusal, TooManyMessages, TooManyReplies
from conversations.models import Conversation, Message


def limits_check(*, user: AbstractBaseUser, count_message: bool = True, replies: int = 1) -> None:
    """Raise the refusal for one user's send (``count_message=False``: a new
    reply to a stored message, which counts only against the streaming limit;
    ``replies``: how many replies it starts, each counted, e.g. a compare's columns)."""
    recent, streaming = limits_usage(user_ids={user.pk}, count_messages=count_message).get(user.pk, (0, 0))
    refusal = limits_refusal(recent=recent, streaming=streaming, replies=replies)
    if refusal is not None:
        raise refusal


def limits_usage(*, user_ids: set[int], count_messages: bool = True) -> dict[int, tuple[int, int]]:
    """For each user: (messages sent in the last minute, replies streaming).

    Two grouped counts for all the users at once, each of a shape the
    indexes serve (a user's recent messages by (conversation, created_at),
    streaming replies by status), not one count per user. Written as SQL:
    they run before every send's upstream request, and the ORM took longer to
    build each (about 1 ms) than the database took to answer it.
    """
    per_minute = settings.CHATSITE_MAX_MESSAGES_PER_MINUTE
    concurrent = settings.CHATSITE_MAX_CONCURRENT_REPLIES
    recent: dict[int, int] = {}
    streaming: dict[int, int] = {}
    if user_ids and per_minute and count_messages:
        since = timezone.now() - timedelta(seconds=60)
        recent = _messages_by_user(
            user_ids=user_ids,
            where=f"m.{_q('created_at')} >= %s AND m.{_q('role')} = %s",
            params=[connection.ops.adapt_datetimefield_value(since), Message.Role.USER],
        )
    if user_ids and concurrent:
        streaming = _messages_by_user(
            user_ids=user_ids, where=f"m.{_q('status')} = %s", params=[Message.Status.STREAMING]
        )
    return {user: (recent.get(user, 0), streaming.get(user, 0)) for user in user_ids}


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _messages_by_user(*, user_ids: set[int], where: str, params: list[Any]) -> dict[int, int]:
    """How many of each user's messages match ``where`` (on the message, ``m``),
    for the users who have any: the ORM's own join and grouping, without its
    per-query build."""
    message, conversation = Message._meta, Conversation._meta
    marks = ", ".join(["%s"] * len(user_ids))
    sql = (
        f"SELECT c.{_q(conversation.get_field('user').column)}, COUNT(*) "
        f"FROM {_q(message.db_table)} m INNER JOIN {_q(conversation.db_table)} c "
        f"ON m.{_q(message.get_field('conversation').column)} = c.{_q(conversation.pk.column)} "
        f"WHERE c.{_q(conversation.get_field('user').column)} IN ({marks}) AND {where} GROUP BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*user_ids, *params])
        return {user: count for user, count in cursor.fetchall()}


def limits_refusal(*, recent: int, streaming: int, replies: int = 1) -> Refusal | None:
    """The refusal for a user with ``recent`` messages in the last minute and
    ``streaming`` replies running, or None if ``replies`` more are allowed
    (all of them: a compare is refused whole, never cut short)."""
    per_minute = settings.CHATSITE_MAX_MESSAGES_PER_MINUTE
    if per_minute and recent >= per_minute:
        return TooManyMessages(per_minute=per_minute)
    concurrent = settings.CHATSITE_MAX_CONCURRENT_REPLIES
    if concurrent and streaming + replies > concurrent:
        return TooManyReplies(concurrent=concurrent)
    return None
