"""The per-user send limits: messages a minute, replies streaming at once
(``CHATSITE_MAX_MESSAGES_PER_MINUTE``, ``CHATSITE_MAX_CONCURRENT_REPLIES``)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count
from django.utils import timezone

from conversations.exceptions import Refusal, TooManyMessages, TooManyReplies
from conversations.models import Message


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
    streaming replies by status), not one count per user.
    """
    per_minute = settings.CHATSITE_MAX_MESSAGES_PER_MINUTE
    concurrent = settings.CHATSITE_MAX_CONCURRENT_REPLIES
    theirs = Message.objects.filter(conversation__user__in=user_ids)
    recent: dict[int, int] = {}
    streaming: dict[int, int] = {}
    if per_minute and count_messages:
        since = timezone.now() - timedelta(seconds=60)
        recent = dict(
            theirs.filter(role=Message.Role.USER, created_at__gte=since)
            .values("conversation__user")
            .annotate(n=Count("pk"))
            .values_list("conversation__user", "n")
        )
    if concurrent:
        streaming = dict(
            theirs.filter(status=Message.Status.STREAMING)
            .values("conversation__user")
            .annotate(n=Count("pk"))
            .values_list("conversation__user", "n")
        )
    return {user: (recent.get(user, 0), streaming.get(user, 0)) for user in user_ids}


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
