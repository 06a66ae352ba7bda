"""The queue for a model's capacity: order, places, shedding, release."""

from __future__ import annotations

import asyncio

import pytest

from conversations.exceptions import Overloaded
from conversations.providers.base import BaseProvider
from conversations.providers.local import LocalProvider
from conversations.realtime import capacity
from conversations.realtime.capacity import BACKGROUND, REPLY, STAFF, slot_release, slot_request


@pytest.fixture(autouse=True)
def lanes(settings):
    settings.CHATSITE_QUEUE_MAX = 16
    settings.CHATSITE_QUEUE_MAX_WAIT = None
    capacity.capacity_reset()
    yield
    capacity.capacity_reset()


def server(slots: int = 1, name: str = "remote") -> BaseProvider:
    return BaseProvider(name, {"CAPACITY": slots})


class Places:
    """What each ticket was told, in order."""

    def __init__(self) -> None:
        self.told: dict[str, list[tuple[int, int]]] = {}

    def of(self, name: str):
        self.told[name] = []
        return lambda position, ahead: self.told[name].append((position, ahead))


def take(provider, user, rank=REPLY, places: Places | None = None, name: str = "", model: str = "m"):
    on_place = places.of(name) if places is not None else None
    return slot_request(provider=provider, model=model, user_id=user, rank=rank, on_place=on_place)


async def granted(ticket) -> bool:
    """Whether the ticket runs, once the loop has had its turn."""
    await asyncio.sleep(0)
    return ticket.running


async def test_unlimited_capacity_runs_everything_at_once_and_queues_nothing():
    provider = BaseProvider("open", {})
    tickets = [take(provider, user) for user in range(50)]
    assert all(t.running for t in tickets)
    assert capacity.capacity_waiting() == 0
    for ticket in tickets:
        slot_release(ticket=ticket)  # a no-op


async def test_work_beyond_capacity_waits_and_is_served_first_come_first_served():
    provider = server(2)
    places = Places()
    first, second = take(provider, 1), take(provider, 2)
    third = take(provider, 3, places=places, name="third")
    fourth = take(provider, 4, places=places, name="fourth")
    assert first.running and second.running and not third.running and not fourth.running
    assert capacity.capacity_waiting() == 2
    # The place is the queue's (from 1); ahead counts the running work too.
    assert places.told == {"third": [(1, 2)], "fourth": [(2, 3)]}
    slot_release(ticket=second)
    await third.wait()
    assert third.running and not fourth.running
    assert places.told == {"third": [(1, 2), (0, 0)], "fourth": [(2, 3), (1, 2)]}
    slot_release(ticket=first)
    await fourth.wait()
    assert fourth.queued_ms is not None and fourth.queued_ms >= 0
    assert capacity.capacity_waiting() == 0


async def test_a_place_is_told_only_when_it_changes():
    provider = server(1)
    places = Places()
    running = take(provider, 1)
    take(provider, 2, places=places, name="a")
    take(provider, 3)  # joins behind: a's place does not change
    take(provider, 4)
    assert places.told["a"] == [(1, 1)]
    slot_release(ticket=running)
    assert places.told["a"] == [(1, 1), (0, 0)]


async def test_replies_are_served_before_background_work_that_came_first():
    provider = server(1)
    running = take(provider, 1)
    title = take(provider, 1, rank=BACKGROUND)
    reply = take(provider, 2)
    slot_release(ticket=running)
    assert await granted(reply) and not title.running
    slot_release(ticket=reply)
    assert await granted(title)


async def test_capacity_is_per_loaded_model_for_the_offline_model_and_per_server_otherwise():
    local = LocalProvider("local", {"MODEL_PATH": "/nonexistent.gguf"})
    assert local.capacity == 1
    assert take(local, 1, model="a").running
    assert take(local, 2, model="b").running  # another model: its own slot
    assert not take(local, 3, model="a").running
    remote = server(1)
    assert take(remote, 1, model="a").running
    assert not take(remote, 2, model="b").running  # one server, whatever the model


