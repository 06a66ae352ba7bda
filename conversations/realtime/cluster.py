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
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from conversations.realtime.registry import registry
from conversations.realtime.replies import Reply, finished_frame, finished_frame_for
from conversations.realtime.shutdown import install_sigterm_handler
from conversations.realtime.subscribers import Follower
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
    """A subscriber in another process: the frames of ``reply`` go to its
    consumer's channel, in order, until the reply says it ended."""

    def __init__(
        self, channel: str, layer: Any, reply: Reply, on_done: Callable[[], object] | None = None
    ) -> None:
        self.channel = channel
        self.reply = reply
        self._layer = layer
        self._on_done = on_done
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()  # None: the reply ended
        self.task = asyncio.create_task(self._pump(), name=f"remote-subscriber-{channel}")

    @property
    def channel_name(self) -> str:
        return self.channel

    def deliver(self, frame: str) -> None:
        self._queue.put_nowait(frame)

    def reply_ended(self, reply_id: str) -> None:
        self._queue.put_nowait(None)  # after its last frame: sent, then this one is done

    async def _pump(self) -> None:
        try:
            await self._pump_frames()
        finally:
            if self._on_done is not None:
                self._on_done()

    async def _pump_frames(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame is None:
                return
            if not await self._send(frame):
                self.reply.unsubscribe(self)
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
        self.task.cancel()


class WorkerState:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.listener: asyncio.Task[None] | None = None
        #: (reply id, viewer's channel) -> who forwards that reply's frames there.
        self.remote: dict[tuple[str, str], RemoteSubscriber] = {}
        #: Sockets of this process that follow a reply owned by another one.
        self.following_remote: weakref.WeakSet[Follower] = weakref.WeakSet()

    async def remote_drain(self) -> None:
        """Wait until every viewer in another process was sent its replies' last
        frames (at shutdown, once every reply here has ended)."""
        tasks = {subscriber.task for subscriber in self.remote.values()}
        if tasks:
            await asyncio.wait(tasks)


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WorkerState] = weakref.WeakKeyDictionary()
_starting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[WorkerState]] = (
    weakref.WeakKeyDictionary()
)


async def ensure_started() -> WorkerState | None:
    """Register this process (once per event loop), start its loops, and
    install its SIGTERM handling (:mod:`~conversations.realtime.shutdown`)."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is not None:
        return state
    pending = _starting.get(loop)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[WorkerState] = loop.create_future()
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
        install_sigterm_handler(drain=state.remote_drain)
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


_background: set[asyncio.Task[None]] = set()


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


def follow_remote(follower: Follower, *, reply_id: str, owner: str) -> None:
    """``follower`` (a socket here) follows ``reply_id``, which ``owner`` runs;
    the heartbeat tells it if that process dies before saying how it ended."""
    follower.follow_remote(reply_id, owner)
    state = current()
    if state is not None:
        state.following_remote.add(follower)


async def _tell_followers_of_ended_replies(state: WorkerState) -> None:
    """Tell sockets here that follow a reply of another process that it ended,
    when that process cannot say so itself: it died (and the reply was swept, by
    this process or any other), or its frames stopped coming (the layer was down
    too long). Never per token: one query per heartbeat, and only while some
    socket here follows a remote reply."""
    followers = [s for s in list(state.following_remote) if s.remote_followed()]
    if not followers:
        return
    followed = {reply_id for s in followers for reply_id in s.remote_followed()}
    ended = await database_sync_to_async(reply_services.reply_ended_unannounced)(reply_ids=followed)
    for message in ended:
        frame = finished_frame(message)
        for follower in followers:
            follower.remote_ended(str(message.pk), frame)


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


async def _handle(state: WorkerState, message: dict[str, Any]) -> None:
    """One command from another process. Each acts only for the user the reply
    belongs to, whatever the sender claims."""
    kind = message.get("type")
    log.debug("worker command %s for reply %s", kind, message.get("reply"))
    reply_id = str(message.get("reply", ""))
    user_id = message.get("user")
    try:
        uuid.UUID(reply_id)
    except ValueError:
        log.warning("worker command %s without a valid reply id: ignored", kind)
        return
    if not isinstance(user_id, int):
        log.warning("worker command %s without a user: ignored", kind)
        return
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
                    channel, state.layer, reply, on_done=lambda: state.remote.pop(key, None)
                )
                state.remote[key] = subscriber
            reply.subscribe(subscriber, int(message.get("after_seq", 0)))
        else:
            # Finished between the lookup and now: send its final state from the
            # database (the user's own reply only, as above).
            frame = await finished_frame_for(user_id=user_id, reply_id=reply_id)
            if frame is not None:
                await layer_call(state.layer.send(channel, {"type": "chat.frame", "text": frame}))
    elif kind == "reply.unsubscribe":
        key = (reply_id, message.get("channel", ""))
        subscriber = state.remote.get(key)
        if subscriber is None or subscriber.reply.user_id != user_id:
            return
        del state.remote[key]
        subscriber.reply.unsubscribe(subscriber)
        subscriber.close()


# Frames for every socket of one user, in every process: each socket joins its
# user's group when it opens (``ChatConsumer.connect``).


def user_group(user_id: int) -> str:
    """The channel-layer group of every socket of one user."""
    return f"chatsite-user.{user_id}"


async def user_frame_send(*, user_id: int, frame: str) -> bool:
    """Send a server frame to every socket of the user, here and in every other
    process (the consumer's ``user_frame``). False if the channel layer could
    not take it (it is down, or there is none)."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        await layer_call(layer.group_send(user_group(user_id), {"type": "user.frame", "text": frame}))
        return True
    except Exception as exc:
        log.warning("sending a frame to a user's sockets failed (%s)", type(exc).__name__)
        return False


# The commands one process sends another about a reply the other owns: built
# by these three and read by ``_handle``, nowhere else.


async def reply_stop_remote(*, owner: str, reply_id: str, user_id: int) -> bool:
    """Ask the process at channel ``owner`` to stop the user's reply."""
    return await _send_command(owner, {"type": "reply.stop", "reply": reply_id, "user": user_id})


async def reply_subscribe_remote(
    *, owner: str, reply_id: str, user_id: int, channel: str, after_seq: int
) -> bool:
    """Ask the process at channel ``owner`` to stream the user's reply to the
    socket at ``channel``, which has its deltas up to ``after_seq``."""
    return await _send_command(
        owner,
        {
            "type": "reply.subscribe",
            "reply": reply_id,
            "user": user_id,
            "channel": channel,
            "after_seq": after_seq,
        },
    )


async def reply_unsubscribe_remote(*, owner: str, reply_id: str, user_id: int, channel: str) -> bool:
    """Tell the process at channel ``owner`` that the socket at ``channel`` is gone."""
    return await _send_command(
        owner, {"type": "reply.unsubscribe", "reply": reply_id, "user": user_id, "channel": channel}
    )


async def _send_command(channel: str, message: dict[str, Any]) -> bool:
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
