"""Titles that say what a chat is about, made in the background.

When one of a conversation's first exchanges ends with text (its reply
``complete`` or ``stopped``, not a continuation), the conversation's model, or
``CHATSITE_TITLE_MODEL``, is asked for a short title: a normal request with a
short prompt (the first user message and the start of the reply), a few
tokens, a low temperature and ``CHATSITE_TITLE_TIMEOUT``. It is not a reply:
nothing is stored as a message and no user limit counts it. The answer is
cleaned (``services.conversations.title_from_model``) and stored only if the
title is still automatic (a conditional write: a rename always wins), then
pushed to every socket of the user, in every process, as ``conversation_updated``.
Anything that goes wrong leaves the first-line title the conversation was made with.

A title never holds up a reply: its request starts after the reply has ended
(from the reply task's done callback) and nothing waits on it. It is the first
work dropped when the process is busy: it is skipped when the process has
``CHATSITE_TITLE_BUSY_REPLIES`` replies (and titles) live, or while its event
loop is behind (the coalescing window is wider than its base,
``realtime/pacing.py``: the loop lagged or was busy over its targets); on a model with a
capacity (``realtime/capacity.py``: the offline model, one at a time) it waits
in the queue behind every reply and is the first work shed when the queue is
full; on a ``SINGLE_STREAM`` server without one (it would drop a running stream
for the title's request) it is skipped while a reply uses the model; and a reply
that starts on a one-at-a-time model while a title is being generated cancels
the title (its claim is released, so a later exchange asks again).
Shutdown cancels it too (``Registry.stop_all``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from conversations import moderation
from conversations.exceptions import Overloaded
from conversations.prompt import ChatMessage
from conversations.providers import BaseProvider, ProviderError, StreamResult, get_provider, split_model_id
from conversations.providers.local import LocalProvider
from conversations.providers.reasoning import Reasoning
from conversations.realtime import capacity, cluster, protocol
from conversations.realtime.pacing import Targets
from conversations.realtime.registry import registry
from conversations.realtime.replies import Reply
from conversations.services import conversations as conversation_services

log = logging.getLogger(__name__)

#: A title is asked for after a reply within a conversation's first exchanges
#: (the first one may have failed, or been stopped before any text).
EARLY_EXCHANGES = 3
MAX_TOKENS = 32
TEMPERATURE = 0.2
#: How much of the first message and of the reply the prompt quotes.
QUESTION_CHARS = 1500
ANSWER_CHARS = 600
#: An answer is read up to this many characters (a title is one short line).
ANSWER_MAX_CHARS = 2000
ENDINGS_WITH_TEXT = frozenset({"complete", "stopped"})

SYSTEM_PROMPT = (
    "You name conversations. Reply with a short title (2 to 6 words) that says what the "
    "conversation below is about, in the language of the user's message. Reply with the "
    "title only: no quotes, no label, no punctuation at the end, no explanation."
)


@dataclass(eq=False)
class TitleJob:
    conversation_id: uuid.UUID
    user_id: int
    provider: BaseProvider
    model: str
    prompt: list[ChatMessage]
    task: asyncio.Task[None] | None = None
    #: Cancelled for a reply that needed the model (not a shutdown).
    gave_way: bool = False
    claimed: bool = False
    #: Its place in the model's queue (None: not asked for yet).
    ticket: capacity.Ticket | None = None


#: The title work of this process, by conversation.
_jobs: dict[uuid.UUID, TitleJob] = {}


def one_at_a_time(provider: BaseProvider) -> bool:
    """The backend runs one generation at a time: the offline model (one lock per
    model), or a ``SINGLE_STREAM`` server (it drops a running stream for the next
    request). A title there must never make a reply wait."""
    return isinstance(provider, LocalProvider) or bool(provider.options.get("SINGLE_STREAM"))


def title_prompt(*, question: str, answer: str) -> list[ChatMessage]:
    """The title request: the first user message and the start of the reply."""
    quoted_question = question.strip()[:QUESTION_CHARS]
    quoted_answer = answer.strip()[:ANSWER_CHARS]
    return [
        ChatMessage("system", SYSTEM_PROMPT),
        ChatMessage(
            "user",
            f"The user wrote:\n{quoted_question}\n\nThe assistant's reply began:\n{quoted_answer}\n\n"
            "Reply with the title only.",
        ),
    ]


def _title_model(reply: Reply) -> tuple[BaseProvider, str]:
    """The model that makes the title: CHATSITE_TITLE_MODEL, else the reply's."""
    configured: str = settings.CHATSITE_TITLE_MODEL
    if configured:
        provider_name, model = split_model_id(configured)
        provider = get_provider(provider_name)
        if provider is not None and model:
            return provider, model
        log.warning("CHATSITE_TITLE_MODEL names no configured provider; titles use the reply's model")
    return reply.provider, reply.model


def _busy(provider: BaseProvider) -> str | None:
    """Why the process is too busy for a title on ``provider`` now (None: it is not)."""
    limit = settings.CHATSITE_TITLE_BUSY_REPLIES
    if limit and len(registry) + len(_jobs) >= limit:
        return f"{len(registry)} replies and {len(_jobs)} titles are live"
    base = Targets.from_settings().base
    if registry.window > base:
        return (
            f"the process is behind (frames are coalesced over {registry.window * 1000:.0f} ms, "
            f"{base * 1000:.0f} ms when it keeps up)"
        )
    if one_at_a_time(provider) and provider.capacity <= 0:
        # No queue to wait in: a second request would make a reply wait (or be dropped).
        if any(r.provider is provider and not r.finished for r in list(registry.by_id.values())):
            return "a reply is using the model"
        if any(job.provider is provider for job in _jobs.values()):
            return "another title is using the model"
    return None


