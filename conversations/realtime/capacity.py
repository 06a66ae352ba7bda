"""How many generations run at once per model server, and who waits for one.

A backend can run only so many generations at a time: the offline model one
per loaded model (llama.cpp holds a lock around each), a remote provider the
``CAPACITY`` its operator set (0: unlimited, the default, and then none of
this costs anything). Work beyond that waits here, in a :class:`Lane` per
provider (per provider and model for the offline model), instead of silently
on the backend's lock, where a first-token timeout could fire: each waiter
holds a :class:`Ticket`, is told its place when it changes, and can leave
(Stop) at any time. A slot is released when the work ends, however it ends,
and the next waiter goes.

Order: replies before background work (titles), first come first served
within each. When a lane's queue is full (``CHATSITE_QUEUE_MAX``) or a waiter
has waited ``CHATSITE_QUEUE_MAX_WAIT``, work is shed, the lowest rank first:
background work, then replies of users over their fair share (more tickets in
the lane than the lane's per-user average), then other replies, staff last;
within a rank the latest arrival goes first (a newcomer to a full queue of
equals is refused at once). Only waiting work is ever shed: a running
generation is never cut, so no text a user has seen is lost. Shed work ends
with :class:`~conversations.exceptions.Overloaded`.

Everything here runs on the event loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from conversations.exceptions import Overloaded
from conversations.providers import BaseProvider

log = logging.getLogger(__name__)

#: Ranks: background work is served last and shed first; staff are shed last.
BACKGROUND = 0
REPLY = 1
STAFF = 2

#: ``on_place(position, ahead)``: position in the queue from 1 (0: it runs
#: now), ahead: the running and waiting work before it.
PlaceCallback = Callable[[int, int], None]

_arrivals = itertools.count()


@dataclass(eq=False)
class Ticket:
    """One piece of work's claim on a slot of a :class:`Lane`."""

    lane: Lane | None
    user_id: int | None
    rank: int
    on_place: PlaceCallback | None = None
    arrival: int = field(default_factory=lambda: next(_arrivals))
    enqueued_at: float = field(default_factory=time.monotonic)
    #: Set once the slot is granted (or the ticket was shed: see ``shed``).
    granted: asyncio.Future[None] | None = None
    running: bool = False
    released: bool = False
    position: int = 0
    #: How long it waited for its slot, in ms (None: it never waited).
    queued_ms: float | None = None

    async def wait(self) -> None:
        """Until the slot is granted. Raises :class:`Overloaded` if the ticket
        was shed; a cancel (Stop) leaves the queue."""
        if self.running or self.granted is None:
            return
        try:
            await asyncio.shield(self.granted)
        except asyncio.CancelledError:
            slot_release(ticket=self)
            raise

    @property
    def waiting(self) -> bool:
        return not self.running and not self.released


#: The ticket of work on a lane with no limit: nothing to wait for or release.
UNLIMITED = Ticket(lane=None, user_id=None, rank=REPLY, running=True)


