"""What a socket can ask for: start a reply, stop one, subscribe to one.

The consumer validates frames and calls these; they own the decisions
(ownership, idempotency, one running reply per conversation) and raise
:class:`protocol.ProtocolError` with the answer for the client. They talk to
the socket only through the :class:`~conversations.realtime.subscribers.Follower`
contract, read through :mod:`conversations.selectors` and write through
:mod:`conversations.services`.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import uuid
from collections.abc import Mapping

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, transaction

from conversations import moderation, selectors
from conversations.catalog import model_list_settled
from conversations.exceptions import PromptModerated, Refusal, ReplyRunning, refusal_answer
from conversations.models import Conversation, Message
from conversations.prompt import ChatMessage
from conversations.providers import ModelInfo, get_provider, split_model_id
from conversations.realtime import cluster, protocol, titles
from conversations.realtime.batching import Batcher
from conversations.realtime.registry import registry, reply_for_user
from conversations.realtime.replies import Reply, finished_frame
from conversations.realtime.subscribers import Follower, Subscriber
from conversations.services import exchanges as exchange_services
from conversations.services import workers as worker_services

log = logging.getLogger(__name__)


def model_default(*, models: list[ModelInfo]) -> str | None:
    """CHATSITE_DEFAULT_MODEL, else the first of ``models``."""
    configured: str | None = settings.CHATSITE_DEFAULT_MODEL
    if configured:
        return configured
    return models[0].id if models else None


async def _resolve_model(
    requested: str | None, conversation_id: uuid.UUID | None, user: AbstractBaseUser, client_id: str
) -> str:
    model = requested
    if model is None and conversation_id is not None:
        conversation = await database_sync_to_async(selectors.conversation_get)(
            user=user, conversation_id=conversation_id
        )
        model = conversation.model if conversation is not None else None
        if model is not None and get_provider(split_model_id(model)[0]) is None:
            model = None  # e.g. an imported conversation: go on with the default model
    if model is None:
        # A fresh process may not have listed its providers yet: wait for that, briefly
        # (not at all when CHATSITE_DEFAULT_MODEL names the model).
        model = settings.CHATSITE_DEFAULT_MODEL or model_default(
            models=await model_list_settled(timeout=settings.CHATSITE_MODELS_TIMEOUT)
        )
    if model is None:
        raise protocol.ProtocolError(
            "unknown_model",
            "no model is available: configure a provider (docs/configuration.md)",
            ref=client_id,
        )
    provider_name, name = split_model_id(model)
    provider = get_provider(provider_name)
    if provider is None or not name:
        raise protocol.ProtocolError("unknown_model", f"unknown model {model[:80]!r}", ref=client_id)
    if provider_name == "local" and all(m.name != name for m in await provider.list_models()):
        raise protocol.ProtocolError(
            "unknown_model", f"the offline model {name[:80]!r} is not installed", ref=client_id
        )
    return model


async def _sees_images(model: str) -> bool:
    """Whether the model takes images (its provider's list says, else what the
    backend knows, else CHATSITE_VISION_MODELS). A fresh process waits for its
    first model listing first (briefly), so a listed vision model is known."""
    provider_name, name = split_model_id(model)
    provider = get_provider(provider_name)
    if provider is None:
        return False
    if not provider.takes_images(model=name):
        await model_list_settled(timeout=settings.CHATSITE_MODELS_TIMEOUT)
    return provider.takes_images(model=name)


async def _branch_sees_images(model: str, conversation_id: uuid.UUID) -> bool:
    """:func:`_sees_images`, asked only when the conversation has images at all."""
    has_images = await database_sync_to_async(selectors.conversation_has_images)(
        conversation_id=conversation_id
    )
    return has_images and await _sees_images(model)


def _refusal(exc: Refusal, ref: str | None) -> protocol.ProtocolError:
    """The client's answer for a service's refusal: its own code and words."""
    code, message = refusal_answer(exc)
    return protocol.ProtocolError(code, message, ref=ref)


def _ack(subscriber: Subscriber, client_id: str, exchange: exchange_services.StartedExchange) -> None:
    subscriber.deliver(
        protocol.frame_ack(
            client_id=client_id,
            conversation=str(exchange.conversation.pk),
            message=str(exchange.user_message.pk),
            created=exchange.created,
            replies=[str(reply.pk) for reply in exchange.replies],
        )
    )


async def _follow_existing(message: Message, user: AbstractBaseUser, subscriber: Follower) -> Reply | None:
    """A retried request: follow the reply it started, wherever it runs."""
    live = registry.get(str(message.pk))
    if live is not None:
        live.subscribe(subscriber, 0)
    elif not await _subscribe_remote(message, user, subscriber, 0):
        subscriber.deliver(finished_frame(message, staff=user.is_staff))
    return live


async def _answer(
    user: AbstractBaseUser,
    subscriber: Follower,
    client_id: str,
    exchange: exchange_services.StartedExchange,
    model: str,
    early: _EarlyStart | None = None,
) -> Reply | None:
    """Acknowledge a stored request, then stream its reply (new, or the one a
    retried request started; or the one ``early`` started before the commit)."""
    if early is None:
        _ack(subscriber, client_id, exchange)
    else:
        early.ack(exchange)
    if not exchange.created:
        return await _follow_existing(exchange.reply, user, subscriber)
    started = early.release(exchange.reply) if early is not None else None
    if started is not None:
        return started
    return _launch(
        user=user,
        subscriber=subscriber,
        message=exchange.reply,
        conversation=exchange.conversation,
        model=model,
        prompt=exchange.prompt,
        client_id=client_id,
    )


def _launch(
    *,
    user: AbstractBaseUser,
    subscriber: Subscriber,
    message: Message,
    conversation: Conversation,
    model: str,
    prompt: list[ChatMessage],
    client_id: str = "",
    keep_last: int = 1,
    columns: int = 1,
    titled: bool = True,
    committed: bool = True,
) -> Reply:
    """Start the reply ``message`` (stored streaming), streamed to ``subscriber``.
    ``committed=False``: its exchange's commit is still under way (see
    :class:`_EarlyStart`)."""
    provider_name, model_name = split_model_id(model)
    provider = get_provider(provider_name)
    if provider is None:  # configured away since the reply was stored
        raise protocol.ProtocolError("unknown_model", f"unknown model {model[:80]!r}", ref=client_id or None)
    reply = Reply(
        registry=registry,
        reply_id=message.pk,
        conversation_id=conversation.pk,
        user_id=user.pk,
        provider=provider,
        model=model_name,
        prompt=prompt,
        client_id=client_id,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        thinking_budget=conversation.thinking_budget,
        base_text=message.content,
        base_seq=message.last_seq,
        keep_last=keep_last,
        base_reasoning=message.reasoning,
        base_reasoning_ms=message.reasoning_ms,
        base_redacted=message.reasoning_redacted,
        staff=bool(getattr(user, "is_staff", False)),
    )
    reply.columns = columns
    reply.committed = committed
    titles.title_yield(provider=provider)  # a title on a one-at-a-time model gives way
    registry.add(reply)
    reply.subscribe(subscriber, message.last_seq)
    reply.start()
    if titled:
        titles.title_after(reply)
    return reply


def _store_starts(
    requests: list[exchange_services.ExchangeRequest],
) -> list[exchange_services.StartedExchange | Refusal | DatabaseError]:
    return exchange_services.exchange_start_many(requests=requests)


class _Held:
    """Stands in for a socket on a reply started before its exchange committed:
    keeps the reply's frames, and its end, until the ``ack`` has gone out
    (:meth:`release`); they are dropped if the store fails."""

    def __init__(self, subscriber: Follower) -> None:
        self.subscriber = subscriber
        self.frames: list[str] = []
        self.ended: str | None = None
        self.released = False

    @property
    def channel_name(self) -> str | None:
        return self.subscriber.channel_name

    def deliver(self, frame: str) -> None:
        self.frames.append(frame)

    def reply_ended(self, reply_id: str) -> None:
        self.ended = reply_id

    def release(self, reply: Reply) -> None:
        """The held frames to the socket, in order; from now on the socket
        follows the reply itself. Idempotent."""
        if self.released:
            return
        self.released = True
        for frame in self.frames:
            self.subscriber.deliver(frame)
        self.frames.clear()
        if self.ended is not None:
            self.subscriber.reply_ended(self.ended)
        elif self in reply.subscribers:
            reply.subscribers[reply.subscribers.index(self)] = self.subscriber


class _EarlyStart:
    """A send's replies, started while its exchange commits.

    The store calls :meth:`before_commit` on the database thread once every
    check that can refuse the send has passed, just before the commit; the
    replies start on the event loop from there, so their upstream requests go
    out while the commit happens. Their frames are held (:class:`_Held`) until
    the commit is done: then the ``ack`` goes out, and after it the held frames
    (:meth:`release`). The commit is heard of from a ``transaction.on_commit``
    hook on the database thread, in one step, before the store has even
    returned (a transaction rolled back never calls it); failing that, from the
    store's result. Should the store fail, :meth:`abandon` closes their
    upstreams and drops them unsaved. Each hand-over
    from the database thread reaches the loop in the order it was made: the
    replies are started before the commit is heard of, and both before the
    store's result."""

    def __init__(self, *, user: AbstractBaseUser, subscriber: Follower, client_id: str) -> None:
        self.loop = asyncio.get_running_loop()
        # The replies start in the sender's context, not the database thread's
        # (whose context tells asgiref it is that thread).
        self.context = contextvars.copy_context()
        self.user = user
        self.subscriber = subscriber
        self.client_id = client_id
        self.started: list[tuple[Reply, _Held]] = []
        #: The user message whose ``ack`` went out from the commit hook.
        self.acked: uuid.UUID | None = None

    def before_commit(self, exchange: exchange_services.StartedExchange) -> None:
        """On the database thread, inside the store's transaction."""
        self.loop.call_soon_threadsafe(self._start, exchange, context=self.context)
        transaction.on_commit(lambda: self._on_commit(exchange))

    def _on_commit(self, exchange: exchange_services.StartedExchange) -> None:
        """On the database thread, right after the commit."""
        self.loop.call_soon_threadsafe(self._committed, exchange, context=self.context)

    def _committed(self, exchange: exchange_services.StartedExchange) -> None:
        if self.acked is not None:
            return
        self.acked = exchange.user_message.pk
        _ack(self.subscriber, self.client_id, exchange)
        for message in exchange.replies:
            self.release(message)

    def ack(self, exchange: exchange_services.StartedExchange) -> None:
        """The store returned ``exchange``: its ``ack``, unless the commit hook sent it."""
        if self.acked != exchange.user_message.pk:
            _ack(self.subscriber, self.client_id, exchange)

    def _start(self, exchange: exchange_services.StartedExchange) -> None:
        columns = len(exchange.replies)
        for i, message in enumerate(exchange.replies):
            held = _Held(self.subscriber)
            try:
                reply = _launch(
                    user=self.user,
                    subscriber=held,
                    message=message,
                    conversation=exchange.conversation,
                    model=f"{message.provider}/{message.model}",
                    prompt=exchange.prompt,
                    client_id=self.client_id,
                    columns=columns,
                    titled=i == 0,  # one title, from the first column
                    committed=False,
                )
            except protocol.ProtocolError:
                return  # e.g. its provider configured away: started (and refused) after the commit
            self.started.append((reply, held))

    async def settle(self, exchange: exchange_services.StartedExchange) -> None:
        """The store returned ``exchange``: abandon the replies it does not
        have (started for an attempt that was rolled back and stored again)."""
        keep = {message.pk for message in exchange.replies} if exchange.created else set()
        stale = [reply for reply, _ in self.started if reply.id not in keep]
        self.started = [(reply, held) for reply, held in self.started if reply.id in keep]
        if stale:
            await asyncio.gather(*(reply.abandon() for reply in stale))

    async def abandon(self) -> None:
        """The store failed: nothing of the send was stored."""
        started, self.started = self.started, []
        if started:
            await asyncio.gather(*(reply.abandon() for reply, _ in started))

    def interrupt(self) -> None:
        """The send was cancelled while it was stored: end its replies
        (``interrupted``, saved if the commit went through)."""
        for reply, _ in self.started:
            reply.request_cancel("interrupted")

    def release(self, message: Message) -> Reply | None:
        """The stored reply ``message``, if it was started early: its held
        frames go to the socket now (call it after the ``ack``)."""
        for reply, held in self.started:
            if reply.id == message.pk:
                reply.committed = True
                held.release(reply)
                return reply
        return None


