"""The chat WebSocket, through the real ASGI stack (origin check, session auth)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.realtime.registry import FLUSH_GRID, registry
from tests.conftest import deltas_text
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


def _reply(reply_id: str) -> Message:
    return Message.objects.get(pk=reply_id)


get_reply = sync_to_async(_reply)


async def finished(reply_id: str) -> Message | None:
    """The reply, once it is no longer streaming."""
    reply = await get_reply(reply_id)
    return reply if reply.status != "streaming" else None


@sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


async def start(socket, text="hello", model="openai/fake", conversation=None, client_id=None):
    client_id = client_id or uuid.uuid4().hex
    await socket.send(type="send", client_id=client_id, conversation=conversation, text=text, model=model)
    ack = await socket.recv()
    assert ack["type"] == "ack", ack
    started = await socket.recv()
    assert started["type"] == "reply_started", started
    return ack, started


async def test_anonymous_socket_is_refused(connect):
    socket = await connect(None)
    assert socket.connected is False


async def test_foreign_origin_is_refused(connect, alice):
    socket = await connect(alice, origin=b"http://evil.example")
    assert socket.connected is False
    socket = await connect(alice, origin=None)
    assert socket.connected is False


async def test_send_streams_deltas_then_complete_and_saves_exactly_them(connect, alice, upstream):
    socket = await connect(alice)
    assert socket.connected
    ack, started = await start(socket, model="openai/fake?tokens=30&rate=0")
    assert ack["created"] is True
    frames = await socket.recv_until("reply_finished")
    finished = frames[-1]
    deltas = [f for f in frames if f["type"] == "delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert finished["status"] == "complete"
    assert finished["error_kind"] is None
    assert finished["last_seq"] == deltas[-1]["seq"]
    text = deltas_text(frames)
    assert text == upstream.requests[-1].text_sent
    reply = await get_reply(started["reply"])
    assert reply.status == "complete"
    assert reply.content == text
    assert reply.last_seq == finished["last_seq"]
    assert reply.completion_tokens == 30 and reply.usage_counted is False
    assert reply.ttft_ms is not None and reply.total_ms >= reply.ttft_ms
    assert reply.provider == "openai" and reply.model == "fake?tokens=30&rate=0"
    # The key went upstream, and nowhere near the client.
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-test-key-not-a-secret"
    assert all("sk-test" not in json.dumps(f) for f in socket.frames)


async def test_fast_tokens_are_coalesced_into_fewer_frames(connect, alice, upstream, settings):
    # 200 tokens at 2000 a second: 0.1 s of streaming, in 50 ms windows.
    settings.CHATSITE_COALESCE_MS = 50
    socket = await connect(alice)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await start(socket, model="openai/fake?tokens=200&rate=2000")
    frames = await socket.recv_until("reply_finished")
    took = loop.time() - sent_at
    deltas = [f for f in frames if f["type"] == "delta"]
    # The first token alone (never held), then one frame per window at most
    # (a held frame may leave one flush-grid step early), then the rest: 3 to 5
    # frames on an idle machine, and never more than the time taken allows.
    most = 2 + int(took / (0.050 - FLUSH_GRID))
    assert 2 <= len(deltas) <= most, (len(deltas), took)
    assert deltas_text(frames) == upstream.requests[-1].text_sent


async def test_stop_closes_upstream_and_saves_what_was_sent(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    frames = [await socket.recv() for _ in range(3)]
    assert all(f["type"] == "delta" for f in frames)
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    record = upstream.requests[-1]
    assert record.wait_disconnected(2.0), "the upstream never saw the connection close"
    finished = frames[-1]
    assert finished["status"] == "stopped"
    assert finished["finish_reason"] == "stopped"
    reply = await get_reply(started["reply"])
    assert reply.status == "stopped"
    assert reply.content == deltas_text(frames)
    assert reply.last_seq == finished["last_seq"] == max(f["seq"] for f in frames if f["type"] == "delta")
    # Nothing the user did not see: the upstream sent at most what we relayed.
    assert record.text_sent.startswith(reply.content)
    assert registry.get(started["reply"]) is None


async def test_a_stop_shuts_the_upstream_connection_before_the_reply_task_runs_again(
    connect, alice, upstream
):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    await socket.recv_until("delta")
    record = upstream.requests[-1]
    registry.get(started["reply"]).request_cancel("stop")
    # Blocking: this event loop runs nothing (not the reply's task, not a socket
    # close it would schedule) until the fake upstream, in its own thread, sees
    # the connection go.
    assert record.wait_disconnected(2.0), "the connection closes only once the reply's task runs"
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "stopped"
    reply = await get_reply(started["reply"])
    assert reply.content == record.text_sent[: len(reply.content)]


async def test_stop_is_idempotent_and_a_finished_reply_is_a_no_op(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=3&rate=0")
    await socket.recv_until("reply_finished")
    await socket.send(type="stop", reply=started["reply"])
    await socket.send(type="stop", reply=started["reply"])
    assert await socket.nothing()
    assert (await get_reply(started["reply"])).status == "complete"


async def test_stop_of_another_users_reply_is_not_found_and_changes_nothing(connect, alice, bob, upstream):
    socket_a = await connect(alice)
    socket_b = await connect(bob)
    _, started = await start(socket_a, model="openai/fake?tokens=40&rate=40")
    await socket_b.send(type="stop", reply=started["reply"])
    error = await socket_b.recv()
    missing = str(uuid.uuid4())
    await socket_b.send(type="stop", reply=missing)
    error_missing = await socket_b.recv()
    assert error["type"] == error_missing["type"] == "error"
    assert error["code"] == error_missing["code"] == "not_found"
    assert error["message"] == error_missing["message"]
    frames = await socket_a.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"type": "dance"}', "unknown_type"),
        ("{}", "invalid_field"),
        ('{"type": "send", "client_id": 5, "text": "x"}', "invalid_field"),
        ('{"type": "send", "client_id": "bad id!", "text": "x"}', "invalid_field"),
        ('{"type": "send", "client_id": "a", "text": "   "}', "invalid_field"),
        ('{"type": "send", "client_id": "a", "text": "x", "conversation": "nope"}', "invalid_field"),
        ('{"type": "send", "client_id": "a", "text": "x", "model": 3}', "invalid_field"),
        ('{"type": "stop", "reply": 12}', "invalid_field"),
        ('{"type": "subscribe", "conversation": "%s", "after_seq": -1}' % uuid.uuid4(), "invalid_field"),
        ('{"type": "subscribe", "conversation": "%s", "after_seq": true}' % uuid.uuid4(), "invalid_field"),
    ],
)
async def test_bad_frames_get_an_error_and_change_nothing(connect, alice, upstream, raw, code):
    socket = await connect(alice)
    before = await counts()
    await socket.send_raw(text=raw)
    error = await socket.recv()
    assert error["type"] == "error" and error["code"] == code
    assert await counts() == before


async def test_bad_frames_do_not_disturb_a_running_reply(connect, alice, upstream, settings):
    settings.CHATSITE_MAX_PROMPT_CHARS = 100
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=20&rate=40")
    await socket.send_raw(data=b"\x00\x01")
    await socket.send_raw(text="{")
    await socket.send_raw(text="x" * 300_000)
    await socket.send(type="send", client_id="too-long", text="y" * 101)
    await socket.send(type="send", client_id="foreign", conversation=str(uuid.uuid4()), text="hi")
    frames = await socket.recv_until("reply_finished")
    errors = [f["code"] for f in frames if f["type"] == "error"]
    assert errors == ["bad_frame", "bad_frame", "frame_too_large", "prompt_too_long", "not_found"]
    assert frames[-1]["status"] == "complete"
    reply = await get_reply(started["reply"])
    assert reply.content == deltas_text(frames) == upstream.requests[-1].text_sent
    assert await counts() == (1, 2)


async def test_another_users_conversation_answers_like_a_missing_one(connect, alice, bob, upstream):
    socket_a = await connect(alice)
    ack, _ = await start(socket_a, model="openai/fake?tokens=2&rate=0")
    await socket_a.recv_until("reply_finished")
    socket_b = await connect(bob)
    before = await counts()
    answers = []
    for conversation in (ack["conversation"], str(uuid.uuid4())):
        await socket_b.send(type="send", client_id="b1", conversation=conversation, text="mine?")
        answers.append(await socket_b.recv())
        await socket_b.send(type="subscribe", conversation=conversation, after_seq=0)
        answers.append(await socket_b.recv())
    assert answers[0] == answers[2] and answers[1] != answers[0]
    assert {a["code"] for a in answers} == {"not_found"}
    assert answers[1]["message"] == answers[3]["message"]
    assert await counts() == before


async def test_resend_with_same_client_id_creates_no_duplicate(connect, alice, upstream):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?tokens=30&rate=30", client_id="same-1")
    await socket.send(type="send", client_id="same-1", conversation=None, text="hello", model="openai/fake")
    frames = await socket.recv_until("reply_finished")
    acks = [f for f in frames if f["type"] == "ack"]
    assert acks and acks[0]["created"] is False and acks[0]["conversation"] == ack["conversation"]
    assert await counts() == (1, 2)
    assert len(upstream.requests) == 1


async def test_second_send_while_streaming_is_refused(connect, alice, upstream):
    socket = await connect(alice)
    ack, _ = await start(socket, model="openai/fake?tokens=20&rate=40")
    await socket.send(type="send", client_id="second", conversation=ack["conversation"], text="again")
    frames = await socket.recv_until("reply_finished")
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["reply_running"] and errors[0]["ref"] == "second"
    assert await counts() == (1, 2)


async def test_conversation_continues_with_history(connect, alice, upstream):
    socket = await connect(alice)
    ack, _ = await start(socket, text="first question", model="openai/fake?tokens=3&rate=0")
    first = await socket.recv_until("reply_finished")
    await start(socket, text="second question", conversation=ack["conversation"], model=None)
    await socket.recv_until("reply_finished")
    sent = upstream.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == deltas_text(first)
    assert upstream.requests[-1].body["model"] == "fake?tokens=3&rate=0"


@pytest.mark.parametrize(
    ("model", "kind", "keeps_text"),
    [
        ("fake?tokens=10&rate=0&fault=malformed&after=4", "upstream_stream", True),
        ("fake?tokens=10&rate=0&fault=reset&after=4", "upstream_stream", True),
        ("fake?tokens=10&rate=0&fault=error_event&after=4", "upstream_error", True),
        ("fake?tokens=10&rate=0&fault=no_done", "upstream_stream", True),
        ("fake?status=400", "upstream_http", False),
        ("fake?status=429&retry_after=0", "rate_limited", False),
        ("fake?finish_reason=length&tokens=5&rate=0", "length_limit", True),
    ],
)
async def test_upstream_failures_end_in_a_named_error_and_keep_the_text(
    connect, alice, upstream, settings, model, kind, keeps_text
):
    settings.CHATSITE_RETRY_ATTEMPTS = 2
    socket = await connect(alice)
    _, started = await start(socket, model=f"openai/{model}")
    frames = await socket.recv_until("reply_finished")
    finished = frames[-1]
    assert finished["status"] == "error" and finished["error_kind"] == kind
    reply = await get_reply(started["reply"])
    assert (reply.status, reply.error_kind) == ("error", kind)
    assert reply.content == deltas_text(frames)
    assert bool(reply.content) is keeps_text
    assert "sk-test" not in (finished["error"] or "")


async def test_retries_before_the_first_token_then_streams(connect, alice, upstream, settings):
    settings.CHATSITE_RETRY_ATTEMPTS = 3
    socket = await connect(alice)
    await start(socket, model="openai/fake?status=500&fail_first=2&key=r1&tokens=4&rate=0")
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"
    assert len(upstream.requests) == 3
    assert deltas_text(frames) == upstream.requests[-1].text_sent


async def test_never_retries_once_text_was_sent(connect, alice, upstream, settings):
    settings.CHATSITE_RETRY_ATTEMPTS = 3
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=10&rate=0&fault=reset&after=3")
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["error_kind"] == "upstream_stream"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("model", "setting", "kind"),
    [
        ("fake?ttft=5", "CHATSITE_FIRST_TOKEN_TIMEOUT", "timeout_first_token"),
        ("fake?tokens=10&rate=0&fault=stall&after=3", "CHATSITE_IDLE_TIMEOUT", "timeout_idle"),
        ("fake?fault=drip&rate=50", "CHATSITE_TOTAL_TIMEOUT", "timeout_total"),
    ],
)
async def test_timeouts_end_with_their_own_kind_and_close_upstream(
    connect, alice, upstream, settings, model, setting, kind
):
    setattr(settings, setting, 0.4)
    socket = await connect(alice)
    _, started = await start(socket, model=f"openai/{model}")
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "error" and frames[-1]["error_kind"] == kind
    assert upstream.requests[-1].wait_disconnected(2.0)
    reply = await get_reply(started["reply"])
    assert reply.error_kind == kind and reply.content == deltas_text(frames)


async def test_length_limit_ends_the_reply_at_the_setting(connect, alice, upstream, settings):
    settings.CHATSITE_MAX_REPLY_CHARS = 25
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=100&rate=0")
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["error_kind"] == "length_limit"
    reply = await get_reply(started["reply"])
    assert len(reply.content) == 25 and reply.content == deltas_text(frames)
    assert upstream.requests[-1].wait_disconnected(2.0) or upstream.requests[-1].completed


async def test_partial_text_is_checkpointed_while_streaming(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=40&rate=40")

    async def checkpointed() -> Message | None:
        reply = await get_reply(started["reply"])
        return reply if reply.last_seq > 0 else None

    # A second of streaming, checkpointed every 0.2 s: the first checkpoint lands mid-reply.
    reply = await eventually(checkpointed, what="a checkpoint of the streaming reply")
    assert reply.status == "streaming"
    assert len(reply.content) > 0
    frames = await socket.recv_until("reply_finished")
    assert deltas_text(socket.frames).startswith(reply.content)
    assert frames[-1]["status"] == "complete"


async def test_reply_keeps_going_after_the_browser_leaves(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=10&rate=50")
    await socket.close()
    (record,) = await upstream.wait_for_requests_async(1)
    assert await asyncio.to_thread(record.wait_completed, 5.0)
    reply = await eventually(lambda: finished(started["reply"]), what="the reply to be saved as finished")
    assert reply.status == "complete" and reply.content == record.text_sent


async def test_disconnect_grace_setting_stops_an_unwatched_reply(connect, alice, upstream, settings):
    settings.CHATSITE_DISCONNECT_GRACE = 0.2
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=50")
    await socket.recv()
    await socket.close()
    assert await asyncio.to_thread(upstream.requests[-1].wait_disconnected, 3.0)
    reply = await eventually(lambda: finished(started["reply"]), what="the reply to be saved as finished")
    assert reply.status == "stopped"


async def test_second_socket_subscribes_and_sees_every_token_exactly_once(connect, alice, upstream):
    first = await connect(alice)
    ack, started = await start(first, model="openai/fake?tokens=60&rate=60")
    seen = [await first.recv() for _ in range(5)]
    have = max(f["seq"] for f in seen if f["type"] == "delta")
    second = await connect(alice)
    await second.send(type="subscribe", conversation=ack["conversation"], after_seq=2)
    frames_second = await second.recv_until("reply_finished")
    frames_first = seen + await first.recv_until("reply_finished")
    assert frames_second[0]["type"] == "reply_started" and frames_second[0]["after_seq"] == 2
    full = deltas_text(frames_first)
    first_two = "".join(f["text"] for f in frames_first if f["type"] == "delta" and f["seq"] <= 2)
    assert first_two + deltas_text(frames_second) == full
    assert have >= 3
    seqs = [f["seq"] for f in frames_second if f["type"] == "delta"]
    assert seqs == sorted(set(seqs))
    reply = await get_reply(started["reply"])
    assert reply.content == full


async def test_subscribe_to_finished_conversation_reports_its_last_reply(connect, alice, upstream):
    socket = await connect(alice)
    ack, started = await start(socket, model="openai/fake?tokens=3&rate=0")
    finished = (await socket.recv_until("reply_finished"))[-1]
    other = await connect(alice)
    await other.send(type="subscribe", conversation=ack["conversation"], after_seq=0)
    frame = await other.recv()
    assert frame["type"] == "reply_finished" and frame["reply"] == started["reply"]
    assert frame["last_seq"] == finished["last_seq"] and frame["status"] == "complete"


async def test_replies_stream_in_several_conversations_at_once(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="send", client_id="c-one", text="one", model="openai/fake?tokens=20&rate=40")
    await socket.send(type="send", client_id="c-two", text="two", model="openai/fake?tokens=20&rate=40")
    frames = []
    while sum(f["type"] == "reply_finished" for f in frames) < 2:
        frames.append(await socket.recv(timeout=10))
    finished = [f for f in frames if f["type"] == "reply_finished"]
    assert {f["status"] for f in finished} == {"complete"}
    assert len({f["conversation"] for f in finished}) == 2
    for f in finished:
        assert (await get_reply(f["reply"])).content == deltas_text(frames, f["reply"])


async def test_unknown_model_is_refused(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="send", client_id="m1", text="hi", model="nosuch/model")
    error = await socket.recv()
    assert error["code"] == "unknown_model"
    assert await counts() == (0, 0)


async def test_ping_is_answered_with_pong_and_changes_nothing(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="ping")
    assert await socket.recv() == {"type": "pong"}
    assert await socket.nothing()
    assert await counts() == (0, 0)


async def test_ping_skips_the_session_check_but_the_next_real_frame_gets_it(
    connect, alice, upstream, settings
):
    settings.CHATSITE_SESSION_RECHECK = 0
    socket = await connect(alice)
    from django.contrib.sessions.models import Session

    await sync_to_async(Session.objects.all().delete)()
    await socket.send(type="ping")
    assert (await socket.recv())["type"] == "pong"
    await socket.send(type="send", client_id="late", text="still me?", model="openai/fake")
    assert (await socket.recv())["code"] == "session_ended"
    assert await counts() == (0, 0)


_CONV = str(uuid.uuid4())


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "send", "client_id": "c-1"},  # text missing
        {"type": "send", "client_id": "c-1", "text": 7},
        {"type": "send", "client_id": "c-1", "text": ["hi"]},
        {"type": "send", "client_id": "c-1", "text": "hi", "conversation": "nope"},
        {"type": "send", "client_id": "c-1", "text": "hi", "conversation": 12},
        {"type": "send", "client_id": "c-1", "text": "hi", "model": 3},
        {"type": "send", "client_id": "c-1", "text": "hi", "model": "no-slash"},
        {"type": "send", "client_id": "c-1", "text": "hi", "conversation": _CONV, "edit_of": "x"},
        {"type": "regenerate", "client_id": "c-1"},  # reply missing
        {"type": "regenerate", "client_id": "c-1", "reply": "not-an-id"},
        {"type": "regenerate", "client_id": "c-1", "reply": _CONV, "model": 3},
    ],
)
async def test_every_invalid_field_of_a_send_or_regenerate_names_its_client_id(
    connect, alice, upstream, frame
):
    socket = await connect(alice)
    await socket.send(**frame)
    error = await socket.recv()
    assert (error["type"], error["code"], error["ref"]) == ("error", "invalid_field", "c-1")
    assert await counts() == (0, 0)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 1000 + "]" * 1000,
        '{"type":"send","client_id":"deep","text":' + "[" * 1000 + "]" * 1000 + "}",
    ],
)
async def test_a_deeply_nested_frame_is_a_bad_frame_and_the_socket_stays_open(
    connect, alice, upstream, raw, caplog
):
    socket = await connect(alice)
    await socket.send_raw(text=raw)
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "bad_frame")
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    await socket.send(type="ping")
    assert await socket.recv() == {"type": "pong"}


@contextlib.contextmanager
def database_locked():
    """Another connection holds the database's write lock until the block ends."""
    from django.db import connection

    held, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            conn: Any
            if connection.vendor == "sqlite":
                conn = sqlite3.connect(connection.settings_dict["NAME"], timeout=10)
                conn.execute("BEGIN IMMEDIATE")
            else:
                import psycopg

                conn = psycopg.connect(**connection.get_connection_params())
                conn.execute("LOCK TABLE conversations_conversation, conversations_message IN EXCLUSIVE MODE")
            held.set()
            release.wait(30)
            conn.rollback()
            conn.close()
        except BaseException as exc:  # the test then fails on `held`
            failed.append(exc)
            held.set()

    holder = threading.Thread(target=hold, name="database-lock-holder")
    holder.start()
    try:
        held.wait(10)
        assert not failed, failed
        yield
    finally:
        release.set()
        holder.join(30)


