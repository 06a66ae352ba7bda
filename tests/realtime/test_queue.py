"""Replies beyond a model's capacity wait their turn, through the real socket
(the fake upstream as a server with a ``CAPACITY`` of 1)."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.providers import get_provider
from conversations.realtime import capacity, titles
from conversations.realtime.registry import registry
from tests.conftest import deltas_text
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

LONG = "openai/fake?fault=drip&rate=50"  # streams until stopped
SHORT = "openai/fake?tokens=4&rate=0"


@pytest.fixture
def one_at_a_time(settings, upstream):
    settings.CHATSITE_PROVIDERS = {"openai": {**settings.CHATSITE_PROVIDERS["openai"], "CAPACITY": 1}}
    settings.CHATSITE_QUEUE_MAX = 16
    settings.CHATSITE_QUEUE_MAX_WAIT = None
    settings.CHATSITE_AUTO_TITLES = False
    return upstream


@sync_to_async
def saved(reply_id: str) -> Message:
    return Message.objects.get(pk=reply_id)


async def send(socket, model: str, conversation: str | None = None, text: str = "hello") -> dict:
    """Send; return the reply's ``reply_started``."""
    await socket.send(
        type="send", client_id=uuid.uuid4().hex, conversation=conversation, text=text, model=model
    )
    return (await socket.recv_until("reply_started"))[-1]


async def test_a_second_users_reply_waits_with_its_place_then_streams_after_the_first_ends(
    connect, alice, bob, one_at_a_time
):
    first, second = await connect(alice), await connect(bob)
    running = await send(first, LONG)
    await first.recv_until("delta")
    waiting = await send(second, SHORT)
    queued = await second.recv()
    assert queued == {"type": "reply_queued", "reply": waiting["reply"], "position": 1, "ahead": 1}
    assert len(one_at_a_time.requests) == 1  # its request has not gone out
    assert capacity.capacity_waiting() == 1
    await first.send(type="stop", reply=running["reply"])
    assert (await first.recv_until("reply_finished"))[-1]["status"] == "stopped"
    frames = await second.recv_until("reply_finished")
    assert frames[0] == {"type": "reply_queued", "reply": waiting["reply"], "position": 0, "ahead": 0}
    assert frames[-1]["status"] == "complete"
    assert deltas_text(frames) == "w0 w1 w2 w3 "
    assert frames[-1]["metrics"]["queued_ms"] > 0
    assert len(one_at_a_time.requests) == 2


async def test_the_places_move_up_as_the_replies_ahead_end(connect, alice, bob, one_at_a_time, settings):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 0
    first, second, third = await connect(alice), await connect(bob), await connect(alice)
    running = await send(first, LONG)
    await send(second, LONG)
    assert (await second.recv())["ahead"] == 1
    last = await send(third, SHORT)
    assert (await third.recv())["position"] == 2
    await first.send(type="stop", reply=running["reply"])
    moved = await third.recv()
    assert (moved["position"], moved["ahead"]) == (1, 1)
    second_running = await second.recv_until("delta")
    await second.send(type="stop", reply=second_running[0]["reply"])
    frames = await third.recv_until("reply_finished")
    assert frames[0]["position"] == 0 and frames[-1]["status"] == "complete"
    assert frames[-1]["reply"] == last["reply"]


async def test_a_subscriber_that_joins_while_the_reply_waits_gets_its_place(
    connect, alice, bob, one_at_a_time
):
    first, second = await connect(alice), await connect(bob)
    running = await send(first, LONG)
    waiting = await send(second, SHORT)
    await second.recv_until("reply_queued")
    other_tab = await connect(bob)
    await other_tab.send(type="subscribe", conversation=waiting["conversation"], after_seq=0)
    started, place = await other_tab.recv(), await other_tab.recv()
    assert started["type"] == "reply_started" and started["reply"] == waiting["reply"]
    assert place == {"type": "reply_queued", "reply": waiting["reply"], "position": 1, "ahead": 1}
    await first.send(type="stop", reply=running["reply"])
    frames = await other_tab.recv_until("reply_finished")
    assert frames[0]["position"] == 0 and deltas_text(frames) == "w0 w1 w2 w3 "


async def test_stop_while_waiting_ends_the_reply_at_once_with_no_text_and_no_request(
    connect, alice, bob, one_at_a_time
):
    first, second = await connect(alice), await connect(bob)
    running = await send(first, LONG)
    waiting = await send(second, SHORT)
    await second.recv_until("reply_queued")
    await second.send(type="stop", reply=waiting["reply"])
    finished = (await second.recv_until("reply_finished"))[-1]
    assert (finished["status"], finished["last_seq"]) == ("stopped", 0)
    message = await saved(waiting["reply"])
    assert (message.status, message.content) == ("stopped", "")
    assert capacity.capacity_waiting() == 0
    assert len(one_at_a_time.requests) == 1
    assert registry.get(running["reply"]) is not None  # the running one goes on
    await first.send(type="stop", reply=running["reply"])
    await first.recv_until("reply_finished")


