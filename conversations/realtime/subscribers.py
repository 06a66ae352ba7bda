"""Who watches a reply, and the contract a watcher keeps.

A :class:`~conversations.realtime.replies.Reply` knows the ones it streams to
only as :class:`Subscriber`\\s:

* ``deliver(frame)`` takes one encoded server frame. It is called on the
  reply's hot path, once per frame per subscriber, so it queues and returns:
  it never waits on a socket or the channel layer, and never raises.
* ``reply_ended(reply_id)`` says, right after the reply's ``reply_finished`` was
  delivered, that nothing more of that reply follows and the reply let the
  subscriber go. Nobody has to look inside a frame's text to know.
* ``channel_name`` is the channel-layer name at which frames from other
  processes reach it (None when there is no channel layer).

Two kinds keep it: a socket of this process
(:class:`~conversations.realtime.consumers.ChatConsumer`), and a socket of
another process, for which :class:`~conversations.realtime.cluster.RemoteSubscriber`
forwards the frames over the channel layer.

A socket can also follow a reply that another process owns (:class:`Follower`):
the owner's ``RemoteSubscriber`` sends the frames to the socket's
``channel_name``, and the socket keeps, in a :class:`RemoteFollows`, which
process owns each such reply and which ``seq`` it passed on last, so that
frames lost between the processes are asked for again. The commands that
make it follow (:mod:`~conversations.realtime.commands`) call
``follow_remote`` / ``unfollow_remote``; this process's heartbeat
(:mod:`~conversations.realtime.cluster`) asks ``remote_followed`` and tells it,
with ``remote_ended``, of a followed reply whose owner died.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

from conversations.realtime import protocol

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """Anything a reply streams to (see the module's docstring)."""

    @property
    def channel_name(self) -> str | None: ...

    def deliver(self, frame: str) -> None: ...

    def reply_ended(self, reply_id: str) -> None: ...


class Follower(Subscriber, Protocol):
    """A subscriber that can follow a reply another process owns (a socket)."""

    def follow_remote(self, reply_id: str, owner: str) -> None:
        """From now on, frames of ``reply_id`` come from the process at channel ``owner``."""
        ...

    def unfollow_remote(self, reply_id: str) -> None:
        """The owner could not be asked: ``reply_id`` is not followed after all."""
        ...

    def remote_followed(self) -> Collection[str]:
        """The ids of the replies it follows that other processes own."""
        ...

    def remote_ended(self, reply_id: str, frame: str) -> None:
        """``reply_id``'s owner cannot say how it ended (it died): ``frame`` says it,
        from the database. Delivered only if the reply is still followed."""
        ...


@dataclass
class Resync:
    """Frames of ``reply_id`` were lost on the way: ask ``owner`` again from ``after_seq``."""

    reply_id: str
    owner: str | None
    after_seq: int


Verdict = Literal["deliver", "drop"] | Resync


@dataclass
class _Track:
    last: int  # the last seq passed on
    catching_up: bool  # a catch-up delta may come next
    resyncing: bool  # asked again: its deltas are dropped until the answer's reply_started
    #: The kind of the last catch-up frame (a reply that reasons catches up in
    #: one frame per run of a kind, alternating: reasoning_delta, delta, ...).
    caught_up_kind: str | None = None


class RemoteFollows:
    """The replies a socket follows that other processes own, with the owner of each
    (its channel) and how far the socket got.

    The frames come in order, but a Redis that dies loses those it held: a
    delta whose ``seq`` skips one is a gap. The socket then asks the owner
    again from the last ``seq`` it passed on (:class:`Resync`), and drops that
    reply's deltas until the answer's ``reply_started``, whose catch-up delta
    carries the missing text: every piece of text still reaches the client
    exactly once.
    """

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}  # reply id -> owner's channel
        self._tracks: dict[str, _Track] = {}

    def follow(self, reply_id: str, owner: str) -> None:
        self.owners[reply_id] = owner

    def unfollow(self, reply_id: str) -> str | None:
        return self.owners.pop(reply_id, None)

    def clear(self) -> list[tuple[str, str]]:
        """Follow nothing any more; the (reply id, owner) pairs that were followed."""
        followed, self.owners = list(self.owners.items()), {}
        return followed

    def receive(self, text: str) -> Verdict:
        """What to do with a frame that came from another process."""
        position = protocol.delta_position(text)
        if position is not None:
            reply_id, seq = position
            track = self._tracks.get(reply_id)
            if track is not None:
                if track.resyncing or seq <= track.last:
                    return "drop"  # the catch-up after the next reply_started carries it / a repeat
                kind = protocol.frame_type(text) if track.catching_up else None
                if kind is not None and kind == track.caught_up_kind:
                    track.catching_up = False  # catch-up frames alternate kinds: this one is live
                if seq > track.last + 1 and not track.catching_up:
                    track.resyncing = True
                    log.warning("frames of reply %s were lost on the way; asking its owner again", reply_id)
                    return Resync(reply_id, self.owners.get(reply_id), track.last)
                track.last, track.caught_up_kind = seq, kind
        elif protocol.frame_type(text) == "reply_started":
            frame = json.loads(text)
            track = self._tracks.get(frame["reply"])
            resynced = track is not None and track.resyncing and frame["after_seq"] == track.last
            self._tracks[frame["reply"]] = _Track(frame["after_seq"], True, False)
            if resynced:
                return "drop"  # the client has all up to after_seq already: it needs no new start
        elif protocol.frame_type(text) == "reply_finished":
            reply_id = json.loads(text).get("reply")
            self._tracks.pop(reply_id, None)
            if self.owners.pop(reply_id, None) is None:
                return "drop"  # already told how it ended (its process died, or it came late)
        return "deliver"
