"""Writes. Keyword-only, typed functions named <entity>_<action>; synchronous
(the async side calls them through ``database_sync_to_async``)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Count
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.prompt import ChatMessage

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


def branch_path(*, conversation: Conversation, leaf_id: uuid.UUID | None) -> list[Message]:
    """The messages from the first one down to ``leaf_id``, following parents."""
    if leaf_id is None:
        return []
    by_id = {m.pk: m for m in conversation.messages.only("id", "parent_id", "role", "content", "error_kind")}
    path: list[Message] = []
    node = by_id.get(leaf_id)
    while node is not None:
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    path.reverse()
    return path


def _prompt_for(conversation: Conversation, leaf_id: uuid.UUID) -> list[ChatMessage]:
    """The branch ending at ``leaf_id`` as the model should see it: the system
    prompt first, empty replies dropped, consecutive messages of one role merged,
    so every API accepts it."""
    prompt: list[ChatMessage] = []
    if conversation.system_prompt.strip():
        prompt.append(ChatMessage("system", conversation.system_prompt))
    path = branch_path(conversation=conversation, leaf_id=leaf_id)
    for i, message in enumerate(path):
        if not message.content:
            continue
        after = path[i + 1] if i + 1 < len(path) else None
        if after is not None and not after.content and after.error_kind == "context_length":
            # A message too long for the model: sending it again would fail
            # every later reply of the conversation the same way.
            continue
        if prompt and prompt[-1].role == message.role:
            prompt[-1] = ChatMessage(message.role, prompt[-1].content + "\n\n" + message.content)
        else:
            prompt.append(ChatMessage(message.role, message.content))
    return prompt


def exchange_start(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID | None,
    client_id: str,
    text: str,
    model: str,
    provider: str,
    edit_of: uuid.UUID | None = None,
) -> StartedExchange:
    """Store the user's message and an empty streaming reply, in one transaction.

    The message continues the branch the user is looking at; with ``edit_of``
    (a user message of the conversation) it becomes that message's sibling
    instead, starting a new branch. A client id seen before returns what was
    stored then (``created=False``).
    """
    kwargs = dict(
        user=user,
        conversation_id=conversation_id,
        client_id=client_id,
        text=text,
        model=model,
        provider=provider,
        edit_of=edit_of,
    )
    try:
        return _exchange_start(**kwargs)
    except IntegrityError:
        # A concurrent send with the same client id won the race; return its result.
        return _exchange_start(**kwargs)


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """One ``send``: the arguments of :func:`exchange_start`."""

    user: AbstractBaseUser
    conversation_id: uuid.UUID | None
    client_id: str
    text: str
    model: str
    provider: str
    edit_of: uuid.UUID | None = None


def exchange_start_many(*, requests: list[ExchangeRequest]) -> list[StartedExchange | Exception]:
    """Store many sends at once (a group commit): the result or the refusal of each, in order.

    Sends that start a new conversation are stored together: one query for
    the client ids seen before, one for every sender's limits, then one
    ``INSERT`` of all the conversations and one of all their messages, in one
    transaction. Other sends (and, should the batch fail, every send) go
    through :func:`exchange_start` one by one, each in its own transaction.
    A refusal is returned, not raised, so one send cannot fail the others.
    """
    results: list[StartedExchange | Exception | None] = [None] * len(requests)
    fresh = [i for i, r in enumerate(requests) if r.conversation_id is None and r.edit_of is None]
    if fresh:
        try:
            for i, result in _exchange_start_new_many([requests[i] for i in fresh]).items():
                results[fresh[i]] = result
        except IntegrityError:
            # A concurrent send with one of these client ids won a race: one by one.
            pass
    for i, request in enumerate(requests):
        if results[i] is not None:
            continue
        try:
            args = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
            results[i] = exchange_start(**args)
        except (NotFound, ReplyRunning, TooManyMessages, TooManyReplies) as exc:
            results[i] = exc
    return results  # type: ignore[return-value]


def _exchange_start_new_many(requests: list[ExchangeRequest]) -> dict[int, StartedExchange | Exception]:
    """New conversations for many sends (see :func:`exchange_start_many`)."""
    out: dict[int, StartedExchange | Exception] = {}
    with transaction.atomic():
        seen = {
            (c.user_id, c.client_id): c
            for c in Conversation.objects.filter(
                user__in={r.user.pk for r in requests}, client_id__in={r.client_id for r in requests}
            )
        }
        usage = _limit_usage({r.user.pk for r in requests})
        conversations: list[Conversation] = []
        messages: list[Message] = []
        batch_keys: set[tuple[int, str]] = set()
        for i, request in enumerate(requests):
            key = (request.user.pk, request.client_id)
            if key in seen or key in batch_keys:
                continue  # a retried send: answered one by one, below
            recent, streaming = usage.get(request.user.pk, (0, 0))
            refusal = _limit_refusal(recent, streaming)
            if refusal is not None:
                out[i] = refusal
                continue
            usage[request.user.pk] = (recent + 1, streaming + 1)
            batch_keys.add(key)
            conversation = Conversation(
                user=request.user,
                client_id=request.client_id,
                model=request.model,
                title=_title_from(request.text),
            )
            user_message = Message(
                conversation=conversation,
                role=Message.Role.USER,
                content=request.text,
                client_id=request.client_id,
            )
            reply = _reply_for(conversation, user_message, model=request.model, provider=request.provider)
            # The circular reference is fine: both foreign keys are checked at commit.
            conversation.active_leaf = reply
            conversations.append(conversation)
            messages += [user_message, reply]
            prompt = [ChatMessage("user", request.text)]
            out[i] = StartedExchange(conversation, user_message, reply, True, prompt)
        if conversations:
            Conversation.objects.bulk_create(conversations)
            Message.objects.bulk_create(messages)
    return out


def _existing(conversation: Conversation, message: Message) -> StartedExchange:
    if message.role == Message.Role.ASSISTANT:  # a regenerated reply carries the client id
        return StartedExchange(conversation, message.parent, message, False, [])
    reply = message.children.filter(role=Message.Role.ASSISTANT).order_by("created_at").first()
    if reply is None:  # pragma: no cover - both are always written together
        raise NotFound("the reply to this message is missing")
    return StartedExchange(conversation, message, reply, False, [])


def _locked_conversation(user: AbstractBaseUser, conversation_id: uuid.UUID) -> Conversation:
    # Locked, so two processes cannot both start a reply in it.
    conversation = Conversation.objects.select_for_update().filter(pk=conversation_id, user=user).first()
    if conversation is None:
        raise NotFound("no such conversation")
    return conversation


def _reply_for(
    conversation: Conversation, parent: Message, *, model: str, provider: str, client_id: str = ""
) -> Message:
    """An empty streaming reply (not saved yet)."""
    return Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        provider=provider,
        model=model.partition("/")[2],
        worker=WORKER_ID,
        client_id=client_id,
    )


def _new_reply(
    conversation: Conversation, parent: Message, *, model: str, provider: str, client_id: str = ""
) -> Message:
    reply = _reply_for(conversation, parent, model=model, provider=provider, client_id=client_id)
    reply.save(force_insert=True)
    conversation.model = model
    conversation.active_leaf = reply
    conversation.save(update_fields=["model", "active_leaf", "updated_at"])
    return reply


def _exchange_start(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID | None,
    client_id: str,
    text: str,
    model: str,
    provider: str,
    edit_of: uuid.UUID | None,
) -> StartedExchange:
    # The hot path of every reply start: keep its statements few.
    with transaction.atomic():
        conversation = None
        if conversation_id is None:
            conversation = Conversation.objects.filter(user=user, client_id=client_id).first()
            new = conversation is None
            if new:
                _check_limits(user)
                conversation = Conversation.objects.create(
                    user=user, client_id=client_id, model=model, title=_title_from(text)
                )
        else:
            new = False
            conversation = _locked_conversation(user, conversation_id)
        parent_id = None
        if not new:
            seen = conversation.messages.filter(client_id=client_id).first()
            if seen is not None:
                return _existing(conversation, seen)
            parent_id = conversation.active_leaf_id
            if edit_of is not None:
                edited = conversation.messages.filter(pk=edit_of, role=Message.Role.USER).first()
                if edited is None:
                    raise NotFound("no such message")
                parent_id = edited.parent_id
            if conversation.messages.filter(status=Message.Status.STREAMING).exists():
                raise ReplyRunning()
            _check_limits(user)
        user_message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=text,
            client_id=client_id,
            parent_id=parent_id,
        )
        reply = _new_reply(conversation, user_message, model=model, provider=provider)
        if new:  # nothing before it: no need to read the branch back
            prompt = [ChatMessage("user", text)]
        else:
            prompt = _prompt_for(conversation, user_message.pk)
    return StartedExchange(conversation, user_message, reply, True, prompt)


def reply_regenerate(
    *, user: AbstractBaseUser, reply_id: uuid.UUID, client_id: str, model: str, provider: str
) -> StartedExchange:
    """A new reply to the same message, kept as a sibling of ``reply_id``."""
    with transaction.atomic():
        old = Message.objects.filter(
            pk=reply_id, role=Message.Role.ASSISTANT, conversation__user=user
        ).first()
        if old is None or old.parent_id is None:
            raise NotFound("no such reply")
        conversation = _locked_conversation(user, old.conversation_id)
        seen = conversation.messages.filter(client_id=client_id).first()
        if seen is not None:
            return _existing(conversation, seen)
        if conversation.messages.filter(status=Message.Status.STREAMING).exists():
            raise ReplyRunning()
        _check_limits(user, count_message=False)
        parent = old.parent
        reply = _new_reply(conversation, parent, model=model, provider=provider, client_id=client_id)
        prompt = _prompt_for(conversation, parent.pk)
    return StartedExchange(conversation, parent, reply, True, prompt)


CONTINUE_INSTRUCTION = (
    "Continue your previous message exactly where it stopped. Do not repeat any of it "
    "and do not add a preamble."
)


@dataclass(frozen=True, slots=True)
class Continuation:
    conversation: Conversation
    reply: Message
    prompt: list[ChatMessage]
    keep_last: int = 1  # the newest turn: always sent, however long the history


def reply_continue(*, user: AbstractBaseUser, reply_id: uuid.UUID, prefill: bool) -> Continuation:
    """Reopen a stopped, interrupted or cut reply so the model can go on.

    The earlier part's metrics move to ``segments``; the text and ``last_seq``
    stay, and the continuation is appended to them. With ``prefill`` the
    partial reply is the last message of the prompt (APIs that continue it);
    otherwise an instruction to continue follows it.
    """
    with transaction.atomic():
        reply = Message.objects.filter(
            pk=reply_id, role=Message.Role.ASSISTANT, conversation__user=user
        ).first()
        if reply is None:
            raise NotFound("no such reply")
        conversation = _locked_conversation(user, reply.conversation_id)
        if not reply_is_continuable(status=reply.status, content=reply.content):
            raise NotContinuable(has_text=bool(reply.content.strip()))
        if conversation.messages.filter(status=Message.Status.STREAMING).exists():
            raise ReplyRunning()
        _check_limits(user, count_message=False)
        segments = [*reply.segments, _segment_of(reply)]
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.STREAMING,
            worker=WORKER_ID,
            segments=segments,
            error_kind="",
            error_message="",
            finished_at=None,
        )
        reply.refresh_from_db()
        conversation.active_leaf = reply
        conversation.save(update_fields=["active_leaf", "updated_at"])
        prompt = _prompt_for(conversation, reply.parent_id) if reply.parent_id else []
        keep_last = 1  # the message replied to
        if reply.content:
            if prefill:
                prompt.append(ChatMessage("assistant", reply.content.rstrip()))
                keep_last = 2
            else:
                prompt.append(ChatMessage("assistant", reply.content))
                prompt.append(ChatMessage("user", CONTINUE_INSTRUCTION))
                keep_last = 3
    return Continuation(conversation, reply, prompt, keep_last)


def _segment_of(reply: Message) -> dict:
    return {
        "status": reply.status,
        "error_kind": reply.error_kind or None,
        "last_seq": reply.last_seq,
        "chars": len(reply.content),
        "ttft_ms": reply.ttft_ms,
        "tokens_per_s": reply.tokens_per_s,
        "total_ms": reply.total_ms,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "finish_reason": reply.finish_reason or None,
    }


#: The statuses of a reply that can be continued (when it has text).
CONTINUABLE_STATUSES = frozenset({Message.Status.STOPPED, Message.Status.INTERRUPTED, Message.Status.ERROR})


def reply_is_continuable(*, status: str, content: str) -> bool:
    """Whether "Continue" can go on with a reply: it ended early (stopped,
    interrupted or failed) and has text to go on from. A reply with no text has
    nothing to continue; it can be regenerated. The page applies the same rule
    (``static/chat/app.js``, ``updateMessageActions``)."""
    return status in CONTINUABLE_STATUSES and bool(content.strip())


class NotContinuable(Exception):
    """Only a stopped, interrupted or errored reply with text can be continued."""

    def __init__(self, *, has_text: bool = True) -> None:
        super().__init__("not continuable")
        self.has_text = has_text


def conversation_select_branch(*, user: AbstractBaseUser, message_id: uuid.UUID) -> Conversation:
    """Show the branch through ``message_id``: its newest descendants down to a leaf."""
    with transaction.atomic():
        message = Message.objects.filter(pk=message_id, conversation__user=user).first()
        if message is None:
            raise NotFound("no such message")
        conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
        children: dict[uuid.UUID | None, list[tuple]] = {}
        for pk, parent_id, created_at in conversation.messages.values_list("pk", "parent_id", "created_at"):
            children.setdefault(parent_id, []).append((created_at, pk))
        leaf = message.pk
        while children.get(leaf):
            leaf = max(children[leaf])[1]
        conversation.active_leaf_id = leaf
        conversation.save(update_fields=["active_leaf"])
    return conversation


class ReplyRunning(Exception):
    """The conversation already has a reply streaming."""


def _check_limits(user: AbstractBaseUser, *, count_message: bool = True) -> None:
    """Raise the refusal for one user's send (``count_message=False``: a new
    reply to a stored message, which counts only against the streaming limit)."""
    recent, streaming = _limit_usage({user.pk}, count_messages=count_message).get(user.pk, (0, 0))
    refusal = _limit_refusal(recent, streaming)
    if refusal is not None:
        raise refusal


def _limit_usage(user_ids: set[int], *, count_messages: bool = True) -> dict[int, tuple[int, int]]:
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


def _limit_refusal(recent: int, streaming: int) -> Exception | None:
    per_minute = settings.CHATSITE_MAX_MESSAGES_PER_MINUTE
    if per_minute and recent >= per_minute:
        return TooManyMessages()
    concurrent = settings.CHATSITE_MAX_CONCURRENT_REPLIES
    if concurrent and streaming >= concurrent:
        return TooManyReplies()
    return None


def reply_checkpoint_many(*, checkpoints: list[tuple[uuid.UUID, str, int]]) -> None:
    """Save the partial text of many streaming replies: one statement, one transaction."""
    if not checkpoints:
        return
    from django.db import connection

    table = connection.ops.quote_name(Message._meta.db_table)
    id_field = Message._meta.pk
    rows = [
        (content, last_seq, id_field.get_db_prep_value(reply_id, connection), Message.Status.STREAMING.value)
        for reply_id, content, last_seq in checkpoints
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET content = %s, last_seq = %s WHERE id = %s AND status = %s", rows
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
    from django.db import connection

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


def worker_heartbeat(*, channel: str) -> None:
    """Record that this process is alive and where to reach it."""
    from conversations.models import Worker

    Worker.objects.update_or_create(
        pk=WORKER_ID, defaults={"channel": channel, "heartbeat_at": timezone.now()}
    )


def worker_channel(*, worker_id: str) -> str | None:
    """The channel of a live worker, or None if it is unknown or stale."""
    from conversations.models import Worker

    fresh_after = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    worker = Worker.objects.filter(pk=worker_id, heartbeat_at__gte=fresh_after).first()
    return worker.channel if worker is not None and worker.channel else None


def _pid_alive_here(worker: str) -> bool | None:
    """For a worker of this host: is its process alive? None for other hosts."""
    parts = worker.split(":")
    if len(parts) != 3 or parts[0] != WORKER_ID.split(":", 1)[0]:
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    if pid == os.getpid():
        # Our pid under another start time: a previous life of this container.
        return worker == WORKER_ID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_workers(worker_ids: set[str]) -> set[str]:
    """Those of ``worker_ids`` whose process is dead: on this host with its pid
    gone, or with a heartbeat older than ``CHATSITE_WORKER_STALE``."""
    from conversations.models import Worker

    fresh_after = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    alive = set(
        Worker.objects.filter(pk__in=worker_ids, heartbeat_at__gte=fresh_after).values_list("pk", flat=True)
    )
    dead = set()
    for worker in worker_ids:
        here = _pid_alive_here(worker)
        if here is False or (here is None and worker not in alive):
            dead.add(worker)
    return dead


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
    for worker in _dead_workers(workers):
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
    dead = _dead_workers({m.worker for m in ended if m.worker})
    long_ago = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    return [m for m in ended if m.worker in dead or (m.finished_at is not None and m.finished_at < long_ago)]


class TooManyMessages(Exception):
    pass


class TooManyReplies(Exception):
    pass


# --- The conversation list: rename, pin, archive, delete ----------------------

TITLE_MAX_CHARS = 200


class InvalidTitle(ValueError):
    """A title that is empty once trimmed, or longer than TITLE_MAX_CHARS."""


def title_clean(title: str) -> str:
    """A title as stored: control characters dropped, runs of whitespace (newlines
    included) made one space, trimmed. Raises :class:`InvalidTitle`."""
    import unicodedata

    text = "".join(ch for ch in title if not unicodedata.category(ch).startswith("C") or ch in "\t\n\r")
    text = " ".join(text.split())
    if not text:
        raise InvalidTitle("the title is empty")
    if len(text) > TITLE_MAX_CHARS:
        raise InvalidTitle(f"the title is longer than {TITLE_MAX_CHARS} characters")
    return text


def conversation_update(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID,
    title: str | None = None,
    pinned: bool | None = None,
    archived: bool | None = None,
    options: dict | None = None,
) -> Conversation:
    """Rename, pin or unpin, archive or unarchive one of the user's conversations
    (any of them at once; None leaves a field as it is). A new title is the
    user's: automatic titles never overwrite it. The last activity time is not
    changed, so none of this moves the conversation in the list by date.

    Raises :class:`NotFound` (a missing id and another user's alike) and
    :class:`InvalidTitle`; nothing is changed then.
    """
    fields: dict = {}
    if title is not None:
        fields.update(title=title_clean(title), title_is_auto=False)
    if pinned is not None:
        fields["pinned"] = bool(pinned)
    if archived is not None:
        fields["archived"] = bool(archived)
    # The conversation's own system prompt and sampling (validated by the caller;
    # None for temperature / max_tokens means the provider's default).
    fields.update(options or {})
    with transaction.atomic():
        mine = Conversation.objects.filter(pk=conversation_id, user=user)
        if fields and not mine.update(**fields):
            raise NotFound("no such conversation")
        conversation = mine.first()
    if conversation is None:
        raise NotFound("no such conversation")
    return conversation


def conversation_delete(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> None:
    """Delete one of the user's conversations with all its messages.

    A reply still streaming in it must be stopped first (the HTTP view does:
    :func:`conversations.views.history.conversation_delete`). Raises
    :class:`NotFound`.
    """
    with transaction.atomic():
        deleted, _ = Conversation.objects.filter(pk=conversation_id, user=user).delete()
    if not deleted:
        raise NotFound("no such conversation")


class SignupClosed(Exception):
    """An account exists, and CHATSITE_ALLOW_SIGNUP is off."""


class UsernameTaken(Exception):
    """Another sign-up took the name first."""


#: Serializes sign-ups on PostgreSQL (an advisory lock; SQLite's IMMEDIATE
#: transactions already take the write lock up front).
_SIGNUP_LOCK = 0x63686174  # "chat"


def account_create(*, username: str, email: str, password: str) -> AbstractBaseUser:
    """A new account; the very first one becomes the administrator.

    Whether it is the first (and whether sign-up is open) is decided under a lock
    held until the account is committed, so two sign-ups racing on an empty
    database create one administrator, and with sign-up closed, one account."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    user_model = get_user_model()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SIGNUP_LOCK])
        first = not user_model.objects.exists()
        if not first and not settings.CHATSITE_ALLOW_SIGNUP:
            raise SignupClosed()
        if user_model.objects.filter(username=username).exists():
            raise UsernameTaken()
        user = user_model(username=username, email=email, is_staff=first, is_superuser=first)
        user.set_password(password)
        user.save()
    return user
