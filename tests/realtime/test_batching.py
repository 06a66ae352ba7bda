"""Group commit of reply starts: the Batcher, and the service that stores a batch."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from conversations import metrics
from conversations.exceptions import NotFound, ReplyRunning, TooManyMessages, TooManyReplies
from conversations.models import Conversation, Message
from conversations.realtime import commands
from conversations.realtime.batching import Batcher
from conversations.realtime.registry import registry
from conversations.services import exchanges as exchange_services
from conversations.services import replies as reply_services
from tests.conftest import deltas_text
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("clean_loop_state")


# --- the Batcher ---------------------------------------------------------------


class Recorder:
    """A store function that records its batches and can be held on the database thread."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(5)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_items_arriving_during_a_batch_go_together_in_the_next(transactional_db):
    store = Recorder()
    store.release.clear()
    batcher = Batcher(store)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, 5)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 4, 6)]
    await eventually(lambda: len(batcher._queue) == 3, what="the three items to queue behind the batch")
    store.release.set()
    assert await first == 0
    assert [await f for f in later] == [20, 40, 60]
    assert store.batches == [[0], [2, 4, 6]]
    assert batcher.batches == 2


async def test_a_refusal_reaches_only_its_own_caller(transactional_db):
    store = Recorder()
    store.release.clear()
    batcher = Batcher(store)
    head = asyncio.ensure_future(batcher.submit(0))
    await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, 5)
    odd = asyncio.ensure_future(batcher.submit(3))
    even = asyncio.ensure_future(batcher.submit(4))
    store.release.set()
    await head
    with pytest.raises(ValueError, match="odd 3"):
        await odd
    assert await even == 40
    assert store.batches == [[0], [3, 4]]


async def test_a_failing_store_fails_every_caller_of_that_batch_only(transactional_db):
    calls: list[list[str]] = []

    def store(items: list[str]) -> list[str]:
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("database gone")
        return [i.upper() for i in items]

    batcher: Batcher[str, str] = Batcher(store)
    results = await asyncio.gather(
        batcher.submit("boom"), batcher.submit("a"), batcher.submit("b"), return_exceptions=True
    )
    # All three arrived before the first trip, so they shared it, and its failure.
    assert calls == [["boom", "a", "b"]]
    assert all(isinstance(r, RuntimeError) for r in results)
    # The batcher goes on with the next batch.
    assert await batcher.submit("c") == "C"


async def test_max_batch_splits_a_crowd(transactional_db):
    seen: list[int] = []

    def store(items: list[int]) -> list[int]:
        seen.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(store, max_batch=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == list(range(7))
    assert seen == [3, 3, 1]


# --- exchange_start_many ---------------------------------------------------------


def _request(user, text="hello there", client_id=None, conversation_id=None, edit_of=None):
    return exchange_services.ExchangeRequest(
        user=user,
        conversation_id=conversation_id,
        client_id=client_id or uuid.uuid4().hex,
        text=text,
        model="openai/fake",
        provider="openai",
        edit_of=edit_of,
    )


def _inserts(queries) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in queries:
        sql = q["sql"].lstrip().upper()
        if sql.startswith("INSERT INTO"):
            table = sql.split()[2].strip('"')
            counts[table] = counts.get(table, 0) + 1
    return counts


def test_new_conversations_of_a_batch_are_stored_with_one_insert_per_table(alice, bob):
    requests = [_request(alice if i % 2 else bob, text=f"question {i}") for i in range(6)]
    with CaptureQueriesContext(connection) as ctx:
        results = exchange_services.exchange_start_many(requests=requests)
    assert _inserts(ctx.captured_queries) == {
        "CONVERSATIONS_CONVERSATION": 1,
        "CONVERSATIONS_MESSAGE": 1,
    }
    assert len(ctx.captured_queries) <= 8, [q["sql"][:80] for q in ctx.captured_queries]
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, exchange_services.StartedExchange) and result.created
        conversation = Conversation.objects.get(pk=result.conversation.pk)
        assert conversation.user == request.user
        assert conversation.client_id == request.client_id
        assert conversation.title == request.text
        assert conversation.active_leaf_id == result.reply.pk
        reply, user_message = conversation.messages.order_by("role")
        assert (reply.role, reply.status, reply.parent_id) == ("assistant", "streaming", user_message.pk)
        assert (user_message.role, user_message.content) == ("user", request.text)
        assert user_message.pk == result.user_message.pk
        assert [(m.role, m.content) for m in result.prompt] == [("user", request.text)]
    assert Conversation.objects.count() == 6 and Message.objects.count() == 12


