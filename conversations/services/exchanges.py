"""A send, a regenerate, a continue: the user's message and an empty streaming
reply stored together, and the prompt the reply is written from."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connection, transaction

from conversations import tree
from conversations.exceptions import ModelCannotSee, NotContinuable, NotFound, Refusal, ReplyRunning
from conversations.models import Attachment, Conversation, Message
from conversations.prompt import ChatMessage, ImagePart
from conversations.services import attachments as attachment_services
from conversations.services.conversations import title_auto
from conversations.services.limits import limits_check, limits_refusal, limits_usage
from conversations.services.workers import WORKER_ID


@dataclass(frozen=True, slots=True)
class StartedExchange:
    conversation: Conversation
    user_message: Message
    reply: Message
    created: bool  # False: the client id was seen before; nothing new was stored
    prompt: list[ChatMessage]
    #: A compare's other replies, after ``reply`` (the first column), in column order.
    others: tuple[Message, ...] = ()

    @property
    def replies(self) -> tuple[Message, ...]:
        """Every reply to the message, in column order (one unless a compare)."""
        return (self.reply, *self.others)


#: Called with a new exchange inside the transaction that stores it, once every
#: check that can refuse it has passed and its prompt is built: before its rows
#: are written (a new conversation, :func:`exchange_start_many`) or just before
#: the commit (see :func:`exchange_start`).
BeforeCommit = Callable[[StartedExchange], None]


def branch_path(*, conversation: Conversation, leaf_id: uuid.UUID | None) -> list[Message]:
    """The messages from the first one down to ``leaf_id``, following parents."""
    if leaf_id is None:
        return []
    messages = conversation.messages.only("id", "parent_id", "role", "content", "error_kind")
    return tree.branch_path(messages=messages, leaf_id=leaf_id)


def _user_prompt(text: str, attachments: list[Attachment], sees_images: bool) -> ChatMessage:
    """A user message as the model reads it: each attached file's text under
    its name, then what the user wrote; the images (to a model that sees them)."""
    parts = [
        attachment_services.attachment_prompt_text(attachment=a, sees_images=sees_images) for a in attachments
    ]
    content = "\n\n".join(p for p in [*parts, text] if p)
    images: tuple[ImagePart, ...] = ()
    if sees_images:
        images = tuple(
            attachment_services.attachment_image(attachment=a)
            for a in attachments
            if a.kind == Attachment.Kind.IMAGE
        )
    return ChatMessage("user", content, images)


def _attachments_of(message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Attachment]]:
    """The attachments of each of these messages, in one query."""
    through = Attachment.messages.through
    found: dict[uuid.UUID, list[Attachment]] = {}
    if message_ids:
        rows = through.objects.filter(message_id__in=message_ids).select_related("attachment")
        for row in rows.order_by("attachment__created_at"):
            found.setdefault(row.message_id, []).append(row.attachment)
    return found


def _refuse_unseen(attachments: list[Attachment], sees_images: bool, model: str) -> None:
    if not sees_images and any(a.kind == Attachment.Kind.IMAGE for a in attachments):
        raise ModelCannotSee(model=model.partition("/")[2] or model)


def _prompt_for(
    conversation: Conversation, leaf_id: uuid.UUID, sees_images: bool = False
) -> list[ChatMessage]:
    """The branch ending at ``leaf_id`` as the model should see it: the system
    prompt first, empty replies dropped, consecutive messages of one role merged,
    so every API accepts it; user messages with their attachments (images as a
    note to a model that cannot see them)."""
    prompt: list[ChatMessage] = []
    if conversation.system_prompt.strip():
        prompt.append(ChatMessage("system", conversation.system_prompt))
    path = branch_path(conversation=conversation, leaf_id=leaf_id)
    attached = _attachments_of([m.pk for m in path if m.role == Message.Role.USER])
    for i, message in enumerate(path):
        files = attached.get(message.pk, [])
        if not message.content and not files:
            continue
        after = path[i + 1] if i + 1 < len(path) else None
        if after is not None and not after.content and after.error_kind == "context_length":
            # A message too long for the model: sending it again would fail
            # every later reply of the conversation the same way.
            continue
        turn = (
            _user_prompt(message.content, files, sees_images)
            if files
            else ChatMessage(message.role, message.content)
        )
        if prompt and prompt[-1].role == message.role:
            before = prompt[-1]
            prompt[-1] = ChatMessage(
                message.role, before.content + "\n\n" + turn.content, before.images + turn.images
            )
        else:
            prompt.append(turn)
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
    attachments: tuple[uuid.UUID, ...] = (),
    sees_images: bool = False,
    compare: tuple[tuple[str, str], ...] = (),
    before_commit: BeforeCommit | None = None,
) -> StartedExchange:
    """Store the user's message and an empty streaming reply, in one transaction.

    The message continues the branch the user is looking at; with ``edit_of``
    (a user message of the conversation) it becomes that message's sibling
    instead, starting a new branch. A client id seen before returns what was
    stored then (``created=False``). ``attachments`` (the user's uploads) are
    put on the message; images to a model that cannot see them
    (``sees_images`` false) are refused before anything is stored.

    ``compare`` (``(model, provider)`` pairs) adds one more streaming reply
    per model, siblings of the first: a compare, stored whole or not at all,
    each reply counted against the concurrent-reply limit. The first reply
    is the active branch until the user picks another.

    ``before_commit`` is called with the new exchange inside the transaction,
    once every check that can refuse it has passed (ownership, a retried
    client id, a running reply, the limits) and its rows and prompt are ready,
    just before the commit: so a caller can start work on it while the
    commit happens. The commit can still fail (the exception is raised, and
    nothing is stored), and a send that races another with the same client id
    is stored again, calling it again with the exchange that was stored; it is
    never called for a refusal or a retry.
    """
    kwargs = dict(
        user=user,
        conversation_id=conversation_id,
        client_id=client_id,
        text=text,
        model=model,
        provider=provider,
        edit_of=edit_of,
        attachments=attachments,
        sees_images=sees_images,
        compare=compare,
        before_commit=before_commit,
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
    attachments: tuple[uuid.UUID, ...] = ()
    sees_images: bool = False
    #: A compare's other models, ``(model, provider)``, after ``model``.
    compare: tuple[tuple[str, str], ...] = ()
    #: Called with the new exchange just before its commit (see :func:`exchange_start`).
    before_commit: BeforeCommit | None = None


def exchange_start_many(
    *, requests: list[ExchangeRequest]
) -> list[StartedExchange | Refusal | DatabaseError]:
    """Store many sends at once (a group commit): the result or the refusal of each, in order.

    Sends that start a new conversation are stored together: one query for
    the client ids seen before, one for every sender's limits, then one
    ``INSERT`` of all the conversations and one of all their messages, in one
    transaction. Other sends (and, should the batch fail on a client id, every
    send) go through :func:`exchange_start` one by one, each in its own
    transaction. A refusal is returned, not raised, so one send cannot fail
    the others; so is a database error of a send stored on its own (its
    transaction rolled back; the others' stand). A database error of the
    group's transaction is raised: none of its sends is stored.

    Each request's ``before_commit`` is called as :func:`exchange_start` says;
    for the group, with each new exchange once the checks of all of them have
    passed, before their rows are written.
    """
    results: list[StartedExchange | Refusal | DatabaseError | None] = [None] * len(requests)
    fresh = [
        i
        for i, r in enumerate(requests)
        if r.conversation_id is None and r.edit_of is None and not r.attachments and not r.compare
    ]
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
        except (Refusal, DatabaseError) as exc:
            results[i] = exc
    return results  # type: ignore[return-value]


def _exchange_start_new_many(requests: list[ExchangeRequest]) -> dict[int, StartedExchange | Refusal]:
    """New conversations for many sends (see :func:`exchange_start_many`)."""
    out: dict[int, StartedExchange | Refusal] = {}
    with transaction.atomic():
        _client_ids_lock(keys=[(r.user.pk, r.client_id) for r in requests])
        seen = set(
            Conversation.objects.filter(
                user__in={r.user.pk for r in requests}, client_id__in={r.client_id for r in requests}
            )
            .order_by()
            .values_list("user_id", "client_id")
        )
        usage = limits_usage(user_ids={r.user.pk for r in requests})
        conversations: list[Conversation] = []
        messages: list[Message] = []
        batch_keys: set[tuple[int, str]] = set()
        for i, request in enumerate(requests):
            key = (request.user.pk, request.client_id)
            if key in seen or key in batch_keys:
                continue  # a retried send: answered one by one, below
            recent, streaming = usage.get(request.user.pk, (0, 0))
            refusal = limits_refusal(recent=recent, streaming=streaming)
            if refusal is not None:
                out[i] = refusal
                continue
            usage[request.user.pk] = (recent + 1, streaming + 1)
            batch_keys.add(key)
            conversation = Conversation(
                user=request.user,
                client_id=request.client_id,
                model=request.model,
                title=title_auto(text=request.text),
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
        # Every check that can refuse these sends has passed, exactly: no other
        # transaction can store one of their client ids meanwhile (SQLite's
        # IMMEDIATE transactions hold the write lock from the start; on
        # PostgreSQL, _client_ids_lock). Their replies may start while the rows
        # are written and committed.
        for i, result in out.items():
            callback = requests[i].before_commit
            if callback is not None and isinstance(result, StartedExchange):
                callback(result)
        if conversations:
            Conversation.objects.bulk_create(conversations)
            Message.objects.bulk_create(messages)
    return out


#: The first key of the advisory locks on (user, client id) pairs (PostgreSQL).
_CLIENT_ID_LOCKS = 0x63_68_61_74  # "chat"


def _lock_key(text: str) -> int:
    """A 32-bit advisory lock key for ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big", signed=True)


def _client_ids_lock(*, keys: list[tuple[int, str]]) -> None:
    """On PostgreSQL, lock each (user id, client id) of a new conversation until
    the commit, so that the check for a client id seen before is exact: a
    concurrent transaction storing the same one waits here, then finds it
    stored. (On SQLite the write lock, taken when the transaction begins, does
    this.)"""
    if connection.vendor != "postgresql":
        return
    ordered = sorted({_lock_key(f"{user_id}:{client_id}") for user_id, client_id in keys})
    # In one order for every transaction (unnest keeps the array's): no two
    # batches can deadlock on each other's locks.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, key) FROM unnest(%s::integer[]) AS key",
            [_CLIENT_ID_LOCKS, ordered],
        )


def _existing(conversation: Conversation, message: Message) -> StartedExchange:
    if message.role == Message.Role.ASSISTANT:  # a regenerated reply carries the client id
        return StartedExchange(conversation, message.parent, message, False, [])
    # The replies stored with it (a compare's several); regenerated ones carry a client id.
    replies = list(
        message.children.filter(role=Message.Role.ASSISTANT, client_id="").order_by("created_at", "pk")
    )
    if not replies:
        first = message.children.filter(role=Message.Role.ASSISTANT).order_by("created_at").first()
        if first is None:  # pragma: no cover - both are always written together
            raise NotFound("the reply to this message is missing")
        replies = [first]
    return StartedExchange(conversation, message, replies[0], False, [], tuple(replies[1:]))


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
    attachments: tuple[uuid.UUID, ...] = (),
    sees_images: bool = False,
    compare: tuple[tuple[str, str], ...] = (),
    before_commit: BeforeCommit | None = None,
) -> StartedExchange:
    # The hot path of every reply start: keep its statements few.
    replies = 1 + len(compare)
    with transaction.atomic():
        files = attachment_services.attachments_for_send(user=user, ids=attachments)
        _refuse_unseen(files, sees_images, model)
        conversation = None
        if conversation_id is None:
            _client_ids_lock(keys=[(user.pk, client_id)])
            conversation = Conversation.objects.filter(user=user, client_id=client_id).first()
            new = conversation is None
            if new:
                limits_check(user=user, replies=replies)
                title = title_auto(text=text) or title_auto(text=", ".join(a.name for a in files))
                conversation = Conversation.objects.create(
                    user=user, client_id=client_id, model=model, title=title
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
            limits_check(user=user, replies=replies)
        user_message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=text,
            client_id=client_id,
            parent_id=parent_id,
        )
        attachment_services.attachments_bind(message=user_message, attachments=files)
        reply = _new_reply(conversation, user_message, model=model, provider=provider)
        others = _compare_replies(conversation, user_message, reply, compare)
        if new:  # nothing before it: no need to read the branch back
            prompt = [_user_prompt(text, files, sees_images) if files else ChatMessage("user", text)]
        else:
            prompt = _prompt_for(conversation, user_message.pk, sees_images)
        started = StartedExchange(conversation, user_message, reply, True, prompt, others)
        if before_commit is not None:
            before_commit(started)
    return started