class Lane:
    """The slots of one model server and the work waiting for them."""

    def __init__(self, *, key: str, capacity: int) -> None:
        self.key = key
        self.capacity = capacity
        self.running: list[Ticket] = []
        self.waiting: list[Ticket] = []  # in serving order
        self._max_wait_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Lane {self.key} {len(self.running)}/{self.capacity} running, {len(self.waiting)} waiting>"

    # --- order -------------------------------------------------------------
    def _insert(self, ticket: Ticket) -> None:
        """Replies before background work; FIFO within each."""
        at = len(self.waiting)
        if ticket.rank != BACKGROUND:
            for index, other in enumerate(self.waiting):
                if other.rank == BACKGROUND:
                    at = index
                    break
        self.waiting.insert(at, ticket)

    def _shed_order(self, ticket: Ticket, counts: Counter[int | None], fair: float) -> tuple[int, int, int]:
        """Smaller goes first when work must be shed."""
        if ticket.rank == BACKGROUND:
            tier = 0
        elif ticket.rank == REPLY:
            tier = 1 if counts[ticket.user_id] > fair else 2
        else:
            tier = 3
        return tier, -counts[ticket.user_id], -ticket.arrival

    def victim(self, newcomer: Ticket | None = None) -> Ticket:
        """The waiting work (or ``newcomer``) to shed first."""
        candidates = self.waiting + ([newcomer] if newcomer is not None else [])
        everyone = self.running + candidates
        counts = Counter(t.user_id for t in everyone)
        fair = len(everyone) / max(1, len(counts))
        return min(candidates, key=lambda t: self._shed_order(t, counts, fair))

    # --- moves -------------------------------------------------------------
    def admit(self, ticket: Ticket) -> None:
        if len(self.running) < self.capacity and not self.waiting:
            self._run(ticket)
            return
        limit = settings.CHATSITE_QUEUE_MAX
        if limit is not None and len(self.waiting) >= limit:
            victim = self.victim(ticket) if limit > 0 else ticket
            if victim is ticket:
                log.info("%r: refused new work (queue full)", self)
                raise Overloaded(waiting=len(self.waiting))
            self._shed(victim, why="queue full")
        ticket.granted = asyncio.get_running_loop().create_future()
        self._insert(ticket)
        self._tell_places()
        self._arm_max_wait()

    def _run(self, ticket: Ticket) -> None:
        ticket.running = True
        ticket.position = 0
        if ticket.granted is not None:
            ticket.queued_ms = (time.monotonic() - ticket.enqueued_at) * 1000
            if not ticket.granted.done():
                ticket.granted.set_result(None)
        self.running.append(ticket)

    def _shed(self, ticket: Ticket, *, why: str) -> None:
        log.info("%r: shed waiting work of user %s (%s)", self, ticket.user_id, why)
        waiting = len(self.waiting)
        self.waiting.remove(ticket)
        ticket.released = True
        if ticket.granted is not None and not ticket.granted.done():
            ticket.granted.set_exception(Overloaded(waiting=waiting))
            # Retrieved by its wait(), unless the work ended first (a Stop): no
            # "exception never retrieved" in the log then.
            ticket.granted.exception()

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        if ticket.running:
            self.running.remove(ticket)
            ticket.running = False
        elif ticket in self.waiting:
            self.waiting.remove(ticket)
        self._serve()

    def _serve(self) -> None:
        while self.waiting and len(self.running) < self.capacity:
            self._run(self.waiting.pop(0))
        self._tell_places()
        if not self.waiting and self._max_wait_timer is not None:
            self._max_wait_timer.cancel()
            self._max_wait_timer = None

    def _tell_places(self) -> None:
        """Tell each waiter its place when it changed (and a newly running one 0)."""
        ahead_base = len(self.running)
        for index, ticket in enumerate(self.waiting):
            position = index + 1
            if ticket.position != position:
                ticket.position = position
                if ticket.on_place is not None:
                    ticket.on_place(position, ahead_base + index)
        for ticket in self.running:
            if ticket.granted is not None and ticket.on_place is not None and ticket.queued_ms is not None:
                callback, ticket.on_place = ticket.on_place, None  # told once
                callback(0, 0)

    # --- the longest wait --------------------------------------------------
    def _arm_max_wait(self) -> None:
        max_wait = settings.CHATSITE_QUEUE_MAX_WAIT
        if not max_wait or self._max_wait_timer is not None or not self.waiting:
            return
        oldest = min(t.enqueued_at for t in self.waiting)
        loop = asyncio.get_running_loop()
        self._max_wait_timer = loop.call_at(oldest + max_wait, self._shed_overdue)

    def _shed_overdue(self) -> None:
        self._max_wait_timer = None
        max_wait = settings.CHATSITE_QUEUE_MAX_WAIT
        if not max_wait:
            return
        now = time.monotonic()
        overdue = [t for t in self.waiting if now - t.enqueued_at >= max_wait]
        while overdue:
            victim = min(overdue, key=lambda t: self._shed_order(t, *self._counts()))
            overdue.remove(victim)
            self._shed(victim, why=f"waited {max_wait:g}s")
        self._tell_places()
        self._arm_max_wait()

    def _counts(self) -> tuple[Counter[int | None], float]:
        everyone = self.running + self.waiting
        counts = Counter(t.user_id for t in everyone)
        return counts, len(everyone) / max(1, len(counts))


#: This process's lanes, by key.
_lanes: dict[str, Lane] = {}


def lane_for(*, provider: BaseProvider, model: str) -> Lane | None:
    """The lane of ``provider``'s ``model`` (None: its capacity is unlimited)."""
    capacity = provider.capacity
    if capacity <= 0:
        return None
    key = provider.capacity_key(model=model)
    lane = _lanes.get(key)
    if lane is None:
        lane = _lanes[key] = Lane(key=key, capacity=capacity)
    else:
        lane.capacity = capacity
    return lane


def slot_request(
    *,
    provider: BaseProvider,
    model: str,
    user_id: int | None,
    rank: int = REPLY,
    on_place: PlaceCallback | None = None,
) -> Ticket:
    """A slot for one generation on ``provider``'s ``model``: running at once
    when one is free (``ticket.running``), else waiting (``await ticket.wait()``).

    Raises :class:`Overloaded` when the queue is full of work that ranks higher.
    ``on_place`` is told the ticket's place when it changes, and 0 once it runs.
    """
    lane = lane_for(provider=provider, model=model)
    if lane is None:
        return UNLIMITED
    ticket = Ticket(lane=lane, user_id=user_id, rank=rank, on_place=on_place)
    lane.admit(ticket)
    return ticket


def slot_release(*, ticket: Ticket) -> None:
    """The work of ``ticket`` ended (or left the queue): the next one goes. Idempotent."""
    if ticket.lane is not None:
        ticket.lane.release(ticket)


def capacity_waiting() -> int:
    """How much work waits for a slot in this process now (for the metrics)."""
    return sum(len(lane.waiting) for lane in _lanes.values())


def capacity_reset() -> None:
    """Forget every lane (tests)."""
    _lanes.clear()
