"""Reads. Keyword-only, typed, and always scoped to the asking user."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet, Sum, Value
from django.utils import timezone

from conversations import pricing, tree
from conversations.exceptions import InvalidCursor
from conversations.models import Attachment, Conversation, Message, Share


def session_is_live(*, session_key: str, user_id: int) -> bool:
    """Whether the session still exists and still logs in this user.

    Django's own check, on a fresh copy of the session: a deleted session
    holds no user, and one whose password hash no longer matches is flushed.
    Two queries, so a socket's periodic re-check is one trip to the database
    thread.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.pk == user_id)


def conversation_get(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> Conversation | None:
    """The user's conversation, or None for a missing id and for another user's alike."""
    return Conversation.objects.filter(pk=conversation_id, user=user).first()


# --- The conversation list -------------------------------------------------
#
# Pinned conversations first, then newest activity first; ties on updated_at are
# broken by id, so the order is total and a keyset cursor (pinned, updated_at,
# id) can resume it exactly. Each of the two pinned partitions is read with an
# equality on (user, archived, pinned) and a range on updated_at, in the order
# of the ``conv_user_list`` index (user, archived, -pinned, -updated_at, id): no
# OFFSET, so any page costs about what the first one does.

LIST_MAX_LIMIT = 200
#: The fields of a list item (conversation_item_to_dict), besides its group.
LIST_FIELDS = ("id", "title", "model", "updated_at", "pinned", "archived")
#: Sidebar groups, in display order.
GROUPS = ("pinned", "today", "yesterday", "last_7_days", "older")
#: Bounds of a UTC offset in minutes (UTC-14:00 .. UTC+14:00).
TZ_OFFSET_MAX = 14 * 60


@dataclass(frozen=True, slots=True)
class ConversationItem:
    conversation: Conversation
    group: str  # one of GROUPS


@dataclass(frozen=True, slots=True)
class ConversationPage:
    items: list[ConversationItem]
    next_cursor: str | None  # None: this is the last page

    def __iter__(self) -> Iterator[Conversation]:
        """The page's conversations, for callers that need no groups."""
        return (item.conversation for item in self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class _Position:
    pinned: bool
    updated_at: datetime
    id: uuid.UUID


def _cursor_encode(conversation: Conversation) -> str:
    raw = json.dumps(
        [int(conversation.pinned), conversation.updated_at.isoformat(), conversation.id.hex],
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> _Position:
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        pinned, updated_at, ident = json.loads(raw)
        if pinned not in (0, 1) or not isinstance(updated_at, str) or not isinstance(ident, str):
            raise ValueError("bad fields")
        when = datetime.fromisoformat(updated_at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return _Position(bool(pinned), when, uuid.UUID(hex=ident))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor() from exc


def conversation_group(*, conversation: Conversation, today: date, tz: dt_timezone = UTC) -> str:
    """The sidebar group: "pinned", else by the local day of the last activity:
    "today", "yesterday", "last_7_days" (2 to 6 days ago), "older"."""
    if conversation.pinned:
        return "pinned"
    days = (today - conversation.updated_at.astimezone(tz).date()).days
    if days <= 0:  # today, or a clock a little ahead
        return "today"
    if days == 1:
        return "yesterday"
    if days < 7:
        return "last_7_days"
    return "older"


def _list_partition(
    *, user: AbstractBaseUser, archived: bool, pinned: bool, after: _Position | None
) -> QuerySet[Conversation]:
    """The pinned (or unpinned) conversations in list order, after ``after``."""
    # Value(): Django writes ``flag=False`` as ``NOT flag``, which SQLite cannot
    # match to an index column; ``flag = false`` it can (PostgreSQL takes both).
    # Whole rows: callers serialize them with conversation_to_dict, whose fields
    # grow, and a deferred field would cost a query per row (and fail outright
    # in an async view).
    qs = Conversation.objects.filter(user=user, archived=Value(archived), pinned=Value(pinned)).order_by(
        "-updated_at", "id"
    )
    if after is not None:
        # (updated_at, id) after the cursor's in (-updated_at, id) order; the
        # redundant ``updated_at <= u`` lets the index seek straight to it.
        qs = qs.filter(
            Q(updated_at__lt=after.updated_at) | Q(updated_at=after.updated_at, id__gt=after.id),
            updated_at__lte=after.updated_at,
        )
    return qs


def conversation_list(
    *,
    user: AbstractBaseUser,
    archived: bool = False,
    cursor: str | None = None,
    limit: int = 50,
    tz_offset: int = 0,
    now: datetime | None = None,
) -> ConversationPage:
    """One page of the user's conversations (archived ones, or the others).

    ``cursor`` is the ``next_cursor`` of the previous page (None: the first
    page); ``tz_offset`` is the client's offset from UTC in minutes, east
    positive (UTC+02:00 is 120), and only decides the groups. Raises
    :class:`InvalidCursor`.
    """
    limit = max(1, min(int(limit), LIST_MAX_LIMIT))
    tz, today = _local_today(tz_offset, now)  # validates tz_offset before any query
    position = _cursor_decode(cursor) if cursor else None
    rows: list[Conversation] = []
    # A cursor among the unpinned ones is past every pinned one.
    partitions = (False,) if position is not None and not position.pinned else (True, False)
    for pinned in partitions:
        after = position if position is not None and position.pinned == pinned else None
        qs = _list_partition(user=user, archived=archived, pinned=pinned, after=after)
        rows.extend(qs[: limit + 1 - len(rows)])
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return ConversationPage(
        items=[ConversationItem(c, conversation_group(conversation=c, today=today, tz=tz)) for c in rows],
        next_cursor=_cursor_encode(rows[-1]) if more else None,
    )


def _local_today(tz_offset: int, now: datetime | None) -> tuple[dt_timezone, date]:
    if not -TZ_OFFSET_MAX <= tz_offset <= TZ_OFFSET_MAX:
        raise ValueError(f"tz_offset must be within ±{TZ_OFFSET_MAX} minutes")
    tz = dt_timezone(timedelta(minutes=tz_offset))
    return tz, (now or timezone.now()).astimezone(tz).date()


def conversation_item(
    *, conversation: Conversation, tz_offset: int = 0, now: datetime | None = None
) -> ConversationItem:
    """One conversation as the list shows it (with its group)."""
    tz, today = _local_today(tz_offset, now)
    return ConversationItem(conversation, conversation_group(conversation=conversation, today=today, tz=tz))


def conversation_streaming_reply_ids(
    *, user: AbstractBaseUser, conversation_id: uuid.UUID
) -> list[uuid.UUID]:
    """The replies of the user's conversation that the database says are still
    streaming, in this process or in any other."""
    return list(
        Message.objects.filter(
            conversation_id=conversation_id,
            conversation__user=user,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
        ).values_list("pk", flat=True)
    )


def conversation_client_id_seen(
    *, user: AbstractBaseUser, conversation_id: uuid.UUID, client_id: str
) -> bool:
    """Whether a message of the user's conversation carries ``client_id``: a
    ``send`` with it was stored before (so another is only its retry)."""
    return Message.objects.filter(
        conversation_id=conversation_id, conversation__user=user, client_id=client_id
    ).exists()


def reply_get(*, user_id: int, reply_id: uuid.UUID | str) -> Message | None:
    """The user's reply (an assistant message), or None for a missing id and for
    another user's alike."""
    return Message.objects.filter(
        pk=reply_id, role=Message.Role.ASSISTANT, conversation__user_id=user_id
    ).first()


def conversation_last_reply(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> Message | bool | None:
    """The newest reply of the user's conversation; None if it has none, and
    False if there is no such conversation of the user's."""
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    if conversation is None:
        return False
    return conversation.messages.filter(role=Message.Role.ASSISTANT).order_by("-created_at").first()


def conversation_last_exchange(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> list[Message] | None:
    """The replies a subscriber follows: while a compare streams, every one of
    its replies (its columns, ended or not, in column order); while another
    reply streams, those streaming; else the newest reply alone (none: []).
    None if there is no such conversation of the user's."""
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    if conversation is None:
        return None
    replies = conversation.messages.filter(role=Message.Role.ASSISTANT)
    streaming = list(replies.filter(status=Message.Status.STREAMING).order_by("created_at", "pk"))
    if not streaming:
        last = replies.order_by("-created_at").first()
        return [last] if last is not None else []
    first = streaming[0]
    if first.client_id or first.segments or first.parent_id is None:
        return streaming  # a regenerate or a continue: no columns
    # A send's replies carry no client id (a regenerated sibling does).
    return list(replies.filter(parent_id=first.parent_id, client_id="").order_by("created_at", "pk"))


def message_list(*, conversation: Conversation) -> list[Message]:
    """The branch the user is looking at, first message first; each message of
    it carries ``sibling_ids``, its versions (regenerated replies, edited
    messages), oldest first."""
    messages = list(conversation.messages.prefetch_related("attachments"))
    path = tree.branch_path(messages=messages, leaf_id=conversation.active_leaf_id)
    if not path:  # no branch recorded: every message in order
        return tree.written_order(messages=messages)
    created = {m.pk: m.created_at for m in messages}
    versions = tree.children_of(parents={m.pk: m.parent_id for m in messages}, key=created.__getitem__)
    for m in path:
        m.sibling_ids = versions.get(m.parent_id, [m.pk])
    return path


def attachment_get(*, user: AbstractBaseUser, attachment_id: uuid.UUID) -> Attachment | None:
    """The user's attachment, or None for a missing id and for another user's alike."""
    return Attachment.objects.filter(pk=attachment_id, user=user).first()


def conversation_has_images(*, conversation_id: uuid.UUID) -> bool:
    """Whether any message of the conversation has an image attached."""
    return Attachment.objects.filter(
        messages__conversation_id=conversation_id, kind=Attachment.Kind.IMAGE
    ).exists()


# --- Shared links --------------------------------------------------------------
#
# A share is found by the SHA-256 of its token, never by comparing the token
# itself: how long a lookup takes says nothing about how close a guess came.

#: The longest token a link may carry (``secrets.token_urlsafe(24)`` makes 32 characters).
SHARE_TOKEN_MAX_CHARS = 64


def share_token_hash(*, token: str) -> str:
    """What a share's ``token_hash`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def share_by_token(*, token: str) -> Share | None:
    """The share a link names, with its owner; None for a token that never
    existed and for a revoked one alike."""
    if not token or len(token) > SHARE_TOKEN_MAX_CHARS:
        return None
    return Share.objects.select_related("owner").filter(token_hash=share_token_hash(token=token)).first()


def share_list(*, user: AbstractBaseUser, conversation_id: uuid.UUID | None = None) -> list[Share]:
    """The user's shares, newest first (of one conversation, if given)."""
    shares = Share.objects.filter(owner=user).defer("snapshot")
    if conversation_id is not None:
        shares = shares.filter(conversation_id=conversation_id)
    return list(shares.order_by("-created_at", "id"))


def share_get(*, user: AbstractBaseUser, share_id: uuid.UUID) -> Share | None:
    """The user's share, or None for a missing id and for another user's alike."""
    return Share.objects.filter(pk=share_id, owner=user).defer("snapshot").first()


def shared_conversation_ids(*, user: AbstractBaseUser) -> list[uuid.UUID]:
    """The user's conversations that have at least one shared link."""
    return list(Share.objects.filter(owner=user).values_list("conversation_id", flat=True).distinct())


# --- Usage ---------------------------------------------------------------------
#
# Totals of the usage stored per reply (prompt and completion tokens, whether
# chatsite counted them itself, the status), in one grouped query; a continued
# reply's earlier parts (``segments``) are read in a second, small one (only
# replies that have them), since their tokens were spent too. A stopped reply's
# tokens are what was generated until the stop, so its share of the totals is
# how an operator checks that a Stop stopped the spending.


@dataclass(slots=True)
class UsageTotals:
    """Usage of a group of replies (of one model, one user and model, or all)."""

    model: str = ""  # "<provider>/<model>"; "" for the sum over models
    user_id: int | None = None
    username: str = ""
    replies: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Replies whose tokens chatsite counted (or estimated), not reported by the upstream.
    counted_replies: int = 0
    stopped_replies: int = 0
    stopped_prompt_tokens: int = 0
    stopped_completion_tokens: int = 0
    #: Estimated cost (None: no price for the model; the sum: of the priced models).
    cost: Decimal | None = None
    stopped_cost: Decimal | None = None
    #: The models of the sum that have no price (the sum's cost leaves them out).
    unpriced_models: list[str] = field(default_factory=list)

    def add(self, other: UsageTotals) -> None:
        self.replies += other.replies
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.counted_replies += other.counted_replies
        self.stopped_replies += other.stopped_replies
        self.stopped_prompt_tokens += other.stopped_prompt_tokens
        self.stopped_completion_tokens += other.stopped_completion_tokens
        if other.cost is not None:
            zero = Decimal("0.000000")
            self.cost = (zero if self.cost is None else self.cost) + other.cost
            self.stopped_cost = (zero if self.stopped_cost is None else self.stopped_cost) + (
                zero if other.stopped_cost is None else other.stopped_cost
            )
        elif other.model and other.model not in self.unpriced_models:
            self.unpriced_models.append(other.model)


@dataclass(frozen=True, slots=True)
class ConversationUsage:
    total: UsageTotals
    models: list[UsageTotals]  # one per model, most completion tokens first


def _model_key(provider: str, model: str) -> str:
    return f"{provider}/{model}" if provider else model


def _usage_rows(replies: QuerySet[Message], keys: tuple[str, ...]) -> dict[tuple, UsageTotals]:
    """``replies`` totalled per (``keys``..., model): one grouped query, and one
    for the earlier parts of continued replies."""
    grouped = (
        replies.values(*keys, "provider", "model", "status")
        .annotate(
            n=Count("pk"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            counted=Count("pk", filter=Q(usage_counted=True)),
        )
        .order_by()
    )
    rows: dict[tuple, UsageTotals] = {}

    def row_for(values: dict) -> UsageTotals:
        model = _model_key(values["provider"], values["model"])
        key = (*(values[k] for k in keys), model)
        found = rows.get(key)
        if found is None:
            found = rows[key] = UsageTotals(model=model)
            if "conversation__user_id" in values:
                found.user_id = values["conversation__user_id"]
                found.username = values.get("conversation__user__username", "")
        return found

    for values in grouped:
        row = row_for(values)
        status = values["status"]
        prompt, completion = values["prompt"] or 0, values["completion"] or 0
        row.replies += values["n"]
        row.by_status[status] = row.by_status.get(status, 0) + values["n"]
        row.prompt_tokens += prompt
        row.completion_tokens += completion
        row.counted_replies += values["counted"]
        if status == Message.Status.STOPPED:
            row.stopped_replies += values["n"]
            row.stopped_prompt_tokens += prompt
            row.stopped_completion_tokens += completion
    continued = replies.exclude(segments=[]).values(*keys, "provider", "model", "segments").order_by()
    for values in continued:
        row = row_for(values)
        for segment in values["segments"] or []:
            prompt = int(segment.get("prompt_tokens") or 0)
            completion = int(segment.get("completion_tokens") or 0)
            row.prompt_tokens += prompt
            row.completion_tokens += completion
            if segment.get("status") == Message.Status.STOPPED:
                row.stopped_prompt_tokens += prompt
                row.stopped_completion_tokens += completion
    prices = pricing.price_table(prices=settings.CHATSITE_MODEL_PRICES)
    for row in rows.values():
        price = pricing.price_for(model=row.model, prices=prices)
        if price is not None:
            row.cost = pricing.cost_estimate(
                price=price, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens
            )
            row.stopped_cost = pricing.cost_estimate(
                price=price,
                prompt_tokens=row.stopped_prompt_tokens,
                completion_tokens=row.stopped_completion_tokens,
            )
    return rows


def usage_conversation(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> ConversationUsage | None:
    """The usage of the user's conversation, per model and in all; None for a
    missing id and for another user's alike."""
    if not Conversation.objects.filter(pk=conversation_id, user=user).exists():
        return None
    replies = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
    models = sorted(_usage_rows(replies, ()).values(), key=lambda r: (-r.completion_tokens, r.model))
    total = UsageTotals()
    for row in models:
        total.add(row)
    return ConversationUsage(total=total, models=models)


def usage_by_user_model(*, since: date | None = None, until: date | None = None) -> list[UsageTotals]:
    """Every user's usage per model, of replies made from ``since`` to ``until``
    (UTC days, both included; None: unbounded), by user name then model.

    For the staff's usage page in the admin: the one read not scoped to a user."""
    replies = Message.objects.filter(role=Message.Role.ASSISTANT)
    if since is not None:
        replies = replies.filter(created_at__gte=datetime.combine(since, datetime.min.time(), UTC))
    if until is not None:
        replies = replies.filter(
            created_at__lt=datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
        )
    rows = _usage_rows(replies, ("conversation__user_id", "conversation__user__username"))
    return sorted(rows.values(), key=lambda r: (r.username, r.model))