def _compare_replies(
    conversation: Conversation, parent: Message, first: Message, compare: tuple[tuple[str, str], ...]
) -> tuple[Message, ...]:
    """A compare's other replies, siblings of ``first``.

    Each is made a microsecond younger than the one before (``auto_now_add``
    would give two the same time on a coarse clock), so that the versions'
    order, by creation time, is the columns' order on every database."""
    others = []
    for i, (model, provider) in enumerate(compare, start=1):
        other = _reply_for(conversation, parent, model=model, provider=provider)
        other.save(force_insert=True)
        other.created_at = first.created_at + timedelta(microseconds=i)
        Message.objects.filter(pk=other.pk).update(created_at=other.created_at)
        others.append(other)
    return tuple(others)


def reply_regenerate(
    *,
    user: AbstractBaseUser,
    reply_id: uuid.UUID,
    client_id: str,
    model: str,
    provider: str,
    sees_images: bool = False,
) -> StartedExchange:
    """A new reply to the same message, kept as a sibling of ``reply_id`` (the
    message's attachments go with it; its images to a model that cannot see
    them are refused)."""
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
        limits_check(user=user, count_message=False)
        parent = old.parent
        _refuse_unseen(list(parent.attachments.all()), sees_images, model)
        reply = _new_reply(conversation, parent, model=model, provider=provider, client_id=client_id)
        prompt = _prompt_for(conversation, parent.pk, sees_images)
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


def reply_continue(
    *, user: AbstractBaseUser, reply_id: uuid.UUID, prefill: bool, sees_images: bool = False
) -> Continuation:
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
        if not reply_is_continuable(status=reply.status, content=reply.content, error_kind=reply.error_kind):
            raise NotContinuable(has_text=bool(reply.content.strip()))
        if conversation.messages.filter(status=Message.Status.STREAMING).exists():
            raise ReplyRunning()
        limits_check(user=user, count_message=False)
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
        prompt = _prompt_for(conversation, reply.parent_id, sees_images) if reply.parent_id else []
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


def reply_is_continuable(*, status: str, content: str, error_kind: str = "") -> bool:
    """Whether "Continue" can go on with a reply: it ended early (stopped,
    interrupted or failed) and has text to go on from. A reply with no text has
    nothing to continue; it can be regenerated. Nor does a reply a moderation
    rule stopped go on: the model would write on into what was stopped. The page
    applies the same rule (``static/chat/render.js``, ``updateMessageActions``)."""
    return status in CONTINUABLE_STATUSES and bool(content.strip()) and error_kind != "moderation"