def test_a_retried_send_in_a_batch_returns_what_was_stored(alice):
    first = exchange_services.exchange_start_many(requests=[_request(alice, client_id="c-1")])[0]
    twice = [
        _request(alice, client_id="c-1"),
        _request(alice, client_id="c-2"),
        _request(alice, client_id="c-2"),
    ]
    again, new, repeat = exchange_services.exchange_start_many(requests=twice)
    assert isinstance(first, exchange_services.StartedExchange) and first.created
    assert again.created is False and again.reply.pk == first.reply.pk
    assert new.created is True
    assert repeat.created is False and repeat.reply.pk == new.reply.pk
    assert Conversation.objects.filter(user=alice).count() == 2
    assert Message.objects.count() == 4


def test_limits_count_the_sends_of_the_same_batch(alice, bob, settings):
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 2
    requests = [_request(alice), _request(bob), _request(alice), _request(alice)]
    results = exchange_services.exchange_start_many(requests=requests)
    assert [type(r).__name__ for r in results] == [
        "StartedExchange",
        "StartedExchange",
        "StartedExchange",
        "TooManyMessages",
    ]
    assert Conversation.objects.filter(user=alice).count() == 2
    assert not Conversation.objects.filter(client_id=requests[3].client_id).exists()


def test_concurrent_reply_limit_holds_across_a_batch(alice, settings):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    results = exchange_services.exchange_start_many(requests=[_request(alice), _request(alice)])
    assert isinstance(results[0], exchange_services.StartedExchange)
    assert isinstance(results[1], TooManyReplies)
    assert Message.objects.filter(status="streaming").count() == 1


def test_sends_to_existing_conversations_share_the_trip_but_not_the_transaction(alice, bob):
    started = exchange_services.exchange_start_many(requests=[_request(alice), _request(bob)])
    assert all(isinstance(r, exchange_services.StartedExchange) for r in started)
    Message.objects.filter(status="streaming").update(status="complete", content="an answer")
    mine = started[0].conversation.pk
    results = exchange_services.exchange_start_many(
        requests=[
            _request(alice, text="follow-up", conversation_id=mine),
            _request(bob, text="not yours", conversation_id=mine),
            _request(alice, text="a new one"),
        ]
    )
    follow_up, foreign, fresh = results
    assert isinstance(follow_up, exchange_services.StartedExchange)
    assert [(m.role, m.content) for m in follow_up.prompt] == [
        ("user", "hello there"),
        ("assistant", "an answer"),
        ("user", "follow-up"),
    ]
    assert isinstance(foreign, NotFound)
    assert isinstance(fresh, exchange_services.StartedExchange) and fresh.created
    assert Message.objects.filter(conversation_id=mine).count() == 4


# --- through the socket ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_many_sockets_sending_at_once_each_get_their_own_conversation(
    connect, alice, upstream, settings
):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = None  # this test is about the batch, not the limit
    sockets = [await connect(alice) for _ in range(8)]
    client_ids = [uuid.uuid4().hex for _ in sockets]
    for socket, client_id in zip(sockets, client_ids, strict=True):
        await socket.send(
            type="send",
            client_id=client_id,
            conversation=None,
            text=f"hi {client_id}",
            model="openai/fake?tokens=5&rate=0",
        )
    for socket, client_id in zip(sockets, client_ids, strict=True):
        frames = await socket.recv_until("reply_finished")
        ack = frames[0]
        assert ack["type"] == "ack" and ack["client_id"] == client_id and ack["created"] is True
        assert frames[-1]["status"] == "complete"
        reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["reply"])
        assert reply.content == deltas_text(frames)
        conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
        assert conversation.client_id == client_id
    assert await sync_to_async(Conversation.objects.count)() == 8


