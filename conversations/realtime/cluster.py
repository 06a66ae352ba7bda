"""This process as a worker among several: reachable, alive, and tidy.

Replies are owned by the process that runs them. A stop or a subscribe that
reaches another process is routed here over the channel layer (channels-redis
across processes; the in-memory layer within one): each process listens on one
channel of its own, recorded in its :class:`~conversations.models.Worker` row.
The same loop writes a heartbeat, and sweeps replies left ``streaming`` by
processes whose heartbeat went stale to ``interrupted``; a socket here that
follows such a reply of another process is then told it ended.

All of this starts with the server process (:func:`start_with_server`, called
from ``chatsite.asgi``), not with its first socket. The channel layer may fail
(Redis stopped, frozen, restarted): every call made on a request path is
bounded by ``CHATSITE_LAYER_TIMEOUT`` (:func:`layer_call`), and the loops here
retry until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from conversations.realtime.replies import registry
from conversations.services import replies as reply_services
from conversations.services import workers as worker_services

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A remote subscriber whose frames could not be sent for this long is dropped
#: (the viewer's process tells its socket how the reply ended, from the database).
REMOTE_GIVE_UP_SECONDS = 60.0


async def layer_call(awaitable: Awaitable[T]) -> T:
    """A channel-layer call on a request path: at most ``CHATSITE_LAYER_TIMEOUT``
    seconds, so a frozen Redis cannot hold up a handshake, a frame or a logout.
    Raises ``TimeoutError`` (or the layer's own error) for the caller to handle."""
    return await asyncio.wait_for(awaitable, settings.CHATSITE_LAYER_TIMEOUT)


class RemoteSubscriber:
    """A subscriber in another process: frames go to its consumer's channel, in order."""

    def __init__(self, channel: str, layer: Any, on_done: Any = None) -> None:
        self.channel = channel
        self._layer = layer
        self._on_done = on_done
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(), name=f"remote-subscriber-{channel}")
        self.reply: Any = None

    def deliver(self, frame: str) -> None:
        self._queue.put_nowait(frame)

    async def _pump(self) -> None:
        try:
            await self._pump_frames()
        finally:
            if self._on_done is not None:
                self._on_done()

    async def _pump_frames(self) -> None:
        while True:
            frame = await self._queue.get()
            if not await self._send(frame):
                if self.reply is not None:
                    self.reply.unsubscribe(self)
                return
            if '"type":"reply_finished"' in frame[:40]:
                return

    async def _send(self, frame: str) -> bool:
        """Send one frame, retrying while the layer is down (frames stay in order);
        False if the viewer is gone or the layer stayed down too long."""
        failing_since: float | None = None
        backoff = 0.1
        while True:
            try:
                await layer_call(self._layer.send(self.channel, {"type": "chat.frame", "text": frame}))
                if failing_since is not None:
                    log.info("sending to %s works again", self.channel)
                return True
            except Exception as exc:
                # The layer is down, or the viewer's channel is full (its process is
                # slow to read, e.g. just after Redis came back): keep the frames, try again.
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    reason = "its channel is full" if isinstance(exc, ChannelFull) else type(exc).__name__
                    log.warning("sending to %s failed (%s); retrying", self.channel, reason)
                elif now - failing_since > REMOTE_GIVE_UP_SECONDS:
                    log.warning("sending to %s failed for %.0fs: dropped", self.channel, now - failing_since)
                    return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def close(self) -> None:
        self._task.cancel()


class WorkerState:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.listener: asyncio.Task | None = None
        self.remote: dict[tuple[str, str], RemoteSubscriber] = {}
        #: Sockets of this process that follow a reply owned by another one.
        self.following_remote: weakref.WeakSet[Any] = weakref.WeakSet()


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WorkerState] = weakref.WeakKeyDictionary()
_starting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future] = weakref.WeakKeyDictionary()


