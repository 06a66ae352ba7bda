"""Frames on their way to sockets: one sender task per process, not one per socket.

A reply hands each frame to its viewers without waiting (``deliver``). With a
writer task per socket, every frame cost a task wake-up of its own; under
load that was a fair share of the server's CPU. Here every frame joins one
queue (first in, first out, so each socket gets its frames in order) and one
task sends whatever is queued each time it runs. daphne's ``send`` never
waits (Twisted buffers the bytes), so one slow client cannot hold up the others.

:meth:`Outbox.flush` waits until every frame queued so far has left: a socket
about to close, or a process about to exit, awaits it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: An ASGI ``send`` callable.
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Outbox:
    def __init__(self) -> None:
        self._queue: deque[tuple[Send, str]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued = 0  # frames put since the loop began
        self._handled = 0  # of those, handed to their socket's send (or dropped)
        # (frames handled by then, resolved then), in the order flush() was called
        self._flushes: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:  # a new event loop (tests run one per test)
            self._loop, self._queue, self._task, self._wake = loop, deque(), None, None
            self._queued, self._handled, self._flushes = 0, 0, deque()

    def put(self, send: Send, frame: str) -> None:
        """Queue ``frame`` for the socket behind ``send`` (an ASGI send callable)."""
        loop = asyncio.get_running_loop()
        self._on_loop(loop)
        self._queue.append((send, frame))
        self._queued += 1
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="outbox")
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def flush(self) -> asyncio.Future[None]:
        """A future that resolves once every frame queued before this call was
        handed to its socket's ``send`` (or dropped, its socket gone); frames
        queued later do not hold it up. ``await outbox.flush()``."""
        loop = asyncio.get_running_loop()
        self._on_loop(loop)
        done: asyncio.Future[None] = loop.create_future()
        if self._handled >= self._queued:
            done.set_result(None)
        else:
            self._flushes.append((self._queued, done))
        return done

    async def _run(self) -> None:
        assert self._loop is not None
        queue = self._queue
        flushes = self._flushes
        while True:
            while queue:
                send, frame = queue.popleft()
                try:
                    await send({"type": "websocket.send", "text": frame})
                except Exception:  # a socket that went away: its frames are moot
                    log.debug("sending a frame failed", exc_info=True)
                self._handled += 1
                while flushes and flushes[0][0] <= self._handled:
                    _, done = flushes.popleft()
                    if not done.done():  # its caller may have been cancelled
                        done.set_result(None)
            self._wake = self._loop.create_future()
            await self._wake
            self._wake = None


outbox = Outbox()