def _store_failed(ref: str) -> protocol.ProtocolError:
    return protocol.ProtocolError(
        "unavailable",
        "your message could not be saved (the database failed), so no reply was started; "
        "send it again in a moment",
        ref=ref,
    )


#: Sends that arrive while earlier ones are being stored are stored together.
_starts: Batcher[exchange_services.ExchangeRequest, exchange_services.StartedExchange] = Batcher(
    _store_starts
)


#: How long a stop and send waits for a reply that runs in another process to
#: be saved stopped; then it gives up, and stores nothing.
INTERRUPT_WAIT_SECONDS = 5.0
_INTERRUPT_POLL_SECONDS = 0.02


def _live_replies(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> list[Reply]:
    """The user's replies that run in this process in the conversation (those
    still saving their end included): a compare's every column."""
    return [reply for reply in registry.in_conversation(conversation_id) if reply.user_id == user.pk]


def _not_stopped(ref: str, why: str) -> protocol.ProtocolError:
    return protocol.ProtocolError(
        "unavailable",
        f"the running reply could not be stopped: {why}. Your message was not sent; try again in a moment",
        ref=ref,
    )


async def _replies_interrupt(*, user: AbstractBaseUser, conversation_id: uuid.UUID, client_id: str) -> None:
    """Stop the user's running replies of the conversation, wherever they run,
    and return once each is saved: the state in which the store accepts a new
    exchange (``exchange_start`` refuses one while a reply of the conversation
    is streaming, :class:`ReplyRunning`, and so stands guard for the rest).

    A reply here is saved when its ``stop()`` returns. One in another process
    is asked to stop over the channel layer and waited for (polling the
    database, at most :data:`INTERRUPT_WAIT_SECONDS`); if its process cannot be
    reached, or it is not saved in time, the send is refused (``unavailable``)
    and nothing is stored. A send whose ``client_id`` was stored before is a
    retry: it stops nothing (the reply it started may be the one running).
    """
    local = _live_replies(user=user, conversation_id=conversation_id)
    streaming = (
        []
        if local
        else await database_sync_to_async(selectors.conversation_streaming_reply_ids)(
            user=user, conversation_id=conversation_id
        )
    )
    if not local and not streaming:
        return  # nothing runs: a plain send
    if await database_sync_to_async(selectors.conversation_client_id_seen)(
        user=user, conversation_id=conversation_id, client_id=client_id
    ):
        return
    if local:
        # Saved when stop() returns. Every live reply of a conversation runs in
        # the process that started it: none runs elsewhere (and should one
        # start there now, the store refuses this send, ReplyRunning).
        await asyncio.gather(*(reply.stop() for reply in local))
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INTERRUPT_WAIT_SECONDS
    asked: set[uuid.UUID] = set()
    while True:
        streaming = await database_sync_to_async(selectors.conversation_streaming_reply_ids)(
            user=user, conversation_id=conversation_id
        )
        if not streaming:
            return
        for reply_id in streaming:
            here = reply_for_user(reply_id=str(reply_id), user_id=user.pk)
            if here is not None:  # e.g. a regenerate of another socket, stored meanwhile
                await here.stop()
            elif reply_id not in asked:
                await _reply_stop_elsewhere(user=user, reply_id=reply_id, ref=client_id)
                asked.add(reply_id)
        if loop.time() >= deadline:
            raise _not_stopped(client_id, "it runs in another server process and did not stop in time")
        await asyncio.sleep(_INTERRUPT_POLL_SECONDS)


async def _reply_stop_elsewhere(*, user: AbstractBaseUser, reply_id: uuid.UUID, ref: str) -> None:
    """Ask the process that runs a streaming reply to stop it (no wait)."""
    message = await database_sync_to_async(selectors.reply_get)(user_id=user.pk, reply_id=reply_id)
    if message is None or message.status != Message.Status.STREAMING:
        return  # ended meanwhile
    channel = await database_sync_to_async(worker_services.worker_channel)(worker_id=message.worker)
    if channel is None or not await cluster.reply_stop_remote(
        owner=channel, reply_id=str(reply_id), user_id=user.pk
    ):
        raise _not_stopped(ref, "it runs in another server process, which cannot be reached right now")


async def _prompt_screen(*, user: AbstractBaseUser, frame: protocol.Send) -> None:
    """Refuse a message that matches a moderation rule, before anything is
    stored, stopped or sent upstream."""
    if moderation.moderation_on():
        verdict = await moderation.prompt_check(text=frame.text)
        if verdict is not None:
            log.info("a message of user %s refused by the moderation rule %s", user.pk, verdict.rule)
            raise _refusal(PromptModerated(cause=verdict.cause), frame.client_id)


def _conversation_claim(*, user: AbstractBaseUser, frame: protocol.Send) -> bool:
    """Claim the send's conversation (``registry.starting``) so that no other
    frame of this process starts a reply in it meanwhile, or refuse it
    (``reply_running``) while a reply of the user's runs there and the send
    neither retries it nor stops it (``interrupt``). Returns whether the running
    replies are to be stopped first. The caller lets go of the claim."""
    conv_id = frame.conversation
    if conv_id is None:
        return False
    live = _live_replies(user=user, conversation_id=conv_id)
    retry = any(reply.client_id == frame.client_id for reply in live)
    starting = registry.starting.get(conv_id) == user.pk
    if (live or starting) and not retry and (starting or not frame.interrupt):
        raise _refusal(ReplyRunning(), frame.client_id)
    registry.starting[conv_id] = user.pk
    return frame.interrupt and not retry


async def _exchange_store(
    *,
    user: AbstractBaseUser,
    frame: protocol.Send,
    request: exchange_services.ExchangeRequest,
    early: _EarlyStart,
) -> exchange_services.StartedExchange:
    """Store a send's exchange with its conversation claimed, stopping (and
    waiting for the save of) the replies it interrupts first. Its replies
    start just before the commit (``early``); a store that fails closes them
    and is answered ``unavailable``."""
    conv_id = frame.conversation
    interrupt = _conversation_claim(user=user, frame=frame)
    try:
        if interrupt:
            assert conv_id is not None
            await _replies_interrupt(user=user, conversation_id=conv_id, client_id=frame.client_id)
        request = dataclasses.replace(request, before_commit=early.before_commit)
        try:
            exchange = await _starts.submit(request)
        except asyncio.CancelledError:
            early.interrupt()
            raise
        except BaseException:
            await early.abandon()
            raise
        await early.settle(exchange)
        return exchange
    except Refusal as exc:
        raise _refusal(exc, frame.client_id) from None
    except DatabaseError:
        log.warning("the store of a send of user %s failed", user.pk, exc_info=True)
        raise _store_failed(frame.client_id) from None
    finally:
        if conv_id is not None:
            registry.starting.pop(conv_id, None)


async def reply_start(*, user: AbstractBaseUser, frame: protocol.Send, subscriber: Follower) -> Reply | None:
    """Store the user's message and start the reply; ``subscriber`` follows it.

    With ``frame.interrupt`` (stop and send), the user's replies running in the
    conversation are stopped and saved first (:func:`_replies_interrupt`),
    while the conversation is claimed (``registry.starting``), so that no other
    frame here can start a reply in between and the store's own check refuses
    one from any other process. A message that matches a moderation rule is
    refused first: nothing is stored and nothing is stopped."""
    await _prompt_screen(user=user, frame=frame)
    model = await _resolve_model(frame.model, frame.conversation, user, frame.client_id)
    # Only a send with files asks (a fresh process may wait for its first listing).
    sees_images = bool(frame.attachments) and await _sees_images(model)
    early = _EarlyStart(user=user, subscriber=subscriber, client_id=frame.client_id)
    exchange = await _exchange_store(
        user=user,
        frame=frame,
        request=exchange_services.ExchangeRequest(
            user=user,
            conversation_id=frame.conversation,
            client_id=frame.client_id,
            text=frame.text,
            model=model,
            provider=split_model_id(model)[0],
            edit_of=frame.edit_of,
            attachments=frame.attachments,
            sees_images=sees_images,
        ),
        early=early,
    )
    return await _answer(user, subscriber, frame.client_id, exchange, model, early)


async def compare_start(*, user: AbstractBaseUser, frame: protocol.Send, subscriber: Follower) -> list[Reply]:
    """A compare (``send`` with ``models``): the user's message and one reply per
    model, stored together (or not at all), each streamed as a reply of its own.

    The conversation's checks are a send's: one running exchange (or, with
    ``interrupt``, the running one stopped first), the per-user limits (each
    column counted), the moderation of the message. The replies are siblings,
    the first one the active branch; a retried ``client_id`` follows the
    replies it stored."""
    await _prompt_screen(user=user, frame=frame)
    models = [await _resolve_model(model, None, user, frame.client_id) for model in frame.models]
    sees_images = False
    if frame.attachments:
        sees_images = all([await _sees_images(model) for model in models])
    early = _EarlyStart(user=user, subscriber=subscriber, client_id=frame.client_id)
    exchange = await _exchange_store(
        user=user,
        frame=frame,
        request=exchange_services.ExchangeRequest(
            user=user,
            conversation_id=frame.conversation,
            client_id=frame.client_id,
            text=frame.text,
            model=models[0],
            provider=split_model_id(models[0])[0],
            edit_of=frame.edit_of,
            attachments=frame.attachments,
            sees_images=sees_images,
            compare=tuple((model, split_model_id(model)[0]) for model in models[1:]),
        ),
        early=early,
    )
    early.ack(exchange)
    if not exchange.created:
        followed = [await _follow_existing(reply, user, subscriber) for reply in exchange.replies]
        return [reply for reply in followed if reply is not None]
    return [
        early.release(message)
        or _launch(
            user=user,
            subscriber=subscriber,
            message=message,
            conversation=exchange.conversation,
            model=f"{message.provider}/{message.model}",
            prompt=exchange.prompt,
            client_id=frame.client_id,
            columns=len(exchange.replies),
            titled=i == 0,  # one title, from the first column
        )
        for i, message in enumerate(exchange.replies)
    ]


async def reply_regenerate(
    *, user: AbstractBaseUser, frame: protocol.Regenerate, subscriber: Follower
) -> Reply | None:
    """A new reply to the same message; the old one stays as its sibling."""
    old = await database_sync_to_async(selectors.reply_get)(user_id=user.pk, reply_id=frame.reply)
    if old is None:
        raise protocol.ProtocolError("not_found", "no such reply", ref=frame.client_id)
    model = await _resolve_model(frame.model, old.conversation_id, user, frame.client_id)
    sees_images = await _branch_sees_images(model, old.conversation_id)
    try:
        exchange = await database_sync_to_async(exchange_services.reply_regenerate)(
            user=user,
            reply_id=frame.reply,
            client_id=frame.client_id,
            model=model,
            provider=split_model_id(model)[0],
            sees_images=sees_images,
        )
    except Refusal as exc:
        raise _refusal(exc, frame.client_id) from None
    return await _answer(user, subscriber, frame.client_id, exchange, model)


async def reply_continue(*, user: AbstractBaseUser, frame: protocol.Continue, subscriber: Follower) -> Reply:
    """Go on with a stopped, interrupted or cut reply, appending to its text."""
    old = await database_sync_to_async(selectors.reply_get)(user_id=user.pk, reply_id=frame.reply)
    if old is None:
        raise protocol.ProtocolError("not_found", "no such reply", ref=str(frame.reply))
    model = f"{old.provider}/{old.model}"
    provider = get_provider(old.provider)
    if provider is None:
        # An imported reply, or a provider configured away: go on with the conversation's model.
        model = await _resolve_model(None, old.conversation_id, user, str(frame.reply))
        provider = get_provider(split_model_id(model)[0])
        assert provider is not None
    sees_images = await _branch_sees_images(model, old.conversation_id)
    try:
        continuation = await database_sync_to_async(exchange_services.reply_continue)(
            user=user,
            reply_id=frame.reply,
            prefill=provider.supports_prefill,
            sees_images=sees_images,
        )
    except Refusal as exc:
        raise _refusal(exc, str(frame.reply)) from None
    return _launch(
        user=user,
        subscriber=subscriber,
        message=continuation.reply,
        conversation=continuation.conversation,
        model=model,
        prompt=continuation.prompt,
        keep_last=continuation.keep_last,
    )


async def reply_stop(*, user: AbstractBaseUser, reply_id: uuid.UUID) -> None:
    """Stop a live reply, wherever it runs. A finished one: no-op."""
    reply = reply_for_user(reply_id=str(reply_id), user_id=user.pk)
    if reply is not None:
        await reply.stop()  # here: wait until it is saved
        return
    message = await database_sync_to_async(selectors.reply_get)(user_id=user.pk, reply_id=reply_id)
    if message is None:
        raise protocol.ProtocolError("not_found", "no such reply", ref=str(reply_id))
    if message.status == Message.Status.STREAMING:
        channel = await database_sync_to_async(worker_services.worker_channel)(worker_id=message.worker)
        if channel is not None and not await cluster.reply_stop_remote(
            owner=channel, reply_id=str(reply_id), user_id=user.pk
        ):
            raise _unreachable(str(reply_id))


def _unreachable(ref: str) -> protocol.ProtocolError:
    return protocol.ProtocolError(
        "unavailable",
        "this reply runs in another server process, which cannot be reached right now "
        "(the channel layer is down); try again in a moment",
        ref=ref,
    )


async def _subscribe_remote(
    message: Message, user: AbstractBaseUser, subscriber: Follower, after_seq: int
) -> bool:
    """Ask the process that owns a streaming reply to stream it to ``subscriber``."""
    channel_name = subscriber.channel_name
    if message.status != Message.Status.STREAMING or not channel_name:
        return False
    owner = await database_sync_to_async(worker_services.worker_channel)(worker_id=message.worker)
    if owner is None:
        return False
    reply_id = str(message.pk)
    # Followed before asking, so that no frame of the answer can find it unknown.
    cluster.follow_remote(subscriber, reply_id=reply_id, owner=owner)
    ok = await cluster.reply_subscribe_remote(
        owner=owner, reply_id=reply_id, user_id=user.pk, channel=channel_name, after_seq=after_seq
    )
    if not ok:
        subscriber.unfollow_remote(reply_id)
        # Not "interrupted": it streams on; this process just cannot reach it now.
        raise _unreachable(str(message.conversation_id))
    return True


def _resume_point(after: Mapping[str, int] | None, after_seq: int, reply_id: str) -> int:
    """Where a subscriber resumes a reply: its own seq in ``after`` if the
    client sent the map (a reply it does not name: from the start), else ``after_seq``."""
    return after_seq if after is None else after.get(reply_id, 0)


def _saved_frames(message: Message, after_seq: int, *, staff: bool = False) -> list[str]:
    """A compare's column that has ended, told as a live one would be: its
    ``reply_started``, one catch-up of its saved text, its ``reply_finished``
    (a client that has it all gets no text again)."""
    after = after_seq if after_seq == message.last_seq else 0
    frames = [
        protocol.frame_reply_started(
            conversation=str(message.conversation_id),
            reply=str(message.pk),
            model=f"{message.provider}/{message.model}",
            provider=message.provider,
            after_seq=after,
        )
    ]
    if message.last_seq > after:
        key, seq = str(message.pk), message.last_seq
        if message.reasoning and message.content and seq >= 2:
            frames.append(
                protocol.frame_reasoning_delta(
                    reply=key, seq=seq - 1, text=message.reasoning, redacted=message.reasoning_redacted
                )
            )
        elif message.reasoning and not message.content:
            frames.append(
                protocol.frame_reasoning_delta(
                    reply=key, seq=seq, text=message.reasoning, redacted=message.reasoning_redacted
                )
            )
        if message.content:
            frames.append(protocol.frame_delta(reply=key, seq=seq, text=message.content))
    frames.append(finished_frame(message, staff=staff))
    return frames


async def conversation_subscribe(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID,
    after_seq: int,
    subscriber: Follower,
    after: Mapping[str, int] | None = None,
) -> list[Reply]:
    """Follow the conversation's live replies (a compare's every column), each
    from where the client is (``after``, else ``after_seq``); if none is live,
    send the last reply's final state so the client can tell if it is behind."""
    lives = [
        r
        for r in registry.in_conversation(conversation_id)
        if r.user_id == user.pk and not r.finished and r.committed
    ]
    if lives and all(r.columns == len(lives) for r in lives):
        # Every reply of the exchange runs here: no trip to the database.
        for live in lives:
            live.subscribe(subscriber, _resume_point(after, after_seq, live.key))
        return lives
    replies = await database_sync_to_async(selectors.conversation_last_exchange)(
        user=user, conversation_id=conversation_id
    )
    if replies is None:
        raise protocol.ProtocolError("not_found", "no such conversation", ref=str(conversation_id))
    followed: list[Reply] = []
    compare = len(replies) > 1
    for message in replies:
        resume = _resume_point(after, after_seq, str(message.pk))
        here = registry.get(str(message.pk))
        if here is not None and here.user_id == user.pk and not here.finished:
            here.subscribe(subscriber, resume)
            followed.append(here)
        elif await _subscribe_remote(message, user, subscriber, resume):
            pass
        elif compare:
            for frame in _saved_frames(message, resume, staff=user.is_staff):
                subscriber.deliver(frame)
        else:
            subscriber.deliver(finished_frame(message, staff=user.is_staff))
    return followed