async def ensure_started() -> WorkerState | None:
    """Register this process (once per event loop) and start its loops."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is not None:
        return state
    pending = _starting.get(loop)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future = loop.create_future()
    _starting[loop] = future
    try:
        layer = get_channel_layer()
        state = WorkerState(layer)
        if layer is not None:
            # The default prefix matters: channels-redis serves every process-local
            # ("specific") channel from one shared receive loop keyed by it.
            state.channel = await layer.new_channel()
        await database_sync_to_async(worker_services.worker_heartbeat)(channel=state.channel or "")
        swept = await database_sync_to_async(reply_services.reply_sweep_dead_workers)()
        if swept:
            log.warning("marked %d reply(ies) of dead workers as interrupted", len(swept))
        state.listener = asyncio.create_task(_run(state), name="chatsite-worker")
        from conversations.realtime.shutdown import install_sigterm_handler

        install_sigterm_handler()
        _states[loop] = state
        future.set_result(state)
        return state
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # mark retrieved
        raise
    finally:
        _starting.pop(loop, None)


def start_with_server() -> None:
    """Start this process's worker as soon as the server's event loop runs.

    daphne (4.2) does not speak the ASGI lifespan protocol, so there is no
    start-up event to wait for; but its event loop exists (``daphne.server``
    creates it on import, before the application is loaded) and has not started
    yet. The start is queued on it, so it runs first thing, before any request:
    under ``manage.py serve``, a bare ``daphne`` and the systemd unit alike.
    Other servers get it from the lifespan ``startup`` event, and anything else
    (the tests' ASGI communicators) from the first connection
    (:class:`chatsite.asgi.Application`).
    """
    if "daphne.server" not in sys.modules:
        return
    # The loop of the reactor daphne installed (``daphne.server.twisted_loop``,
    # unless an asyncio reactor was there before it).
    loop = getattr(sys.modules.get("twisted.internet.reactor"), "_asyncioEventloop", None)
    if not isinstance(loop, asyncio.AbstractEventLoop) or loop.is_running() or loop.is_closed():
        return

    def start() -> None:
        task = loop.create_task(_start_retrying(), name="chatsite-worker-start")
        _background.add(task)  # a reference, so that it is not collected while it runs
        task.add_done_callback(_background.discard)

    loop.call_soon(start)


_background: set[asyncio.Task] = set()


async def _start_retrying() -> None:
    """:func:`ensure_started`, again and again while the database is unreachable."""
    delay = 0.5
    while True:
        try:
            await ensure_started()
            return
        except Exception as exc:
            log.warning("starting the worker failed (%s); retrying in %.1fs", type(exc).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, settings.CHATSITE_WORKER_HEARTBEAT)


def current() -> WorkerState | None:
    try:
        return _states.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


async def _run(state: WorkerState) -> None:
    tasks = [asyncio.create_task(_heartbeat_loop(state), name="chatsite-heartbeat")]
    if state.layer is not None:
        tasks.append(asyncio.create_task(_listen(state), name="chatsite-listen"))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _heartbeat_loop(state: WorkerState) -> None:
    interval = settings.CHATSITE_WORKER_HEARTBEAT
    while True:
        await asyncio.sleep(interval)
        try:
            await database_sync_to_async(worker_services.worker_heartbeat)(channel=state.channel or "")
            swept = await database_sync_to_async(reply_services.reply_sweep_dead_workers)()
            if swept:
                log.warning("marked %d reply(ies) of dead workers as interrupted", len(swept))
            await _tell_followers_of_ended_replies(state)
        except Exception as exc:  # a locked or unreachable database: next time
            log.warning("heartbeat failed (%s)", type(exc).__name__)


def follow_remote(subscriber: Any, reply_id: str, owner: str) -> None:
    """``subscriber`` (a socket here) follows ``reply_id``, which ``owner`` runs."""
    subscriber.following_remote[reply_id] = owner
    state = current()
    if state is not None:
        state.following_remote.add(subscriber)


async def _tell_followers_of_ended_replies(state: WorkerState) -> None:
    """Tell sockets here that follow a reply of another process that it ended,
    when that process cannot say so itself: it died (and the reply was swept, by
    this process or any other), or its frames stopped coming (the layer was down
    too long). Never per token: one query per heartbeat, and only while some
    socket here follows a remote reply."""
    followers = [s for s in list(state.following_remote) if s.following_remote]
    if not followers:
        return
    from conversations.realtime.commands import finished_frame

    followed = {reply_id for s in followers for reply_id in s.following_remote}
    ended = await database_sync_to_async(reply_services.reply_ended_unannounced)(reply_ids=followed)
    for message in ended:
        frame = finished_frame(message)
        for subscriber in followers:
            if subscriber.following_remote.pop(str(message.pk), None) is not None:
                subscriber.deliver(frame)


async def _listen(state: WorkerState) -> None:
    """Commands from other processes about replies this process owns."""
    backoff = 0.1
    while True:
        try:
            message = await state.layer.receive(state.channel)
            backoff = 0.1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the layer (Redis) went away: keep trying, it may come back
            log.warning("channel layer receive failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            continue
        try:
            await _handle(state, message)
        except Exception:
            log.exception("handling a worker command failed")


async def _handle(state: WorkerState, message: dict) -> None:
    kind = message.get("type")
    log.debug("worker command %s for reply %s", kind, message.get("reply"))
    reply_id = str(message.get("reply", ""))
    user_id = message.get("user")
    reply = registry.get(reply_id)
    if reply is not None and reply.user_id != user_id:
        return  # never act on another user's reply, whatever the sender claims
    if kind == "reply.stop":
        if reply is not None:
            reply.request_cancel("stop")
    elif kind == "reply.subscribe":
        channel = message["channel"]
        if reply is not None and not reply.finished:
            key = (reply_id, channel)
            subscriber = state.remote.get(key)
            if subscriber is None:
                subscriber = RemoteSubscriber(
                    channel, state.layer, on_done=lambda: state.remote.pop(key, None)
                )
                subscriber.reply = reply
                state.remote[key] = subscriber
            reply.subscribe(subscriber, int(message.get("after_seq", 0)))
        else:
            # Finished between the lookup and now: send its final state from the database.
            from conversations.realtime.commands import finished_frame_for

            frame = await finished_frame_for(reply_id)
            if frame is not None:
                await layer_call(state.layer.send(channel, {"type": "chat.frame", "text": frame}))
    elif kind == "reply.unsubscribe":
        subscriber = state.remote.pop((reply_id, message.get("channel", "")), None)
        if subscriber is not None:
            if reply is not None:
                reply.unsubscribe(subscriber)
            subscriber.close()


async def send_command(channel: str, message: dict) -> bool:
    state = current()
    log.debug("routing %s to %s", message.get("type"), channel)
    if state is None or state.layer is None:
        return False
    try:
        await layer_call(state.layer.send(channel, message))
        return True
    except Exception as exc:
        log.warning("routing %s failed (%s)", message.get("type"), type(exc).__name__)
        return False
