"""The chat WebSocket: validate a frame, delegate, answer. Nothing else."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import time
import weakref

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import actions, protocol, selectors, workers
from .outbox import outbox
from .replies import Reply, reply_for_user

log = logging.getLogger(__name__)

#: WebSocket close code sent when the session behind a socket has ended.
CLOSE_SESSION_ENDED = 4401


def user_group(user_id: int) -> str:
    return f"chatsite-user.{user_id}"


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.user = user
        self.following: weakref.WeakSet[Reply] = weakref.WeakSet()
        self.following_remote: dict[str, str] = {}  # reply id -> owner's channel
        await workers.ensure_started()
        self._session_checked_at = time.monotonic()  # just authenticated
        if self.channel_layer is not None:
            try:
                await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
            except Exception as exc:  # no layer right now: logout still closes on the next frame
                log.warning("could not join the user group (%s)", type(exc).__name__)
        await self.accept()

    def deliver(self, frame: str) -> None:
        """Queue a server frame; replies call this and never wait on a socket."""
        outbox.put(self.base_send, frame)

    async def dispatch(self, message: dict) -> None:
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
        frame behind it. The waiting work runs in this socket's ordered queue
        instead (:meth:`_work`), and ``receive`` returns at once.
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
            self.deliver(protocol.PONG)
            return
        if isinstance(frame, protocol.Stop):
            live = reply_for_user(str(frame.reply), self.user.pk)
            if live is not None:
                # Only ever the socket's own user's reply, and it changes nothing
                # else, so no session check either (the session timer closes a
                # dead socket anyway). Its save is waited on by the next queued frame
                # only, so that a ``send`` right after it is not told ``reply_running``.
                self._stopping.add(self._spawn(live.stop()))
                return
            # Not streaming here: maybe an earlier frame of this socket is starting
            # it (a ``continue`` just before), so it waits for them, in order.
        self._queue.append(frame)
        if len(self._queue) == 1:
            self._worker = self._spawn(self._work())

    @functools.cached_property
    def _queue(self) -> collections.deque:
        return collections.deque()

    @functools.cached_property
    def _tasks(self) -> set[asyncio.Task]:
        """Work started by this socket's frames (held, so that it is not collected)."""
        return set()

    @functools.cached_property
    def _stopping(self) -> set[asyncio.Task]:
        return set()

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._stopping.discard)
        return task

    async def _work(self) -> None:
        """The socket's ordered queue: one frame after another, until it is empty."""
        queue = self._queue
        while queue:
            try:
                if self._stopping:  # stops sent before this frame: their replies are saved first
                    await asyncio.wait(set(self._stopping))
                await self._handle(queue[0])
            except Exception:
                log.exception("handling a frame failed")
                self.deliver(protocol.error_frame("internal", "the server failed to handle that frame"))
            finally:
                queue.popleft()

    async def _handle(self, frame: protocol.ClientFrame | protocol.ProtocolError) -> None:
        if isinstance(frame, protocol.ProtocolError):
            if await self._session_alive():
                self.deliver(protocol.error_frame(frame.code, frame.message, frame.ref))
            return
        if not await self._session_alive():
            return
        try:
            reply: Reply | None = None
            if isinstance(frame, protocol.Send):
                reply = await actions.reply_start(user=self.user, frame=frame, subscriber=self)
            elif isinstance(frame, protocol.Regenerate):
                reply = await actions.reply_regenerate(user=self.user, frame=frame, subscriber=self)
            elif isinstance(frame, protocol.Continue):
                reply = await actions.reply_continue(user=self.user, frame=frame, subscriber=self)
            elif isinstance(frame, protocol.Stop):
                await actions.reply_stop(user=self.user, reply_id=frame.reply)
            elif isinstance(frame, protocol.Subscribe):
                reply = await actions.conversation_subscribe(
                    user=self.user,
                    conversation_id=frame.conversation,
                    after_seq=frame.after_seq,
                    subscriber=self,
                )
            if reply is not None:
                self.following.add(reply)
        except protocol.ProtocolError as exc:
            self.deliver(protocol.error_frame(exc.code, exc.message, exc.ref))

    async def accept(self, subprotocol: str | None = None, headers=None) -> None:
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

    async def websocket_disconnect(self, message: dict) -> None:
        """Frames received before the socket closed are handled before it is let go,
        as when they were handled one at a time."""
        timer = getattr(self, "_session_timer", None)
        if timer is not None:
            timer.cancel()
        worker = getattr(self, "_worker", None)
        if worker is not None and not worker.done():
            await asyncio.wait({worker})
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
        self.deliver(protocol.error_frame("session_ended", "you were logged out; log in again"))
        await asyncio.sleep(0)  # let the outbox send it
        await self.close(code=CLOSE_SESSION_ENDED)

    # --- channel layer events ---------------------------------------------------
    async def chat_frame(self, event: dict) -> None:
        """A frame from a reply that runs in another process."""
        self.deliver(event["text"])

    async def session_ended(self, event: dict) -> None:
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if event.get("session_key") in (None, key):
            await self._end_session()

    async def disconnect(self, code: int) -> None:
        for reply in list(getattr(self, "following", ())):
            reply.unsubscribe(self)
        for reply_id, owner in getattr(self, "following_remote", {}).items():
            await workers.send_command(
                owner,
                {
                    "type": "reply.unsubscribe",
                    "reply": reply_id,
                    "user": self.user.pk,
                    "channel": self.channel_name,
                },
            )
        user = getattr(self, "user", None)
        if user is not None and self.channel_layer is not None:
            try:
                await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
            except Exception:  # the layer is down; the group entry expires by itself
                pass
