"""The chat WebSocket: validate a frame, delegate, answer. Nothing else."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from conversations import metrics, selectors
from conversations.realtime import cluster, commands, protocol
from conversations.realtime.cluster import user_group
from conversations.realtime.middleware import Receive, Scope
from conversations.realtime.outbox import Send, outbox
from conversations.realtime.registry import reply_for_user
from conversations.realtime.replies import Reply
from conversations.realtime.subscribers import RemoteFollows, Resync

log = logging.getLogger(__name__)

#: WebSocket close code sent when the session behind a socket has ended.
CLOSE_SESSION_ENDED = 4401


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels has no type information
    """One chat socket; a :class:`~conversations.realtime.subscribers.Follower`
    of the replies it asks for, here or in another process."""

    #: Where frames from other processes reach it (None: no channel layer).
    channel_name: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Channels' ``AsyncConsumer.__call__``, with the wait on this socket's
        layer channel guarded: when the layer (Redis) fails, the socket stays
        open and keeps its own process's replies; the wait resumes when it is back."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources: list[Callable[[], Awaitable[dict[str, Any]]]] = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()  # a name; no trip to Redis
            sources.append(self._layer_receive)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass

    async def _layer_receive(self) -> dict[str, Any]:
        backoff = 0.1
        while True:
            try:
                message: dict[str, Any] = await self.channel_layer.receive(self.channel_name)
                return message
            except Exception as exc:  # the layer is down: try again, it may come back
                log.warning(
                    "channel layer receive failed (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.user = user
        self.following: weakref.WeakSet[Reply] = weakref.WeakSet()
        self.remote = RemoteFollows()
        self._session_checked_at = time.monotonic()  # just authenticated
        if self.channel_layer is not None:
            try:
                await cluster.layer_call(self.channel_layer.group_add(user_group(user.pk), self.channel_name))
            except Exception as exc:  # no layer right now: the session re-check closes it after a logout
                log.warning("could not join the user group (%s)", type(exc).__name__)
        await self.accept()
        self._counted = metrics.socket_opened()

    # --- the Follower contract (subscribers.py) ------------------------------
    def deliver(self, frame: str) -> None:
        """Queue a server frame; replies call this and never wait on a socket."""
        outbox.put(self.base_send, frame)

    def reply_ended(self, reply_id: str) -> None:
        for reply in [r for r in self.following if r.key == reply_id]:
            self.following.discard(reply)

    def follow_remote(self, reply_id: str, owner: str) -> None:
        self.remote.follow(reply_id, owner)

    def unfollow_remote(self, reply_id: str) -> None:
        self.remote.unfollow(reply_id)

    def remote_followed(self) -> Collection[str]:
        return self.remote.owners.keys()

    def remote_ended(self, reply_id: str, frame: str) -> None:
        if self.remote.unfollow(reply_id) is not None:
            self.deliver(frame)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its per-message ``aclose_old_connections()``:
        that is a trip to the database thread for every frame received, and every
        database call here goes through ``database_sync_to_async``, which closes
        stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Answer a ``ping`` and a ``stop`` of a reply streaming here at once; queue the rest.

        Channels hands a consumer one frame at a time, so work that waits (a
        ``send`` whose message waits on a locked database) would hold up every
        frame behind it. The waiting work runs in a task of its own instead,
        after the earlier frames about the same conversation
        (:meth:`_schedule`), and ``receive`` returns at once.
        """
        try:
            frame: protocol.ClientFrame | protocol.ProtocolError = protocol.parse_client_frame(
                text_data,
                max_bytes=settings.CHATSITE_MAX_FRAME_BYTES,
                max_prompt_chars=settings.CHATSITE_MAX_PROMPT_CHARS,
            )
        except protocol.ProtocolError as exc:
            frame = exc  # answered in order, after the session check
        if isinstance(frame, protocol.Ping):
            # The page's heartbeat: liveness only, so no session check and no database.
            self.deliver(protocol.frame_pong())
            return
        if isinstance(frame, protocol.Stop):
            live = reply_for_user(reply_id=str(frame.reply), user_id=self.user.pk)
            if live is not None:
                # Only ever the socket's own user's reply, and it changes nothing
                # else, so no session check either (the session timer closes a
                # dead socket anyway). Its save is waited on by the next queued frame
                # only, so that a ``send`` right after it is not told ``reply_running``.
                live.request_cancel("stop")  # now: the upstream is shut in this very step
                self._stopping.add(self._spawn(live.stop()))
                return
            # Not streaming here: maybe an earlier frame of this socket is starting
            # it (a ``continue`` just before), so it waits for them, in order.
        self._schedule(frame)

    # --- ordering: per conversation, not per socket --------------------------
    def _order_key(self, frame: protocol.ClientFrame | protocol.ProtocolError) -> str | None:
        """The frames that must be handled in the order they came share a key:
        those about one conversation. A send that starts a new conversation has
        its own (its ``client_id``: a retry of it waits for it). A frame about a
        reply this socket has not followed, and a malformed frame, get None:
        they wait for every frame before them, as when all frames waited."""
        if isinstance(frame, protocol.Send):
            if frame.conversation is not None:
                return f"c:{frame.conversation}"
            return f"n:{frame.client_id}"
        if isinstance(frame, protocol.Subscribe):
            return f"c:{frame.conversation}"
        if isinstance(frame, protocol.Regenerate | protocol.Continue | protocol.Stop):
            conversation = self._conversation_of.get(str(frame.reply))
            return f"c:{conversation}" if conversation is not None else None
        return None

    def _schedule(self, frame: protocol.ClientFrame | protocol.ProtocolError) -> None:
        """Handle ``frame`` once the earlier frames it must follow are done.

        Frames about one conversation keep their order; frames about different
        conversations do not wait for each other, so a send that waits for its
        store (a burst of sends from one socket, stored together by the
        batcher) never holds up a send to another conversation. Stops sent
        before a frame are saved before it is handled, so that a ``send``
        right after a stop is not told ``reply_running``.
        """
        key = self._order_key(frame)
        waits: set[asyncio.Task[None]] = set(self._stopping)
        if key is None:
            waits |= self._pending
        else:
            earlier = self._tails.get(key)
            if earlier is not None:
                waits.add(earlier)
            if self._barrier is not None:
                waits.add(self._barrier)
        task = self._spawn(self._handle_after(waits, frame))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        if key is None:
            self._barrier = task
        else:
            self._tails[key] = task
        task.add_done_callback(functools.partial(self._tail_done, key))

    def _tail_done(self, key: str | None, task: asyncio.Task[None]) -> None:
        if key is not None and self._tails.get(key) is task:
            del self._tails[key]
        if self._barrier is task:
            self._barrier = None

    @functools.cached_property
    def _tails(self) -> dict[str, asyncio.Task[None]]:
        """The last frame scheduled for each order key, until it is done."""
        return {}

    @functools.cached_property
    def _pending(self) -> set[asyncio.Task[None]]:
        """Frames scheduled and not yet handled."""
        return set()

    @functools.cached_property
    def _conversation_of(self) -> dict[str, uuid.UUID]:
        """The conversation of each reply this socket has followed (bounded)."""
        return {}

    _barrier: asyncio.Task[None] | None = None

    @functools.cached_property
    def _tasks(self) -> set[asyncio.Task[None]]:
        """Work started by this socket's frames (held, so that it is not collected)."""
        return set()

    @functools.cached_property
    def _stopping(self) -> set[asyncio.Task[None]]:
        return set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._stopping.discard)
        return task

    async def _handle_after(
        self, waits: set[asyncio.Task[None]], frame: protocol.ClientFrame | protocol.ProtocolError
    ) -> None:
        if waits:
            await asyncio.wait(waits)
        try:
            await self._handle(frame)
        except Exception:
            log.exception("handling a frame failed")
            self.deliver(
                protocol.frame_error(code="internal", message="the server failed to handle that frame")
            )

    async def _handle(self, frame: protocol.ClientFrame | protocol.ProtocolError) -> None:
        if isinstance(frame, protocol.ProtocolError):
            if await self._session_alive():
                self.deliver(protocol.frame_error(code=frame.code, message=frame.message, ref=frame.ref))
            return
        if not await self._session_alive():
            return
        try:
            replies: list[Reply | None] = []
            if isinstance(frame, protocol.Send) and frame.models:
                replies = list(await commands.compare_start(user=self.user, frame=frame, subscriber=self))
            elif isinstance(frame, protocol.Send):
                replies = [await commands.reply_start(user=self.user, frame=frame, subscriber=self)]
            elif isinstance(frame, protocol.Regenerate):
                replies = [await commands.reply_regenerate(user=self.user, frame=frame, subscriber=self)]
            elif isinstance(frame, protocol.Continue):
                replies = [await commands.reply_continue(user=self.user, frame=frame, subscriber=self)]
            elif isinstance(frame, protocol.Stop):
                await commands.reply_stop(user=self.user, reply_id=frame.reply)
            elif isinstance(frame, protocol.Subscribe):
                replies = list(
                    await commands.conversation_subscribe(
                        user=self.user,
                        conversation_id=frame.conversation,
                        after_seq=frame.after_seq,
                        subscriber=self,
                        after=frame.after,
                    )
                )
            for reply in replies:
                if reply is None:
                    continue
                self.following.add(reply)
                known = self._conversation_of
                if len(known) >= 10_000:
                    known.clear()
                known[reply.key] = reply.conversation_id
        except protocol.ProtocolError as exc:
            self.deliver(protocol.frame_error(code=exc.code, message=exc.message, ref=exc.ref))

    async def accept(
        self, subprotocol: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await super().accept(subprotocol, headers)
        self._session_timer = asyncio.create_task(self._session_watch())

    async def _session_watch(self) -> None:
        """Re-check the session every CHATSITE_SESSION_RECHECK seconds while the socket
        is open, so that a socket that only listens (or only pings) is closed too when
        its session expires or its password changes. One trip to the database per
        socket per interval, and none while frames keep it checked anyway."""
        while True:
            # Up to a tenth late, at random: sockets opened together (a restart's
            # reconnects) spread their checks instead of making them all at once.
            period = max(settings.CHATSITE_SESSION_RECHECK, 0.1) * random.uniform(1.0, 1.1)
            checked = getattr(self, "_session_checked_at", 0.0)
            await asyncio.sleep(max(checked + period - time.monotonic(), 0.0))
            try:
                if not await self._session_alive():
                    return
            except Exception as exc:  # the database is away: try again next time
                log.warning("could not re-check a socket's session (%s)", type(exc).__name__)
                self._session_checked_at = time.monotonic()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Frames received before the socket closed are handled before it is let go,
        as when they were handled one at a time."""
        timer = getattr(self, "_session_timer", None)
        if timer is not None:
            timer.cancel()
        pending = self.__dict__.get("_pending")
        if pending:
            await asyncio.wait(set(pending))
        await super().websocket_disconnect(message)

    async def _session_alive(self) -> bool:
        """Re-check the session (at most every CHATSITE_SESSION_RECHECK seconds; a
        logout closes the session's sockets at once anyway)."""
        if getattr(self, "_session_over", False):
            return False
        now = time.monotonic()
        if now - getattr(self, "_session_checked_at", 0.0) < settings.CHATSITE_SESSION_RECHECK:
            return True
        self._session_checked_at = now
        key = getattr(self.scope.get("session"), "session_key", None)
        live = database_sync_to_async(selectors.session_is_live)
        if key and await live(session_key=key, user_id=self.user.pk):
            return True
        await self._end_session()
        return False

    async def _end_session(self) -> None:
        if getattr(self, "_session_over", False):  # the timer and a frame, or a logout
            return
        self._session_over = True
        self.deliver(protocol.frame_error(code="session_ended", message="you were logged out; log in again"))
        await outbox.flush()  # the frame goes out before the close
        await self.close(code=CLOSE_SESSION_ENDED)

    # --- channel layer events ---------------------------------------------------
    async def chat_frame(self, event: dict[str, Any]) -> None:
        """A frame from a reply that runs in another process (see :class:`RemoteFollows`)."""
        text = event["text"]
        verdict = self.remote.receive(text)
        if verdict == "deliver":
            self.deliver(text)
        elif isinstance(verdict, Resync):
            # Its deltas stay dropped until the answer; if there is none, its
            # reply_finished (last_seq beyond what the client has) makes the
            # client fetch the saved text.
            if (
                verdict.owner is None
                or self.channel_name is None
                or not await cluster.reply_subscribe_remote(
                    owner=verdict.owner,
                    reply_id=verdict.reply_id,
                    user_id=self.user.pk,
                    channel=self.channel_name,
                    after_seq=verdict.after_seq,
                )
            ):
                log.warning("could not ask again for reply %s", verdict.reply_id)

    async def user_frame(self, event: dict[str, Any]) -> None:
        """A frame for every socket of this user (``cluster.user_frame_send``),
        e.g. a conversation's new title."""
        text = event.get("text")
        if isinstance(text, str):
            self.deliver(text)

    async def session_ended(self, event: dict[str, Any]) -> None:
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if event.get("session_key") in (None, key):
            await self._end_session()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            metrics.socket_closed()
        for reply in list(getattr(self, "following", ())):
            reply.unsubscribe(self)
        remote = getattr(self, "remote", None)
        if remote is not None and self.channel_name is not None:
            for reply_id, owner in remote.clear():  # nothing more to tell it
                await cluster.reply_unsubscribe_remote(
                    owner=owner, reply_id=reply_id, user_id=self.user.pk, channel=self.channel_name
                )
        user = getattr(self, "user", None)
        if user is not None and self.channel_layer is not None:
            try:
                await cluster.layer_call(
                    self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
                )
            except Exception:  # the layer is down; the group entry expires by itself
                pass
