"""This process's live replies: who they are, when their held tokens go out,
and the timer that checkpoints their partial text.

The :data:`registry` holds every :class:`~conversations.realtime.replies.Reply`
this process runs, from its start until its terminal state is saved, by reply
id and by conversation. It is also the replies' shared clock: tokens a reply
holds back for coalescing are sent on one 5 ms grid for all of them
(:meth:`Registry.flush_later`), with a window that follows the load
(:class:`~conversations.realtime.pacing.Pacer`), and one loop checkpoints the partial text of
every live reply each ``CHATSITE_CHECKPOINT_INTERVAL``, in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from channels.db import database_sync_to_async
from django.conf import settings

from conversations import metrics
from conversations.realtime import capacity
from conversations.realtime.pacing import Pacer
from conversations.realtime.replies import Reply
from conversations.services import replies as reply_services

log = logging.getLogger(__name__)

FLUSH_GRID = 0.005  # seconds


class Registry:
    """This process's live replies, by reply id and by conversation."""

    def __init__(self) -> None:
        self.by_id: dict[str, Reply] = {}
        self.by_conversation: dict[uuid.UUID, Reply] = {}
        #: Every live reply of a conversation (a compare has several), in start order.
        self.all_by_conversation: dict[uuid.UUID, list[Reply]] = {}
        self.starting: dict[uuid.UUID, int] = {}  # conversation -> user, while storing
        #: Background work that serves the replies and may be dropped at any
        #: time (titles): cancelled first at shutdown.
        self.chores: set[asyncio.Task[None]] = set()
        self._checkpointer: asyncio.Task[None] | None = None
        # Held frames are sent on a shared 5 ms grid: one timer for all the
        # replies due in a slot instead of one per frame.
        self._slots: dict[int, list[Reply]] = {}
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        #: Pieces read by replies that have left the registry (see ``_pieces_read``).
        self._pieces_ended = 0
        #: The coalescing window follows this process's load (pacing.py).
        self.pacer = Pacer(live=lambda: len(self.by_id), pieces=self._pieces_read)

    @property
    def window(self) -> float:
        """The coalescing window, in seconds, for every live reply's next frame."""
        return self.pacer.window

    def _pieces_read(self) -> int:
        """Every piece the replies of this registry have read (never decreases)."""
        return self._pieces_ended + sum(reply.piece_count for reply in self.by_id.values())

    def flush_later(self, reply: Reply, when: float) -> None:
        """Send ``reply``'s held tokens at ``when`` (``time.monotonic()``), or
        up to one grid step sooner."""
        loop = reply.loop
        if loop is not self._slots_loop:
            self._slots_loop, self._slots = loop, {}
        slot = int(when / FLUSH_GRID)
        due = self._slots.get(slot)
        if due is None:
            self._slots[slot] = [reply]
            # asyncio's loop clock is time.monotonic() too.
            loop.call_at(slot * FLUSH_GRID, self._flush_slot, slot)
        else:
            due.append(reply)

    def _flush_slot(self, slot: int) -> None:
        now = time.monotonic()
        for reply in self._slots.pop(slot, ()):
            reply.flush_held(now)

    def get(self, reply_id: str) -> Reply | None:
        return self.by_id.get(reply_id)

    def for_conversation(self, conversation_id: uuid.UUID) -> Reply | None:
        """One live reply of the conversation (the first of a compare's), or None."""
        return self.by_conversation.get(conversation_id)

    def in_conversation(self, conversation_id: uuid.UUID) -> list[Reply]:
        """Every live reply of the conversation, in start order (a compare's columns)."""
        return list(self.all_by_conversation.get(conversation_id, ()))

    def add(self, reply: Reply) -> None:
        self.by_id[reply.key] = reply
        first = self.by_conversation.get(reply.conversation_id)
        if first is None or first.finished:  # else: a compare's first column stays the one
            self.by_conversation[reply.conversation_id] = reply
        self.all_by_conversation.setdefault(reply.conversation_id, []).append(reply)
        self.pacer.ensure_running()
        if self._checkpointer is None or self._checkpointer.done():
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpointer")

    def discard(self, reply: Reply) -> None:
        if self.by_id.pop(reply.key, None) is not None:
            self._pieces_ended += reply.piece_count
        live = self.all_by_conversation.get(reply.conversation_id)
        if live is not None and reply in live:
            live.remove(reply)
        if self.by_conversation.get(reply.conversation_id) is reply:
            if live:
                self.by_conversation[reply.conversation_id] = live[0]
            else:
                del self.by_conversation[reply.conversation_id]
        if not live:
            self.all_by_conversation.pop(reply.conversation_id, None)
        if not self.by_id:
            self.pacer.stop()  # nothing to pace: the base window, no sampling

    def __len__(self) -> int:
        return len(self.by_id)

    async def _checkpoint_loop(self) -> None:
        interval = settings.CHATSITE_CHECKPOINT_INTERVAL or 1.0
        while self.by_id:
            await asyncio.sleep(interval)
            batch = [
                (reply, reply.seq)
                for reply in list(self.by_id.values())
                if not reply.finished and reply.seq > reply.checkpointed_seq
            ]
            if not batch:
                continue
            rows = [
                reply_services.ReplyCheckpoint(
                    reply_id=reply.id,
                    content=reply.text_up_to(seq),
                    last_seq=seq,
                    reasoning=reply.reasoning_up_to(seq),
                )
                for reply, seq in batch
            ]
            try:
                await database_sync_to_async(reply_services.reply_checkpoint_many)(checkpoints=rows)
            except Exception as exc:  # a locked database: try again next interval
                log.warning("checkpoint of %d replies failed (%s)", len(rows), type(exc).__name__)
                continue
            for reply, seq in batch:
                reply.checkpointed_seq = seq

    def chore(self, task: asyncio.Task[None]) -> None:
        """Hold ``task`` (background work, see :attr:`chores`) until it ends."""
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)

    async def stop_all(self) -> None:
        """Cancel the background chores, interrupt every live reply, and wait
        until each is saved (shutdown)."""
        chores = [task for task in self.chores if not task.done()]
        for task in chores:
            task.cancel()
        replies = list(self.by_id.values())
        for reply in replies:
            reply.request_cancel("interrupted")
        tasks = {r.task for r in replies if r.task is not None} | set(chores)
        if tasks:
            await asyncio.wait(tasks)


registry = Registry()
#: /metrics reads the live replies off the registry when it is scraped.
metrics.gauge_source(name="live_replies", source=lambda: len(registry.by_id))
metrics.gauge_source(name="queue_length", source=capacity.capacity_waiting)


def reply_for_user(*, reply_id: str, user_id: int) -> Reply | None:
    """The live reply ``reply_id`` if it is ``user_id``'s, else None."""
    reply = registry.get(reply_id)
    if reply is None or reply.user_id != user_id:
        return None
    return reply