async def test_a_stop_sent_while_a_send_waits_on_the_locked_database_closes_the_upstream_at_once(
    connect, alice, upstream
):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    first = await socket.recv()
    assert first["type"] == "delta"
    running = upstream.requests[-1]
    with database_locked():
        await socket.send(type="send", client_id="waits", text="next", model="openai/fake?tokens=3&rate=0")
        await socket.send(type="stop", reply=started["reply"])
        # The send waits for the lock (up to the busy timeout); the stop does not wait for it.
        assert await running.wait_disconnected_async(3.0), "the stop waited behind the send"
    frames = [first, *await socket.recv_until("ack")]
    assert frames[-1]["client_id"] == "waits"
    frames += await socket.recv_until("reply_finished")
    frames += await socket.recv_until("reply_finished")
    finished = {f["reply"]: f["status"] for f in frames if f["type"] == "reply_finished"}
    assert finished.pop(started["reply"]) == "stopped"
    assert list(finished.values()) == ["complete"]
    reply = await get_reply(started["reply"])
    assert reply.status == "stopped" and reply.content == deltas_text(frames, started["reply"])


async def test_a_ping_is_answered_while_a_send_waits_and_the_other_frames_keep_their_order(
    connect, alice, upstream
):
    socket = await connect(alice)
    with database_locked():
        await socket.send(type="send", client_id="first", text="one", model="openai/fake?tokens=2&rate=0")
        await socket.send_raw(text="{")
        await socket.send(type="subscribe", conversation=str(uuid.uuid4()))
        await socket.send(type="ping")
        assert await socket.recv() == {"type": "pong"}
    frames = [await socket.recv() for _ in range(3)]
    frames += await socket.recv_until("reply_finished")
    kinds = [f.get("code") or f["type"] for f in frames if f["type"] != "delta"]
    assert kinds == ["ack", "reply_started", "bad_frame", "not_found", "reply_finished"]