def title_after(reply: Reply) -> None:
    """Once ``reply`` (just started) has ended, maybe title its conversation.

    A done callback on the reply's task: it runs after the reply was saved and
    its ``reply_finished`` sent, and costs the reply nothing before that."""
    if not settings.CHATSITE_AUTO_TITLES or reply.base_text or reply.task is None:
        return
    reply.task.add_done_callback(lambda _task: _reply_ended(reply))


def _reply_ended(reply: Reply) -> None:
    if not settings.CHATSITE_AUTO_TITLES or reply.status not in ENDINGS_WITH_TEXT or not reply.text.strip():
        return
    users = [m for m in reply.prompt if m.role == "user"]
    if not users or len(users) > EARLY_EXCHANGES or (reply.fit is not None and reply.fit.omitted):
        return
    if reply.conversation_id in _jobs:
        return
    provider, model = _title_model(reply)
    busy = _busy(provider)
    if busy is not None:
        log.info("title for conversation %s skipped: %s", reply.conversation_id, busy)
        return
    job = TitleJob(
        conversation_id=reply.conversation_id,
        user_id=reply.user_id,
        provider=provider,
        model=model,
        prompt=title_prompt(question=users[0].content, answer=reply.text),
    )
    _jobs[job.conversation_id] = job
    job.task = asyncio.get_running_loop().create_task(_run(job), name=f"title-{job.conversation_id}")
    job.task.add_done_callback(lambda _task: _jobs.pop(job.conversation_id, None))
    registry.chore(job.task)


def title_yield(*, provider: BaseProvider) -> None:
    """A reply is starting on ``provider``: if it runs one generation at a time,
    title work on it gives way (is cancelled), so the reply never waits for it."""
    if not one_at_a_time(provider):
        return
    for job in list(_jobs.values()):
        if job.ticket is not None and job.ticket.waiting:
            continue  # waits behind every reply anyway
        if job.provider is provider and job.task is not None and not job.task.done():
            log.info("title for conversation %s gave way to a reply", job.conversation_id)
            job.gave_way = True
            job.task.cancel()


async def _ask(job: TitleJob) -> str:
    """The model's whole answer to the title request (text pieces only)."""
    parts: list[str] = []
    size = 0
    stream = job.provider.stream(
        model=job.model,
        messages=job.prompt,
        result=StreamResult(),
        max_tokens=MAX_TOKENS,
        temperature=TEMPERATURE,
        thinking_budget=0,  # a title needs no extended thinking
    )
    async with aclosing(stream):
        async for piece in stream:
            # Only the answer's text counts: a reasoning piece is a str too.
            if isinstance(piece, str) and not isinstance(piece, Reasoning):
                parts.append(piece)
                size += len(piece)
                if size >= ANSWER_MAX_CHARS:
                    break
    return "".join(parts)


async def _run(job: TitleJob) -> None:
    where = f"title for conversation {job.conversation_id}"
    claim = asyncio.ensure_future(
        database_sync_to_async(conversation_services.conversation_title_claim)(
            conversation_id=job.conversation_id, user_id=job.user_id
        )
    )
    try:
        job.claimed = await asyncio.shield(claim)
    except asyncio.CancelledError:
        # Cancelled while claiming: the write goes on; if it claimed, give it back.
        if await claim:
            await asyncio.shield(_release(job))
        raise
    if not job.claimed:
        return  # renamed by the user, or titled before
    try:
        # Behind every reply, and the first work shed; its timeout counts from its request.
        job.ticket = capacity.slot_request(
            provider=job.provider, model=job.model, user_id=job.user_id, rank=capacity.BACKGROUND
        )
        try:
            await job.ticket.wait()
            answer = await asyncio.wait_for(_ask(job), settings.CHATSITE_TITLE_TIMEOUT)
        finally:
            capacity.slot_release(ticket=job.ticket)
    except Overloaded:
        log.info("%s: shed (the model is busy); keeping the first-line title", where)
        await asyncio.shield(_release(job))
        return
    except asyncio.CancelledError:
        # Gave way to a reply, or the server is stopping: a later exchange asks again.
        await asyncio.shield(_release(job))
        raise
    except TimeoutError:
        timeout = settings.CHATSITE_TITLE_TIMEOUT
        log.info("%s: no answer within %gs; keeping the first-line title", where, timeout)
        return
    except ProviderError as exc:  # its message is redacted of keys
        log.info("%s failed: %s (%s); keeping the first-line title", where, exc.kind, exc.message)
        return
    except Exception as exc:
        log.warning("%s failed (%s); keeping the first-line title", where, type(exc).__name__)
        return
    title = conversation_services.title_from_model(text=answer)
    if title is None:
        log.info("%s: the answer (%d characters) is no title; keeping the first one", where, len(answer))
        return
    if moderation.moderation_on() and (verdict := await moderation.prompt_check(text=title)) is not None:
        log.info("%s: it matches the moderation rule %s; keeping the first-line title", where, verdict.rule)
        return
    stored = await database_sync_to_async(conversation_services.conversation_title_generated)(
        conversation_id=job.conversation_id, user_id=job.user_id, title=title
    )
    if not stored:
        return  # renamed (or deleted) while the title was being made: the user's title stays
    frame = protocol.frame_conversation_updated(conversation=str(job.conversation_id), title=title)
    if not await cluster.user_frame_send(user_id=job.user_id, frame=frame):
        log.info("%s: stored, but not pushed (no channel layer); shown on the next load", where)


async def _release(job: TitleJob) -> None:
    try:
        await database_sync_to_async(conversation_services.conversation_title_release)(
            conversation_id=job.conversation_id, user_id=job.user_id
        )
    except Exception as exc:
        log.warning("releasing the title claim of %s failed (%s)", job.conversation_id, type(exc).__name__)