def test_many_finishes_are_one_update_of_messages_and_one_of_conversations(alice):
    started = exchange_services.exchange_start_many(
        requests=[_request(alice), _request(alice, text="second")]
    )
    conversations_before = {c.pk: c.updated_at for c in Conversation.objects.all()}
    finishes = [
        reply_services.ReplyFinish(
            reply_id=started[0].reply.pk,
            content="all of it",
            last_seq=4,
            status="complete",
            finish_reason="stop",
            ttft_ms=12.5,
            total_ms=99.0,
            tokens_per_s=40.0,
            prompt_tokens=3,
            completion_tokens=4,
        ),
        reply_services.ReplyFinish(
            reply_id=started[1].reply.pk,
            content="half",
            last_seq=2,
            status="error",
            error_kind="upstream_stream",
            error_message="x" * 900,
            usage_counted=True,
        ),
    ]
    with CaptureQueriesContext(connection) as ctx:
        reply_services.reply_finish_many(finishes=finishes)
    # Django logs an executemany as "<n> times: <sql>".
    statements = [q["sql"].split(" times: ", 1)[-1] for q in ctx.captured_queries]
    updates = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 2, updates
    assert any(q["sql"].startswith("2 times: UPDATE") for q in ctx.captured_queries)
    done = Message.objects.get(pk=started[0].reply.pk)
    assert (done.status, done.content, done.last_seq, done.finish_reason) == (
        "complete",
        "all of it",
        4,
        "stop",
    )
    assert (done.ttft_ms, done.total_ms, done.tokens_per_s) == (12.5, 99.0, 40.0)
    assert (done.prompt_tokens, done.completion_tokens, done.usage_counted) == (3, 4, False)
    failed = Message.objects.get(pk=started[1].reply.pk)
    assert (failed.status, failed.error_kind, failed.content) == ("error", "upstream_stream", "half")
    assert failed.error_message == "x" * 500 and failed.usage_counted is True
    assert done.finished_at is not None and done.finished_at == failed.finished_at
    for conversation in Conversation.objects.all():
        assert conversation.updated_at > conversations_before[conversation.pk]


# --- before_commit: the reply starts while the store commits ------------------------


class CommitWatch:
    """A ``before_commit`` that records what it saw inside the transaction."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool, bool, int]] = []

    def __call__(self, exchange: exchange_services.StartedExchange) -> None:
        # On the store's own connection, inside its transaction: the rows are there.
        rows = Message.objects.filter(pk__in=[exchange.user_message.pk, exchange.reply.pk]).count()
        self.seen.append((connection.in_atomic_block, exchange.created, bool(exchange.prompt), rows))


def _watched(
    request: exchange_services.ExchangeRequest, watch: exchange_services.BeforeCommit
) -> exchange_services.ExchangeRequest:
    return exchange_services.ExchangeRequest(
        **{**vars_of(request), "before_commit": watch},
    )


def vars_of(request: exchange_services.ExchangeRequest) -> dict:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_before_commit_sees_each_new_exchange_inside_its_transaction(alice, bob):
    watch = CommitWatch()
    fresh = [_watched(_request(user), watch) for user in (alice, bob, alice)]
    started = exchange_services.exchange_start_many(requests=fresh)
    # New conversations: as soon as the checks have passed, before their rows are written.
    assert watch.seen == [(True, True, True, 0)] * 3
    assert Message.objects.count() == 6  # and then written and committed
    Message.objects.filter(status="streaming").update(status="complete", content="an answer")
    follow_up = _watched(_request(alice, text="more", conversation_id=started[0].conversation.pk), watch)
    (more,) = exchange_services.exchange_start_many(requests=[follow_up])
    assert isinstance(more, exchange_services.StartedExchange)
    assert watch.seen[3:] == [(True, True, True, 2)]
    assert Message.objects.count() == 8  # and it was committed


@pytest.mark.django_db(transaction=True)
def test_a_send_racing_the_same_client_id_waits_for_the_first_and_starts_nothing(alice):
    """Two stores of one new conversation's send at once (a retry racing the
    original): the second waits for the first's commit, so only the first ever
    starts a reply, although its reply starts before its rows are written."""
    holding, release = threading.Event(), threading.Event()
    called: list[str] = []

    def first_watch(exchange):
        called.append("first")
        holding.set()
        release.wait(10)  # inside the first transaction, its rows not written yet

    results: dict[str, object] = {}

    def store(name, watch):
        try:
            request = _watched(_request(alice, client_id="same-send"), watch)
            results[name] = exchange_services.exchange_start_many(requests=[request])[0]
        finally:
            connection.close()

    first = threading.Thread(target=store, args=("first", first_watch))
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=store, args=("second", lambda exchange: called.append("second")))
    second.start()
    second.join(0.3)  # it must be waiting for the first transaction, not done
    assert second.is_alive()
    release.set()
    first.join(10)
    second.join(10)
    assert called == ["first"]
    assert results["first"].created and not results["second"].created
    assert results["second"].reply.pk == results["first"].reply.pk
    assert Conversation.objects.filter(client_id="same-send").count() == 1


def test_before_commit_is_never_called_for_a_refusal_or_a_retry(alice, bob, settings):
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 3
    first = exchange_services.exchange_start_many(requests=[_request(alice, client_id="c-1")])[0]
    assert isinstance(first, exchange_services.StartedExchange)
    watch = CommitWatch()
    mine = first.conversation.pk
    results = exchange_services.exchange_start_many(
        requests=[
            _watched(_request(alice, client_id="c-1"), watch),  # a retry of a new conversation
            _watched(_request(alice, client_id="c-1", conversation_id=mine), watch),  # a retry in it
            _watched(_request(bob, conversation_id=mine), watch),  # not bob's
            _watched(_request(alice, conversation_id=mine), watch),  # its reply still streams
        ]
    )
    assert [r.created for r in results[:2]] == [False, False]
    assert isinstance(results[2], NotFound) and isinstance(results[3], ReplyRunning)
    Message.objects.filter(status="streaming").update(status="complete")
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 1
    (limited,) = exchange_services.exchange_start_many(requests=[_watched(_request(alice), watch)])
    assert isinstance(limited, TooManyMessages)
    assert watch.seen == []


def test_a_database_error_of_one_send_stored_alone_fails_only_that_send(alice, monkeypatch):
    started = exchange_services.exchange_start_many(requests=[_request(alice), _request(alice)])
    Message.objects.filter(status="streaming").update(status="complete")
    conversations = [s.conversation.pk for s in started]

    def broken(exchange):
        if exchange.user_message.content == "breaks":
            raise OperationalError("disk I/O error")

    results = exchange_services.exchange_start_many(
        requests=[
            _watched(_request(alice, text="breaks", conversation_id=conversations[0]), broken),
            _request(alice, text="stands", conversation_id=conversations[1]),
        ]
    )
    assert isinstance(results[0], OperationalError)
    assert isinstance(results[1], exchange_services.StartedExchange)
    assert not Message.objects.filter(content="breaks").exists()
    assert Message.objects.filter(content="stands").exists()


def _wait_until(probe, what: str, timeout: float = 5.0) -> None:
    """On the database thread: wait for ``probe()`` (a condition the event loop or the fake makes true)."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.002)


