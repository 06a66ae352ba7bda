"""The chat WebSocket: validate a frame, delegate, answer. Nothing else."""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import actions, protocol
from .replies import Reply

log = logging.getLogger(__name__)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.user = user
        self.following: weakref.WeakSet[Reply] = weakref.WeakSet()
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop())
        await self.accept()

    def deliver(self, frame: str) -> None:
        """Queue a server frame; replies call this and never wait on a socket."""
        self._outbox.put_nowait(frame)

    async def _write_loop(self) -> None:
        get, send = self._outbox.get, self.send
        while True:
            frame = await get()
            await send(text_data=frame)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = protocol.parse_client_frame(
                text_data,
                max_bytes=settings.CHATSITE_MAX_FRAME_BYTES,
                max_prompt_chars=settings.CHATSITE_MAX_PROMPT_CHARS,
            )
            reply: Reply | None = None
            if isinstance(frame, protocol.Send):
                reply = await actions.reply_start(user=self.user, frame=frame, subscriber=self)
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
        except Exception:
            log.exception("handling a frame failed")
            self.deliver(protocol.error_frame("internal", "the server failed to handle that frame"))

    async def disconnect(self, code: int) -> None:
        for reply in list(getattr(self, "following", ())):
            reply.unsubscribe(self)
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.cancel()