@pytest.mark.parametrize(
    ("origin", "host", "extra"),
    [
        (b"http://localhost:9", b"localhost", ()),  # another port
        (b"https://localhost", b"localhost", ()),  # another scheme
        (b"http://localhost", b"localhost:8000", ()),  # the site is on a port, the page is not
        (b"http://localhost:3000", b"localhost:8000", ()),
        (b"http://evil.example", b"evil.example", ()),  # a host the site does not answer to
        (b"null", b"localhost", ()),
        (b"http://localhost", b"localhost", ((b"x-forwarded-proto", b"https"),)),  # an https site
    ],
)
async def test_an_origin_other_than_the_sites_own_is_refused(connect, alice, settings, origin, host, extra):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    socket = await connect(alice, origin=origin, host=host, extra=extra)
    assert socket.connected is False


@pytest.mark.parametrize(
    ("origin", "host", "extra"),
    [
        (b"http://localhost", b"localhost", ()),
        (b"http://localhost:8000", b"localhost:8000", ()),
        (b"HTTP://LocalHost:80", b"localhost", ()),  # the same origin, spelled otherwise
        (b"https://localhost", b"localhost", ((b"x-forwarded-proto", b"https"),)),  # behind a TLS proxy
        (b"https://chat.example.org", b"localhost", ()),  # DJANGO_CSRF_TRUSTED_ORIGINS
        (b"https://eu.example.net:8443", b"localhost", ()),  # a wildcard entry
    ],
)
async def test_the_sites_own_origin_and_the_trusted_ones_are_accepted(
    connect, alice, settings, origin, host, extra
):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.org", "https://*.example.net:8443"]
    socket = await connect(alice, origin=origin, host=host, extra=extra)
    assert socket.connected is True