async def test_stop_while_waiting_leaves_the_queue_and_moves_the_others_up():
    provider = server(1)
    places = Places()
    running = take(provider, 1)
    leaving = take(provider, 2)
    staying = take(provider, 3, places=places, name="staying")
    waiter = asyncio.ensure_future(leaving.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert leaving.released and leaving not in running.lane.waiting
    assert places.told["staying"] == [(2, 2), (1, 1)]
    slot_release(ticket=running)
    assert await granted(staying)


@pytest.mark.parametrize("ending", ["complete", "error", "stop"])
async def test_a_slot_is_released_on_every_ending_and_the_next_one_goes(ending):
    provider = server(1)
    running = take(provider, 1)
    waiting = take(provider, 2)

    async def work() -> None:
        await running.wait()
        try:
            if ending == "error":
                raise RuntimeError("upstream broke")
            if ending == "stop":
                await asyncio.Event().wait()
        finally:
            slot_release(ticket=running)

    task = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    if ending == "stop":
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await granted(waiting)
    slot_release(ticket=running)  # again: nothing happens
    assert waiting.lane is not None and waiting.lane.running == [waiting]


async def test_a_full_queue_of_equals_refuses_the_newcomer_at_once(settings):
    settings.CHATSITE_QUEUE_MAX = 2
    provider = server(1)
    take(provider, 1)
    queued = [take(provider, 2), take(provider, 3)]
    with pytest.raises(Overloaded) as refused:
        take(provider, 4)
    assert refused.value.waiting == 2
    assert all(t.waiting for t in queued)


async def test_a_full_queue_sheds_background_work_first(settings):
    settings.CHATSITE_QUEUE_MAX = 2
    provider = server(1)
    take(provider, 1)
    title = take(provider, 2, rank=BACKGROUND)
    reply = take(provider, 3)
    newcomer = take(provider, 4)
    with pytest.raises(Overloaded):
        await title.wait()
    assert reply.waiting and newcomer.waiting and title.released


async def test_a_full_queue_sheds_the_reply_of_a_user_over_their_fair_share_before_others(settings):
    settings.CHATSITE_QUEUE_MAX = 3
    provider = server(1)
    take(provider, 1)  # user 1 runs one
    greedy_first = take(provider, 1)
    greedy_second = take(provider, 1)
    other = take(provider, 2)
    newcomer = take(provider, 3)  # the queue is full: user 1 has three of five
    with pytest.raises(Overloaded):
        await greedy_second.wait()  # the user's newest waiting one
    assert greedy_first.waiting and other.waiting and newcomer.waiting


async def test_staff_are_shed_last(settings):
    settings.CHATSITE_QUEUE_MAX = 2
    provider = server(1)
    take(provider, 1)
    staff_first = take(provider, 9, rank=STAFF)
    staff_second = take(provider, 8, rank=STAFF)
    with pytest.raises(Overloaded):
        take(provider, 2)  # not staff: refused at once, the staff's stay
    assert staff_first.waiting and staff_second.waiting


async def test_a_staff_reply_finding_the_queue_full_sheds_an_ordinary_one(settings):
    settings.CHATSITE_QUEUE_MAX = 1
    provider = server(1)
    take(provider, 1)
    ordinary = take(provider, 2)
    staff = take(provider, 9, rank=STAFF)
    with pytest.raises(Overloaded):
        await ordinary.wait()
    assert staff.waiting


async def test_no_queue_refuses_anything_beyond_capacity(settings):
    settings.CHATSITE_QUEUE_MAX = 0
    provider = server(1)
    take(provider, 1)
    with pytest.raises(Overloaded):
        take(provider, 2, rank=STAFF)


async def test_a_reply_that_waits_too_long_is_shed_and_the_running_one_is_not(settings):
    settings.CHATSITE_QUEUE_MAX_WAIT = 0.05
    provider = server(1)
    running = take(provider, 1)
    waiting = take(provider, 2)
    with pytest.raises(Overloaded):
        await asyncio.wait_for(waiting.wait(), 5)
    assert running.running and capacity.capacity_waiting() == 0


async def test_capacity_waiting_counts_every_lane():
    take(server(1, "a"), 1)
    take(server(1, "a"), 2)
    take(server(1, "b"), 1)
    take(server(1, "b"), 2)
    take(server(1, "b"), 3)
    assert capacity.capacity_waiting() == 3
