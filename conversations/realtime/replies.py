"""Assistant replies as server-owned tasks.

A :class:`Reply` runs in its own asyncio task, owned by this process (the
:data:`~conversations.realtime.registry.registry`), not by any socket: sockets start a reply, subscribe to it
and ask it to stop. The reply numbers what it sends (``seq``), keeps every
piece it sent so a late subscriber can catch up, coalesces fast tokens into
fewer frames, and checkpoints its partial text on a timer (one batched write
per interval for all live replies, never one per token).

Invariant: the text saved for a reply is exactly the concatenation of the
deltas it sent, whatever the ending.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from conversations import errors, moderation, selectors, serializers
from conversations import metrics as reply_metrics
from conversations.exceptions import Overloaded
from conversations.models import Message
from conversations.moderation import Flagged, Verdict
from conversations.prompt import ChatMessage, PromptFit
from conversations.providers import BaseProvider, ProviderError, StreamResult
from conversations.providers.base import prompt_fit
from conversations.providers.failures import context_length_error
from conversations.providers.http import Connections, connections_track
from conversations.providers.reasoning import RedactedReasoning
from conversations.realtime import capacity, protocol
from conversations.realtime.batching import Batcher
from conversations.realtime.subscribers import Subscriber
from conversations.services import replies as reply_services

log = logging.getLogger(__name__)

LENGTH_FINISH_REASONS = frozenset({"length", "max_tokens"})


class Host(Protocol):
    """What a reply needs of the registry that holds it while it is live
    (:class:`~conversations.realtime.registry.Registry`)."""

    @property
    def window(self) -> float:
        """The coalescing window, in seconds, for the reply's next frame."""
        ...

    def flush_later(self, reply: Reply, when: float) -> None:
        """Call ``reply.flush_held`` at ``when`` (``time.monotonic()``), or a little sooner."""
        ...

    def discard(self, reply: Reply) -> None:
        """The reply is saved: it is not live any more."""
        ...