async def test_a_stop_right_after_a_continue_stops_the_continued_reply_as_soon_as_it_starts(
    connect, alice, upstream
):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    frames = await socket.recv_until("delta")
    await socket.send(type="stop", reply=started["reply"])
    frames += await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "stopped"
    # Back to back: the stop arrives while the continue is still being started.
    await socket.send(type="continue", reply=started["reply"])
    await socket.send(type="stop", reply=started["reply"])
    more = await socket.recv_until("reply_finished")
    assert more[0]["type"] == "reply_started"
    assert more[-1]["status"] == "stopped"
    assert await upstream.requests[-1].wait_disconnected_async(5.0)
    reply = await get_reply(started["reply"])
    assert reply.status == "stopped"
    assert reply.content == deltas_text(frames) + deltas_text(more)


async def test_a_send_to_another_conversation_is_not_held_up_by_an_earlier_sends_store(
    connect, alice, upstream, monkeypatch
):
    from conversations.realtime import commands

    socket = await connect(alice)
    ack, _ = await start(socket, model="openai/fake?tokens=1&rate=0")
    await socket.recv_until("reply_finished")
    conversation = ack["conversation"]
    release = threading.Event()
    store = commands._starts._store

    def held_store(requests):
        release.wait(10)
        return store(requests)

    monkeypatch.setattr(commands._starts, "_store", held_store)
    queued = commands._starts._queue
    try:
        await socket.send(
            type="send",
            client_id="a",
            conversation=conversation,
            text="one",
            model="openai/fake?tokens=2&rate=0",
        )
        await eventually(
            lambda: commands._starts._runner is not None and not commands._starts._runner.done(),
            what="a's store to be on the database thread",
        )
        # Same conversation: waits for "a". A new conversation: does not.
        await socket.send(
            type="send",
            client_id="b",
            conversation=conversation,
            text="two",
            model="openai/fake?tokens=2&rate=0",
        )
        await socket.send(type="send", client_id="c", text="three", model="openai/fake?tokens=1&rate=0")
        await eventually(lambda: [item.client_id for item, _ in queued] == ["c"], what="c to be stored")
        assert [item.client_id for item, _ in queued] == ["c"], "b did not wait for a"
    finally:
        release.set()
    answers: list[str] = []
    while not {"a", "b", "c"} <= set(answers):
        frame = await socket.recv()
        if frame["type"] in ("ack", "error"):
            answers.append(frame.get("client_id") or frame.get("ref"))
    assert answers.index("a") < answers.index("b")
    await eventually(lambda: not registry.by_id, what="the replies to finish")