def _counted(name: str, **labels: str) -> float:
    """The sum of a metric's samples over every label set that has ``labels``."""
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _abandoned() -> float:
    return _counted("chatsite_replies_ended_total", status="abandoned")


def _hold_commit(monkeypatch, then) -> None:
    """Make every send's ``before_commit`` start its replies as usual, then run
    ``then(exchange)`` on the database thread, still inside the transaction."""
    original = commands._EarlyStart.before_commit

    def before_commit(self, exchange):
        original(self, exchange)
        then(exchange)

    monkeypatch.setattr(commands._EarlyStart, "before_commit", before_commit)


@pytest.mark.django_db(transaction=True)
async def test_the_upstream_request_goes_out_before_the_commit_and_the_ack_comes_first(
    connect, alice, upstream, settings, monkeypatch
):
    settings.CHATSITE_AUTO_TITLES = False
    at_commit: list[tuple[bool, int]] = []

    def then(exchange):
        # The whole reply is written upstream and relayed while the transaction is open.
        (record,) = upstream.wait_for_requests(1)
        assert record.wait_completed(5)
        live = registry.get(str(exchange.reply.pk))
        _wait_until(lambda: live is not None and live.finished, "the reply to reach its end")
        at_commit.append((connection.in_atomic_block, live.seq))

    _hold_commit(monkeypatch, then)
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c-early", conversation=None, text="hi", model="openai/fake?tokens=5&rate=0"
    )
    frames = await socket.recv_until("reply_finished")
    assert at_commit and at_commit[0][0] is True and at_commit[0][1] >= 1  # deltas made before the commit
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["ack", "reply_started"], kinds
    assert kinds[-1] == "reply_finished" and set(kinds[2:-1]) == {"delta"}
    assert [f["seq"] for f in frames if f["type"] == "delta"] == list(range(1, at_commit[0][1] + 1))
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["reply"])
    assert reply.status == "complete"
    assert reply.content == deltas_text(frames) == upstream.requests[0].text_sent