class Reply:
    def __init__(
        self,
        *,
        registry: Host,
        reply_id: uuid.UUID,
        conversation_id: uuid.UUID,
        user_id: int,
        provider: BaseProvider,
        model: str,
        prompt: list[ChatMessage],
        client_id: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        base_text: str = "",
        base_seq: int = 0,
        keep_last: int = 1,
        base_reasoning: str = "",
        base_reasoning_ms: float | None = None,
        base_redacted: bool = False,
        thinking_budget: int | None = None,
        staff: bool = False,
    ) -> None:
        self.id = reply_id
        self.registry = registry
        self.client_id = client_id  # of the user message this replies to
        #: How many replies its exchange started (a compare's columns; else 1).
        self.columns = 1
        self.temperature = temperature
        self.thinking_budget = thinking_budget
        self.max_tokens = max_tokens or settings.CHATSITE_MAX_TOKENS or None
        self.key = str(reply_id)
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.provider = provider
        self.model = model
        self.prompt = prompt
        # The newest turn (always sent), and what was sent after fitting the window.
        self.keep_last = keep_last
        self.fit: PromptFit | None = None
        self._window: int | None = None
        self.subscribers: list[Subscriber] = []
        # A continued reply starts from the text and seq its earlier part ended at.
        self.base_text = base_text
        self.base_seq = base_seq
        self.parts: list[str] = []  # parts[k - 1] is the text of delta seq base_seq + k
        self.seq = base_seq
        self.sent_chars = len(base_text)
        self.pending: list[str] = []
        self.pending_chars = 0
        # Reasoning shares the numbering: the indexes in parts that are reasoning
        # (empty for a reply that does not reason), and whether what is pending is.
        self.base_reasoning = base_reasoning
        self.reasoning_at: set[int] = set()
        self.reasoning_chars = len(base_reasoning)
        self.redacted = base_redacted
        self._pending_reasoning = False
        self._base_reasoning_ms = base_reasoning_ms
        self.first_reasoning_at: float | None = None
        self.first_text_at: float | None = None
        self.piece_count = 0
        self.result = StreamResult()
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        #: False while the exchange it replies in may still fail to commit (it
        #: was started just before the commit); see :meth:`abandon`.
        self.committed = True
        self._abandoned = False
        self.status: str | None = None
        self.checkpointed_seq = base_seq
        self._length_hit = False
        # Its claim on the model's capacity, its place while it waits
        # ((position, ahead); None: not waiting) and how long it waited.
        self.staff = staff
        self.ticket: capacity.Ticket | None = None
        self.place: tuple[int, int] | None = None
        self.queued_ms: float | None = None

        self.loop = asyncio.get_running_loop()
        self._max_chars = settings.CHATSITE_MAX_REPLY_CHARS
        self._next_flush_at = 0.0
        self._flush_due = False  # waiting in self.registry.flush_later
        self._watchdog: asyncio.TimerHandle | None = None
        self._orphan_handle: asyncio.TimerHandle | None = None
        self._cancel_reason: str | None = None  # "stop" | a timeout error kind
        self._stop_at: float | None = None  # when a user's stop was asked for
        self._began = False  # the task has entered _run
        #: The upstream connections the task has open (a cancel shuts them at once).
        self._upstream: Connections | None = None
        self.started_at = time.monotonic()
        self.first_piece_at: float | None = None
        self.last_piece_at = self.started_at
        # Moderation (None when it is off): text reaches ``pending`` only once
        # the screen has cleared it (``_release``). Staff are told the rule.
        self.staff = staff
        self.moderation_rule = ""
        self._full = False  # moderated text reached CHATSITE_MAX_REPLY_CHARS
        self.screen = moderation.screen_for(
            release=self._release, stop=self._moderated, context=base_text, reasoning_context=base_reasoning
        )

    # --- subscribers ------------------------------------------------------
    def started_frame(self, after_seq: int) -> str:
        return protocol.frame_reply_started(
            conversation=str(self.conversation_id),
            reply=self.key,
            model=f"{self.provider.name}/{self.model}",
            provider=self.provider.name,
            after_seq=after_seq,
        )

    def subscribe(self, subscriber: Subscriber, after_seq: int = 0) -> None:
        """Attach a subscriber that already has deltas up to ``after_seq``.

        It receives ``reply_started``, one delta with everything it missed,
        then every later delta: each piece of text exactly once, in order.
        """
        after_seq = max(0, min(after_seq, self.seq))
        if after_seq < self.base_seq:
            # Inside the earlier part of a continued reply: start over from 0.
            after_seq = 0
        subscriber.deliver(self.started_frame(after_seq))
        if self.place is not None:
            position, ahead = self.place
            subscriber.deliver(protocol.frame_reply_queued(reply=self.key, position=position, ahead=ahead))
        if self.seq > after_seq:
            if self.reasoning_at or self.base_reasoning or self.redacted:
                for frame in self._catch_up(after_seq):
                    subscriber.deliver(frame)
            else:
                missed = self.text if after_seq == 0 else "".join(self.parts[after_seq - self.base_seq :])
                subscriber.deliver(protocol.frame_delta(reply=self.key, seq=self.seq, text=missed))
        if subscriber not in self.subscribers:
            self.subscribers.append(subscriber)
        if self._orphan_handle is not None:
            self._orphan_handle.cancel()
            self._orphan_handle = None

    def _catch_up(self, after_seq: int) -> list[str]:
        """The frames that carry everything after ``after_seq`` of a reply that
        reasons: one per run of pieces of the same kind, each with the last
        ``seq`` of its run."""
        frames: list[str] = []
        start = after_seq - self.base_seq
        if start < 0 or (after_seq == 0 and self.base_seq > 0):
            # From the start of a continued reply: its earlier part is one
            # reasoning and one answer text (their seqs are not told apart).
            reasoning, text = self.reasoning, self.text
            if text and (reasoning or self.redacted) and self.seq >= 2:
                frames.append(self._reasoning_frame(self.seq - 1, reasoning))
                frames.append(protocol.frame_delta(reply=self.key, seq=self.seq, text=text))
            elif text:
                frames.append(protocol.frame_delta(reply=self.key, seq=self.seq, text=text))
            else:
                frames.append(self._reasoning_frame(self.seq, reasoning))
            return frames
        run: list[str] = []
        run_reasoning = False
        for index in range(start, len(self.parts)):
            is_reasoning = index in self.reasoning_at
            if run and is_reasoning != run_reasoning:
                frames.append(self._run_frame(self.base_seq + index, run, run_reasoning))
                run = []
            run.append(self.parts[index])
            run_reasoning = is_reasoning
        if run:
            frames.append(self._run_frame(self.seq, run, run_reasoning))
        return frames

    def _run_frame(self, seq: int, run: list[str], reasoning: bool) -> str:
        text = "".join(run)
        if reasoning:
            return self._reasoning_frame(seq, text)
        return protocol.frame_delta(reply=self.key, seq=seq, text=text)

    def _reasoning_frame(self, seq: int, text: str) -> str:
        return protocol.frame_reasoning_delta(reply=self.key, seq=seq, text=text, redacted=self.redacted)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        grace = settings.CHATSITE_DISCONNECT_GRACE
        if not self.subscribers and grace is not None and not self.finished:
            if self._orphan_handle is None:
                self._orphan_handle = self.loop.call_later(grace, self._stop_if_orphaned)

    def _stop_if_orphaned(self) -> None:
        self._orphan_handle = None
        if not self.subscribers and not self.finished:
            log.info("reply %s: no viewer left; stopping it", self.key)
            self.request_cancel("stop")

    def _emit(self, frame: str) -> None:
        for subscriber in self.subscribers:
            subscriber.deliver(frame)

    # --- streaming hot path ------------------------------------------------
    def _first_piece(self, now: float) -> None:
        self.first_piece_at = now
        # From now on the idle deadline applies, which may be sooner.
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._arm_watchdog()

    def _on_piece(self, piece: str) -> bool:
        """Take one piece from the provider. Returns False once the length limit is hit."""
        if piece.__class__ is not str:
            return self._on_reasoning(piece)
        now = time.monotonic()
        self.last_piece_at = now
        self.piece_count += 1
        if self.first_text_at is None or self._pending_reasoning:
            if self.first_piece_at is None:
                self._first_piece(now)
            if self._pending_reasoning:
                self._flush(now)  # the answer's piece is a frame of its own kind
            if self.first_text_at is None:
                self.first_text_at = now
                self._next_flush_at = now  # the answer's first piece is sent at once too
        if self.screen is not None:
            self.screen.feed(piece, False)  # cleared text comes back through _release
            return not self._full
        return self._take(piece, self.sent_chars, now)

    def _on_reasoning(self, piece: str) -> bool:
        """A piece of reasoning: numbered and coalesced like the answer's, in
        frames of its own kind (``reasoning_delta``)."""
        now = time.monotonic()
        self.last_piece_at = now
        self.piece_count += 1
        if self.first_piece_at is None:
            self._first_piece(now)
        if self.first_reasoning_at is None:
            self.first_reasoning_at = now
        if self.screen is not None:
            if isinstance(piece, RedactedReasoning):
                self.screen.marker(piece, True)
            else:
                self.screen.feed(piece, True)
            return not self._full
        if not self._pending_reasoning:
            self._flush(now)  # the answer's pending text goes first, in its own frame
            self._pending_reasoning = True
        if isinstance(piece, RedactedReasoning):
            self.redacted = True
            self.pending.append("")  # a frame of its own, even with nothing pending
            self._flush(now)
            return True
        return self._take(str(piece), self.reasoning_chars, now)

    def _take(self, piece: str, used: int, now: float) -> bool:
        """Add ``piece`` to the pending text of its kind (``used``: the characters
        of that kind already sent), then send it now or at the window's end.
        At the length limit, keep what fits and return False."""
        room = self._max_chars - used - self.pending_chars
        fits: bool = len(piece) < room
        if not fits:
            piece = piece[: max(room, 0)]
        if piece:
            self.pending.append(piece)
            self.pending_chars += len(piece)
        if now >= self._next_flush_at:
            self._flush(now)
        elif not self._flush_due:
            self._flush_due = True
            self.registry.flush_later(self, self._next_flush_at)
        return fits

    def _flush(self, now: float) -> None:
        if not self.pending:
            self._pending_reasoning = False
            return
        text = self.pending[0] if len(self.pending) == 1 else "".join(self.pending)
        self.pending.clear()
        self.pending_chars = 0
        self.seq += 1
        self._next_flush_at = now + self.registry.window
        if self._pending_reasoning:
            self._pending_reasoning = False
            self.reasoning_at.add(len(self.parts))
            self.parts.append(text)
            self.reasoning_chars += len(text)
            self._emit(self._reasoning_frame(self.seq, text))
            return
        self.parts.append(text)
        self.sent_chars += len(text)
        self._emit(protocol.frame_delta(reply=self.key, seq=self.seq, text=text))

    def _release(self, piece: str, reasoning: bool) -> None:
        """Text the moderation screen has cleared, in order: numbered, coalesced
        and sent as an unscreened piece is (``_on_piece``, ``_on_reasoning``)."""
        if self.finished or self._full:
            return
        now = time.monotonic()
        if reasoning != self._pending_reasoning:
            self._flush(now)  # each kind in frames of its own
            self._pending_reasoning = reasoning
        if isinstance(piece, RedactedReasoning):
            self.redacted = True
            self.pending.append("")
            self._flush(now)
            return
        if not self._take(str(piece), self.reasoning_chars if reasoning else self.sent_chars, now):
            self._full = True

    def _moderated(self, verdict: Verdict) -> None:
        """A moderation call flagged the reply while it streams: stop it now."""
        self.request_cancel("moderation")

    def flush_held(self, now: float) -> None:
        """Send the tokens held back for coalescing (the registry's flush grid calls it)."""
        self._flush_due = False
        if not self.finished:
            self._flush(now)

    @property
    def text(self) -> str:
        if not self.reasoning_at:
            return self.base_text + "".join(self.parts)
        return self.base_text + self._join(len(self.parts), reasoning=False)

    @property
    def reasoning(self) -> str:
        if not self.reasoning_at:
            return self.base_reasoning
        return self.base_reasoning + self._join(len(self.parts), reasoning=True)

    def _join(self, count: int, *, reasoning: bool) -> str:
        at = self.reasoning_at
        return "".join(part for i, part in enumerate(self.parts[:count]) if (i in at) == reasoning)

    def text_up_to(self, seq: int) -> str:
        if not self.reasoning_at:
            return self.base_text + "".join(self.parts[: seq - self.base_seq])
        return self.base_text + self._join(seq - self.base_seq, reasoning=False)

    def reasoning_up_to(self, seq: int) -> str:
        if not self.reasoning_at:
            return self.base_reasoning
        return self.base_reasoning + self._join(seq - self.base_seq, reasoning=True)

    def reasoning_ms(self, ended: float) -> float | None:
        """How long the model reasoned: from its first reasoning to its first
        answer piece (or the end); the earlier part's for a continued reply that
        did not reason again."""
        if self.first_reasoning_at is None:
            return self._base_reasoning_ms
        until = self.first_text_at if self.first_text_at is not None else ended
        if until < self.first_reasoning_at:  # reasoning after the answer began
            until = self.last_piece_at
        return (until - self.first_reasoning_at) * 1000

    # --- timeouts ------------------------------------------------------------
    def _deadline(self) -> tuple[float, str] | None:
        candidates: list[tuple[float, str]] = []
        total = settings.CHATSITE_TOTAL_TIMEOUT
        if total is not None:
            candidates.append((self.started_at + total, "timeout_total"))
        if self.first_piece_at is None:
            first = settings.CHATSITE_FIRST_TOKEN_TIMEOUT
            if first is not None:
                candidates.append((self.started_at + first, "timeout_first_token"))
        else:
            idle = settings.CHATSITE_IDLE_TIMEOUT
            if idle is not None:
                candidates.append((self.last_piece_at + idle, "timeout_idle"))
        return min(candidates) if candidates else None

    def _arm_watchdog(self) -> None:
        deadline = self._deadline()
        if deadline is not None:
            self._watchdog = self.loop.call_at(deadline[0], self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if self.finished:
            return
        deadline = self._deadline()
        if deadline is None:
            return
        when, kind = deadline
        if time.monotonic() >= when:
            self.request_cancel(kind)
        else:
            self._watchdog = self.loop.call_at(when, self._check_deadlines)

    # --- control ---------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"reply-{self.key}")
        self._arm_watchdog()
        reply_metrics.reply_started(provider=self.provider.name, model=self.model)

    def request_cancel(self, reason: str) -> None:
        if self.task is None or self.task.done():
            return
        if self._cancel_reason is None:
            self._cancel_reason = reason
            if reason == "stop":
                self._stop_at = time.monotonic()
        if self._began:
            if self._upstream is not None:
                self._upstream.shut()  # the upstream hears it now, not when the task runs again
            self.task.cancel()
        else:
            # Cancelled before its first step, the task would end without running a
            # line of _run: no save, no reply_finished. Cancel it once it is inside
            # (its first step was scheduled before this one).
            self.loop.call_soon(self.task.cancel)

    async def stop(self) -> None:
        """Stop the reply and wait until it is saved. Idempotent."""
        self.request_cancel("stop")
        if self.task is not None:
            await asyncio.wait({self.task})

    async def abandon(self) -> None:
        """The reply's row was never stored (the commit of its exchange failed,
        or another attempt stored the exchange): close the upstream at once and
        end without saving and without a ``reply_finished`` (there is nothing to
        save to, nor a reply to tell of). Returns once the task is over. A reply
        already saving its end finishes that (a write that finds no row).
        Idempotent."""
        self._abandoned = True
        if self.task is not None and not self.task.done():
            self.request_cancel("abandoned")
            self.task.cancel()  # even after a stop, which would save
            await asyncio.wait({self.task})
        self._drop()

    def _drop(self) -> None:
        """End an abandoned reply: let go of what it holds, save nothing, tell no one."""
        if self.finished:
            return
        self.finished = True
        self.place = None
        if self.ticket is not None:
            capacity.slot_release(ticket=self.ticket)
        for handle in (self._watchdog, self._orphan_handle):
            if handle is not None:
                handle.cancel()
        if self.screen is not None:
            self.screen.close()
        self.pending.clear()
        self.subscribers = []
        self.registry.discard(self)
        if self.task is not None:  # it was counted started: count its end, and log it
            reply_metrics.reply_ended(
                provider=self.provider.name,
                model=self.model,
                status="abandoned",
                error_kind="",
                ttft_ms=None,
                tokens_per_s=None,
                prompt=None,
                completion=None,
            )
            log.info(
                "reply %s abandoned: its exchange was not stored, so nothing was saved or shown",
                self.key,
                extra={"fields": {"event": "reply_abandoned", "reply": self.key, "user": self.user_id}},
            )

    # --- the task ------------------------------------------------------------
    async def _fit(self) -> None:
        """Leave out the oldest turns that do not fit the model's window, and
        cap the reply's length to what is left."""
        try:
            self.fit = await prompt_fit(
                provider=self.provider,
                model=self.model,
                messages=self.prompt,
                max_tokens=self.max_tokens,
                keep_last=self.keep_last,
            )
        except ProviderError as exc:
            self._window = exc.context_tokens  # for the reply's record of it
            raise
        self.prompt = self.fit.messages
        self.max_tokens = self.fit.max_tokens

    def _as_overflow(self, exc: ProviderError) -> ProviderError:
        """An upstream failure that is really a prompt over the window, as
        ``context_length`` (learning the window when the upstream names it)."""
        fit = self.fit
        if exc.kind == "context_length":
            if exc.context_tokens:
                self.provider.learn_context_tokens(model=self.model, context_tokens=exc.context_tokens)
            return exc
        if exc.empty_stream and fit is not None and self.piece_count == 0:
            # llama.cpp answers a prompt over its window with 200 and no events.
            # With an estimate, "at the window" allows for the estimate's error
            # (a template's own text, such as a default system prompt, is not
            # in the estimate).
            margin = 0 if fit.exact else max(64, fit.context_tokens // 10)
            if fit.prompt_tokens + margin >= fit.context_tokens:
                # The window is at most this, in the units of this count: fit
                # later requests to it, so the conversation goes on.
                self.provider.learn_context_tokens(model=self.model, context_tokens=fit.prompt_tokens)
                return context_length_error(
                    context_tokens=fit.context_tokens, prompt_tokens=fit.prompt_tokens, upstream=True
                )
        return exc

    def _length_cause(self) -> tuple[str, float | None]:
        """Why a reply ended for length, as ``errors``' cause and limit: a full
        window (``window``), the server's own cut before any limit that was set
        (``server_cut``), or the limit that was set (``tokens``)."""
        fit = self.fit
        completion = self.result.completion_tokens or self.piece_count
        if fit is not None:
            edge = max(16, fit.context_tokens // 32)
            if fit.capped or fit.prompt_tokens + completion >= fit.context_tokens - edge:
                return "window", fit.context_tokens
            if fit.max_tokens is None or completion < fit.max_tokens:
                return "server_cut", None
        return "tokens", self.max_tokens

    def _queued_at(self, position: int, ahead: int) -> None:
        """The reply's place in the queue for the model changed (0: it goes now)."""
        self.place = (position, ahead) if position else None
        self._emit(protocol.frame_reply_queued(reply=self.key, position=position, ahead=ahead))

    def _join_queue(self) -> None:
        """Claim a slot of the model's capacity as the reply starts, so the queue
        is in the order replies were started and a full one refuses at once
        (:class:`Overloaded`). Running at once when a slot is free (or the
        capacity is unlimited); else it waits, and the watchdog sleeps: the
        timeouts count from when the request goes out."""
        ticket = capacity.slot_request(
            provider=self.provider,
            model=self.model,
            user_id=self.user_id,
            rank=capacity.STAFF if self.staff else capacity.REPLY,
            on_place=self._queued_at,
        )
        self.ticket = ticket
        if not ticket.running and self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _take_turn(self) -> None:
        """Wait until the slot is granted (after the prompt was fitted), then
        start the reply's clock and its timeouts."""
        ticket = self.ticket
        if ticket is None or ticket.granted is None:
            return  # it never waited
        try:
            await ticket.wait()
        finally:
            # Also for a reply stopped or shed while it waited: how long it did.
            waited = ticket.queued_ms
            self.queued_ms = waited if waited is not None else (time.monotonic() - ticket.enqueued_at) * 1000
        self.started_at = self.last_piece_at = time.monotonic()
        self._arm_watchdog()

    async def _run(self) -> None:
        self._began = True
        self._upstream = connections_track()  # in this task's context only
        try:
            self._join_queue()
            await self._fit()
            await self._take_turn()
            await self._stream_with_retries()
            if self.screen is not None:
                await self.screen.drain()  # the held tail, checked before the last flush
        except Flagged as flagged:
            await self._finish_moderated(flagged.verdict)
        except asyncio.CancelledError:
            if self._abandoned:
                self._drop()
                raise
            reason = self._cancel_reason
            if reason == "moderation" and self.screen is not None and self.screen.verdict is not None:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self._finish_moderated(self.screen.verdict)
                return
            if reason in _TIMEOUT_SETTINGS:
                # Our own watchdog: a timeout ends the reply as an error, not a cancel.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self._finish("error", reason, limit=getattr(settings, _TIMEOUT_SETTINGS[reason]))
                return
            # A user's stop, or a shutdown (no reason, or "interrupted").
            await self._finish("stopped" if reason == "stop" else "interrupted")
            raise
        except Overloaded as exc:
            # Shed from the queue, or refused by a full one: nothing was sent.
            await self._finish("error", "overloaded", waiting=exc.waiting)
        except ProviderError as exc:
            if self.screen is not None:
                # Text received before the upstream broke is kept once its tail is clear.
                try:
                    self.screen.end_runs()
                except Flagged as flagged:
                    await self._finish_moderated(flagged.verdict)
                    return
            exc = self._as_overflow(exc)
            # The technical account, for whoever runs the server; the user reads words.
            log.info("reply %s failed: %s (%s)", self.key, exc.kind, exc.message)
            overflow = exc.kind == "context_length"
            await self._finish(
                "error",
                exc.kind,
                cause=exc.cause,
                detail=exc.detail,
                status_code=exc.status_code,
                retry_after=exc.retry_after,
                limit=exc.context_tokens if overflow else None,
                tokens=exc.prompt_tokens if overflow else None,
            )
        except Exception:
            log.exception("reply %s failed", self.key)
            await self._finish("error", "internal")
        else:
            reason = self.result.finish_reason
            if self._length_hit:
                await self._finish("error", "length_limit", cause="chars", limit=self._max_chars)
            elif reason in LENGTH_FINISH_REASONS:
                cause, limit = self._length_cause()
                await self._finish("error", "length_limit", cause=cause, limit=limit)
            else:
                await self._finish("complete")

    async def _stream_with_retries(self) -> None:
        attempts = 0
        max_attempts = max(1, settings.CHATSITE_RETRY_ATTEMPTS)
        while True:
            attempts += 1
            try:
                stream = self.provider.stream(
                    model=self.model,
                    messages=self.prompt,
                    result=self.result,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    thinking_budget=self.thinking_budget,
                )
                try:
                    async with aclosing(stream):
                        on_piece = self._on_piece
                        async for piece in stream:
                            if not on_piece(piece):
                                self._length_hit = True
                                break
                finally:
                    if self._stop_at is not None:
                        # The stream is closed: how long a Stop took to close it upstream.
                        reply_metrics.stop_closed(seconds=time.monotonic() - self._stop_at)
                        self._stop_at = None
                return
            except ProviderError as exc:
                reply_metrics.upstream_error(provider=self.provider.name, kind=exc.kind)
                # Retry only before any text exists: never resend what a user has seen.
                if not exc.retryable or self.piece_count or attempts >= max_attempts:
                    raise
                delay = settings.CHATSITE_RETRY_BACKOFF * (2 ** (attempts - 1))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                if delay > settings.CHATSITE_RETRY_MAX_WAIT:
                    raise
                log.info("reply %s: %s; retry %d in %.2fs", self.key, exc.kind, attempts, delay)
                await asyncio.sleep(delay)

    async def _finish_moderated(self, verdict: Verdict) -> None:
        """A rule matched: what was held is dropped; the reply ends ``error``/``moderation``."""
        self.moderation_rule = verdict.rule
        log.info("reply %s stopped by the moderation rule %s", self.key, verdict.rule)
        await self._finish("error", "moderation", cause=verdict.cause)

    async def _finish(self, status: str, error_kind: str = "", **facts: Any) -> None:
        """Send what is pending, save the terminal state, then tell subscribers.

        ``facts`` (with an ``error_kind``) are what ``errors.error_describe``
        makes the user's words of."""
        if self.finished:
            return
        self.finished = True
        self.status = status
        self.place = None
        if self.ticket is not None:
            capacity.slot_release(ticket=self.ticket)  # the next waiter's request goes out now
        for handle in (self._watchdog, self._orphan_handle):
            if handle is not None:
                handle.cancel()
        if self.screen is not None:
            self.screen.close()  # what it still holds is never sent
        self._flush(time.monotonic())
        error = ""
        if error_kind:
            error = errors.error_describe(
                kind=error_kind,
                host=self.provider.host,
                model=self.model,
                has_text=bool(self.text.strip()),
                **facts,
            )
        ended = time.monotonic()
        completion = self.result.completion_tokens
        counted = completion is None
        cancelled = False
        if completion is None and status in ("complete", "error") and self.parts:
            # The upstream sent no usage: count the reply with the model's
            # tokenizer where one is at hand (never on the way of a stop).
            try:
                completion = await asyncio.wait_for(
                    self.provider.completion_tokens(model=self.model, text="".join(self.parts)), 2.0
                )
            except asyncio.CancelledError:
                cancelled = True  # a stop racing the end: save first, then let it through
            except Exception as exc:
                log.info("reply %s: counting its tokens failed (%s)", self.key, type(exc).__name__)
        if completion is None:
            completion = self.piece_count
        fit = self.fit
        prompt_tokens = self.result.prompt_tokens
        if prompt_tokens is None:
            if fit is not None:
                # Counted before the request: with the model's tokenizer where
                # one is at hand, else an estimate (and marked as one).
                prompt_tokens = fit.prompt_tokens
                counted = counted or not fit.exact
            else:
                counted = True
                prompt_tokens = sum(len(m.content) for m in self.prompt) // 4
        ttft_ms = tpot = first_answer_ms = None
        if self.first_text_at is not None:
            first_answer_ms = (self.first_text_at - self.started_at) * 1000
        reasoning_ms = self.reasoning_ms(ended)
        if self.first_piece_at is not None:
            ttft_ms = (self.first_piece_at - self.started_at) * 1000
            streaming_s = self.last_piece_at - self.first_piece_at
            # An answer that came whole has no pace of its own to measure.
            if completion > 1 and streaming_s > 0 and self.result.streamed:
                tpot = (completion - 1) / streaming_s
        total_ms = (ended - self.started_at) * 1000
        finish_reason = self.result.finish_reason or ""
        if status == "stopped":
            finish_reason = "stopped"
        metrics = serializers.metrics_dict(
            ttft_ms=ttft_ms,
            tokens_per_s=tpot,
            total_ms=total_ms,
            first_answer_ms=first_answer_ms,
            reasoning_ms=reasoning_ms,
        )
        metrics["queued_ms"] = self.queued_ms
        usage = serializers.usage_dict(
            prompt_tokens=prompt_tokens, completion_tokens=completion, counted=counted
        )
        omitted = fit.omitted if fit is not None else 0
        context_tokens = fit.context_tokens if fit is not None else self._window
        save = asyncio.ensure_future(
            finishes.submit(
                reply_services.ReplyFinish(
                    reply_id=self.id,
                    content=self.text,
                    last_seq=self.seq,
                    status=status,
                    error_kind=error_kind,
                    error_message=error,
                    finish_reason=finish_reason,
                    ttft_ms=ttft_ms,
                    total_ms=total_ms,
                    tokens_per_s=tpot,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion,
                    usage_counted=counted,
                    omitted_messages=omitted,
                    context_tokens=context_tokens,
                    reasoning=self.reasoning,
                    reasoning_ms=reasoning_ms,
                    first_answer_ms=first_answer_ms,
                    reasoning_redacted=self.redacted,
                    reasoning_signature=str(self.result.extra.get("reasoning_signature") or ""),
                    moderation_rule=self.moderation_rule,
                )
            )
        )
        # A second cancel (a stop racing a disconnect) must not lose the save.
        while not save.done():
            try:
                await asyncio.shield(save)
            except asyncio.CancelledError:
                cancelled = True
        self.registry.discard(self)
        # Staff read which rule stopped a moderated reply; no one else does.
        staff_note = errors.moderation_rule_note(rule=self.moderation_rule) if self.staff else ""
        try:
            save.result()
        except Exception:
            log.exception("reply %s: saving the terminal state failed", self.key)
        self._emit(
            protocol.frame_reply_finished(
                end=protocol.ReplyEnd(
                    conversation=str(self.conversation_id),
                    reply=self.key,
                    status=status,
                    error_kind=error_kind,
                    error=error + staff_note,
                    last_seq=self.seq,
                    finish_reason=finish_reason,
                    usage=usage,
                    metrics=metrics,
                    omitted_messages=omitted,
                    context_tokens=context_tokens,
                )
            )
        )
        reply_metrics.reply_ended(
            provider=self.provider.name,
            model=self.model,
            status=status,
            error_kind=error_kind,
            ttft_ms=ttft_ms,
            tokens_per_s=tpot,
            prompt=prompt_tokens,
            completion=completion,
        )
        if log.isEnabledFor(logging.INFO):
            self._log_end(
                status, error_kind, finish_reason, ttft_ms, total_ms, tpot, prompt_tokens, completion, counted
            )
        ended_for, self.subscribers = self.subscribers, []
        for subscriber in ended_for:
            subscriber.reply_ended(self.key)
        if cancelled:
            raise asyncio.CancelledError

    def _log_end(
        self,
        status: str,
        error_kind: str,
        finish_reason: str,
        ttft_ms: float | None,
        total_ms: float,
        tokens_per_s: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        counted: bool,
    ) -> None:
        """The reply's one line at its end (docs/deploy.md, "Logs"): what an
        operator greps for, and with ``CHATSITE_LOG_FORMAT=json`` the same as keys."""
        fields = {
            "event": "reply_end",
            "reply": self.key,
            "conversation": str(self.conversation_id),
            "user": self.user_id,
            "provider": self.provider.name,
            "model": self.model,
            "status": status,
            "error_kind": error_kind,
            "finish_reason": finish_reason,
            "ttft_ms": _rounded(ttft_ms),
            "total_ms": _rounded(total_ms),
            "tokens_per_s": _rounded(tokens_per_s),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "usage_counted": counted,
        }
        words = " ".join(
            f"{key}={'-' if value in (None, '') else value}"
            for key, value in fields.items()
            if key not in _NOT_IN_TEXT
        )
        log.info("reply %s ended: %s", self.key, words, extra={"fields": fields})


#: The reply-end line's fields that its text (``reply <id> ended: …``) already says.
_NOT_IN_TEXT = frozenset({"event", "reply"})


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _store_finishes(items: list[reply_services.ReplyFinish]) -> list[None]:
    reply_services.reply_finish_many(finishes=items)
    return [None] * len(items)


#: Replies that end while others are being saved are saved together.
finishes: Batcher[reply_services.ReplyFinish, None] = Batcher(_store_finishes)


#: The reply runner's own timeouts: error kind -> the setting that ran out.
_TIMEOUT_SETTINGS = {
    "timeout_first_token": "CHATSITE_FIRST_TOKEN_TIMEOUT",
    "timeout_idle": "CHATSITE_IDLE_TIMEOUT",
    "timeout_total": "CHATSITE_TOTAL_TIMEOUT",
}


async def finished_frame_for(*, user_id: int, reply_id: str) -> str | None:
    """The ``reply_finished`` of the user's reply, from its saved state (None if
    there is no such reply of the user's)."""
    message = await database_sync_to_async(selectors.reply_get)(user_id=user_id, reply_id=reply_id)
    return finished_frame(message) if message is not None else None


def finished_frame(message: Message, *, staff: bool = False) -> str:
    """A reply's ``reply_finished``, from its saved state (``staff``: for a staff user)."""
    return protocol.frame_reply_finished(end=serializers.message_to_reply_end(message=message, staff=staff))