async def test_a_full_queue_refuses_a_reply_at_once_with_overloaded_and_words(
    connect, alice, bob, one_at_a_time, settings
):
    settings.CHATSITE_QUEUE_MAX = 1
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 0
    first, second, third = await connect(alice), await connect(bob), await connect(alice)
    running = await send(first, LONG)
    await send(second, SHORT)
    await second.recv_until("reply_queued")
    refused = await send(third, SHORT)
    finished = await third.recv()
    assert finished["type"] == "reply_finished" and finished["reply"] == refused["reply"]
    assert (finished["status"], finished["error_kind"]) == ("error", "overloaded")
    assert finished["error"] == "The model is busy right now (1 waiting). Try again in a minute."
    assert (await saved(refused["reply"])).error_kind == "overloaded"
    # The streaming reply was never cut.
    assert registry.get(running["reply"]) is not None
    await first.send(type="stop", reply=running["reply"])
    assert (await first.recv_until("reply_finished"))[-1]["status"] == "stopped"
    assert (await second.recv_until("reply_finished"))[-1]["status"] == "complete"


async def test_the_first_token_timeout_counts_from_the_request_not_the_wait(
    connect, alice, bob, one_at_a_time, settings
):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 0.5
    settings.CHATSITE_TOTAL_TIMEOUT = 0.9
    first, second = await connect(alice), await connect(bob)
    await send(first, "openai/fake?tokens=60&rate=100")  # about 0.6 s
    waiting = await send(second, "openai/fake?tokens=30&rate=50")  # 0.6 s more, after the wait
    await second.recv_until("reply_queued")
    assert (await first.recv_until("reply_finished"))[-1]["status"] == "complete"
    frames = await second.recv_until("reply_finished")
    # Waited about 0.6 s and ran about 0.6 s: neither timer counted the wait.
    assert frames[-1]["status"] == "complete", frames[-1]
    assert frames[-1]["metrics"]["queued_ms"] >= 400
    assert deltas_text(frames) == (await saved(waiting["reply"])).content


async def test_a_title_waits_behind_replies_and_is_the_first_work_shed(
    connect, alice, bob, one_at_a_time, settings
):
    settings.CHATSITE_AUTO_TITLES = True
    settings.CHATSITE_TITLE_MODEL = SHORT
    settings.CHATSITE_TITLE_BUSY_REPLIES = 0
    settings.CHATSITE_QUEUE_MAX = 1
    titled, late = await connect(alice), await connect(bob)
    await send(titled, "openai/fake?tokens=20&rate=50", text="Name a colour")
    await titled.recv_until("delta")
    # Other work takes the model next, before the title can ask for it.
    provider = get_provider("openai")
    assert provider is not None
    other = capacity.slot_request(provider=provider, model="fake", user_id=None)
    await titled.recv_until("reply_finished")
    await other.wait()
    job = await eventually(lambda: next(iter(titles._jobs.values()), None), what="the title work")
    await eventually(lambda: job.ticket is not None and job.ticket.waiting, what="the title to wait")
    # A reply finds the queue full of the title: the title is shed, the reply waits.
    queued = await send(late, SHORT)
    assert (await late.recv())["type"] == "reply_queued"
    await eventually(lambda: not titles._jobs, what="the title to be shed")
    capacity.slot_release(ticket=other)
    frames = await late.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete" and frames[-1]["reply"] == queued["reply"]
    # The title never asked, and its claim was given back (a later exchange asks again).
    assert all(r.body.get("max_tokens") != titles.MAX_TOKENS for r in one_at_a_time.requests)
    conversation = await sync_to_async(Conversation.objects.get)(pk=job.conversation_id)
    assert not conversation.title_generated


@pytest.mark.slow
async def test_on_the_offline_model_a_second_users_reply_waits_in_the_queue_not_on_the_lock(
    connect, alice, bob, settings
):
    pytest.importorskip("llama_cpp")
    settings.CHATSITE_PROVIDERS = {
        "local": {"BACKEND": "conversations.providers.local.LocalProvider", "MODEL_PATH": "bundled"}
    }
    settings.CHATSITE_DEFAULT_MODEL = "local/SmolLM2-135M-Instruct"
    settings.CHATSITE_MAX_TOKENS = 24
    settings.CHATSITE_AUTO_TITLES = False
    settings.CHATSITE_QUEUE_MAX = 16
    local = get_provider("local")
    assert local is not None and local.capacity == 1
    await sync_to_async(local.preload)()
    first, second = await connect(alice), await connect(bob)
    model = "local/SmolLM2-135M-Instruct"
    await send(first, model, text="Write a short poem about the sea.")
    await first.recv_until("delta", timeout=60)
    await send(second, model, text="Name three colours.")
    assert (await second.recv()) | {"reply": ""} == {
        "type": "reply_queued",
        "reply": "",
        "position": 1,
        "ahead": 1,
    }
    ends = [(await s.recv_until("reply_finished", timeout=120))[-1] for s in (first, second)]
    for end in ends:
        assert (end["status"], end["error_kind"]) in {("complete", None), ("error", "length_limit")}
    assert ends[1]["metrics"]["queued_ms"] > 0
