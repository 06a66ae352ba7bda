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


class _Flush:
    """A place in the queue: its future resolves once the sender got past it."""

    __slots__ = ("done",)

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done


async def _flushed(message: dict[str, Any]) -> None:
    """The ``send`` of a flush's place in the queue (never called)."""


class Outbox:
    def __init__(self) -> None:
        self._queue: deque[tuple[Send, str | _Flush]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def put(self, send: Send, frame: str) -> None:
        """Queue ``frame`` for the socket behind ``send`` (an ASGI send callable)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run one per test)
            self._loop, self._queue, self._task, self._wake = loop, deque(), None, None
        self._queue.append((send, frame))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="outbox")
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def flush(self) -> asyncio.Future[None]:
        """A future that resolves once every frame queued before this call was
        handed to its socket's ``send`` (or dropped, its socket gone); frames
        queued later do not hold it up. ``await outbox.flush()``."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        idle = self._loop is loop and not self._queue and self._wake is not None and not self._wake.done()
        if self._loop is not loop or self._task is None or self._task.done() or idle:
            done.set_result(None)  # nothing queued, nothing on its way
            return done
        self._queue.append((_flushed, _Flush(done)))  # the sender is running: it gets there
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return done

    async def _run(self) -> None:
        assert self._loop is not None
        queue = self._queue
        while True:
            while queue:
                send, frame = queue.popleft()
                if send is _flushed:
                    assert isinstance(frame, _Flush)
                    if not frame.done.done():  # its caller may have been cancelled
                        frame.done.set_result(None)
                    continue
                try:
                    await send({"type": "websocket.send", "text": frame})
                except Exception:  # a socket that went away: its frames are moot
                    log.debug("sending a frame failed", exc_info=True)
            self._wake = self._loop.create_future()
            await self._wake
            self._wake = None


outbox = Outbox()