@pytest.mark.django_db(transaction=True)
async def test_a_refused_or_retried_send_sends_nothing_upstream(connect, alice, bob, upstream, settings):
    settings.CHATSITE_AUTO_TITLES = False
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 2
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c-1", conversation=None, text="hi", model="openai/fake?tokens=3&rate=0"
    )
    frames = await socket.recv_until("reply_finished")
    conversation = frames[0]["conversation"]
    assert len(upstream.requests) == 1
    # A retry: the same client id, as a new conversation and within it.
    for where in (None, conversation):
        await socket.send(type="send", client_id="c-1", conversation=where, text="hi", model="openai/fake")
        ack = (await socket.recv_until("reply_finished"))[0]
        assert ack["type"] == "ack" and ack["created"] is False
    # Another user's conversation.
    other = await connect(bob)
    await other.send(
        type="send", client_id="c-b", conversation=conversation, text="mine?", model="openai/fake"
    )
    assert (await other.recv())["code"] == "not_found"
    # Over the limit (the first send counted; one more is allowed, then none).
    await socket.send(
        type="send", client_id="c-2", conversation=None, text="two", model="openai/fake?tokens=2&rate=0"
    )
    await socket.recv_until("reply_finished")
    await socket.send(type="send", client_id="c-3", conversation=None, text="three", model="openai/fake")
    assert (await socket.recv())["code"] == "too_many_messages"
    assert await socket.nothing() and await other.nothing()
    assert len(upstream.requests) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("compare", [False, True], ids=["send", "compare"])
async def test_a_failed_commit_closes_the_upstream_stores_nothing_and_says_so(
    connect, alice, upstream, settings, monkeypatch, compare, caplog
):
    settings.CHATSITE_AUTO_TITLES = False
    columns = 2 if compare else 1

    def then(exchange):
        upstream.wait_for_requests(columns)  # the requests went out
        raise OperationalError("disk I/O error")  # and the transaction rolls back

    _hold_commit(monkeypatch, then)
    settings.CHATSITE_METRICS = True
    caplog.set_level(logging.INFO, logger="conversations.realtime.replies")
    started_before, abandoned_before = _counted("chatsite_replies_started_total"), _abandoned()
    socket = await connect(alice)
    drip = ["openai/fake?fault=drip&rate=50", "openai/fake?fault=drip&rate=50&key=b"]
    models = {"models": drip} if compare else {"model": drip[0]}
    await socket.send(type="send", client_id="c-lost", conversation=None, text="hi", **models)
    error = await socket.recv()
    assert error["type"] == "error" and error["code"] == "unavailable" and error["ref"] == "c-lost"
    assert "could not be saved" in error["message"] and "again" in error["message"]
    for record in upstream.requests:
        assert await record.wait_disconnected_async(2.0), "the upstream was left streaming"
    assert len(upstream.requests) == columns
    assert len(registry) == 0
    assert await socket.nothing()  # no ack, no reply_started, no delta, no reply_finished
    assert await sync_to_async(Conversation.objects.count)() == 0
    assert await sync_to_async(Message.objects.count)() == 0
    # Each reply that was counted started is counted ended, as abandoned, and logged.
    assert _counted("chatsite_replies_started_total") - started_before == columns
    assert _abandoned() - abandoned_before == columns
    abandoned_lines = [r for r in caplog.records if r.getMessage().endswith("nothing was saved or shown")]
    assert len(abandoned_lines) == columns
    # The socket goes on: the same send again is stored and answered.
    monkeypatch.undo()
    await socket.send(
        type="send", client_id="c-lost", conversation=None, text="hi", model="openai/fake?tokens=2&rate=0"
    )
    frames = await socket.recv_until("reply_finished")
    assert frames[0]["type"] == "ack" and frames[0]["created"] is True
    assert frames[-1]["status"] == "complete"


@pytest.mark.django_db(transaction=True)
async def test_a_stop_before_the_commit_ends_the_reply_stopped_once_stored(
    connect, alice, upstream, settings, monkeypatch
):
    settings.CHATSITE_AUTO_TITLES = False
    loop = asyncio.get_running_loop()

    def then(exchange):
        (record,) = upstream.wait_for_requests(1)
        _wait_until(lambda: len(record.text_sent) > 0, "a token upstream")
        live = registry.get(str(exchange.reply.pk))
        assert live is not None
        loop.call_soon_threadsafe(live.request_cancel, "stop")
        assert record.wait_disconnected(2.0)  # closed upstream while the transaction is still open

    _hold_commit(monkeypatch, then)
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c-stop", conversation=None, text="hi", model="openai/fake?fault=drip&rate=50"
    )
    frames = await socket.recv_until("reply_finished")
    assert [f["type"] for f in frames[:2]] == ["ack", "reply_started"]
    assert frames[-1]["status"] == "stopped"
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["reply"])
    assert reply.status == "stopped" and reply.content == deltas_text(frames)
    assert reply.last_seq == frames[-1]["last_seq"]
    assert len(registry) == 0
