"""Nowhere to break in: sessions, limits, and another user's ids everywhere."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation, Message
from conversations.realtime.registry import registry
from tests.realtime.test_consumer import counts, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


async def test_logging_out_closes_the_sessions_sockets(connect, alice, upstream):
    socket = await connect(alice)
    client = Client()
    await sync_to_async(client.force_login)(alice)
    # The socket's own session: log it out through the real view.
    cookie = dict(socket.c.scope["headers"])[b"cookie"].decode()
    client.cookies.load(cookie)
    response = await sync_to_async(client.post)("/accounts/logout/")
    assert response.status_code == 302
    frame = await socket.recv()
    assert frame["type"] == "error" and frame["code"] == "session_ended"
    closed = await socket.c.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_a_frame_on_a_dead_session_is_refused_and_changes_nothing(connect, alice, upstream, settings):
    settings.CHATSITE_SESSION_RECHECK = 0
    socket = await connect(alice)
    # The session disappears behind the socket's back (expired, flushed, another process).
    from django.contrib.sessions.models import Session

    await sync_to_async(Session.objects.all().delete)()
    await socket.send(type="send", client_id="late", text="still me?", model="openai/fake")
    frame = await socket.recv()
    assert frame["code"] == "session_ended"
    assert await counts() == (0, 0)


async def test_a_frame_after_a_password_change_is_refused(connect, alice, upstream, settings):
    settings.CHATSITE_SESSION_RECHECK = 0
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=2&rate=0", client_id="before")
    await socket.recv_until("reply_finished")

    def change_password() -> None:
        alice.set_password("a-brand-new-password-42")
        alice.save()

    await sync_to_async(change_password)()
    await socket.send(type="send", client_id="after", text="still me?", model="openai/fake")
    frame = await socket.recv()
    assert frame["code"] == "session_ended"
    assert await counts() == (1, 2)


async def test_messages_per_minute_are_limited(connect, alice, upstream, settings):
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 2
    socket = await connect(alice)
    for n in range(2):
        await start(socket, model="openai/fake?tokens=2&rate=0", client_id=f"m{n}")
        await socket.recv_until("reply_finished")
    await socket.send(type="send", client_id="m2", text="one more", model="openai/fake")
    error = await socket.recv()
    assert error["code"] == "too_many_messages" and error["ref"] == "m2"
    assert await counts() == (2, 4)


async def test_concurrent_replies_per_user_are_limited(connect, alice, upstream, settings):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=20&rate=40", client_id="r1")
    await socket.send(type="send", client_id="r2", text="another chat", model="openai/fake")
    frames = await socket.recv_until("reply_finished")
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["too_many_replies"] and errors[0]["ref"] == "r2"
    assert await counts() == (1, 2)


@sync_to_async
def _everything_of(user) -> str:
    rows = list(Conversation.objects.filter(user=user).values()) + list(
        Message.objects.filter(conversation__user=user).values()
    )
    return json.dumps(rows, default=str)


async def test_another_users_ids_get_no_byte_of_their_data_on_any_route_or_frame(
    connect, alice, bob, upstream
):
    socket_a = await connect(alice)
    ack, started = await start(
        socket_a, text="alice's secret plan", model="openai/fake?text=markdown&tokens=12&rate=0"
    )
    await socket_a.recv_until("reply_finished")
    conversation, reply = ack["conversation"], started["reply"]
    secret_bits = ["alice's secret plan", "canned answer", conversation, reply, ack["message"]]
    missing = str(uuid.uuid4())
    before = await _everything_of(alice)

    # HTTP: every route that takes an id, with bob's session, answers as for a missing id.
    bob_client = Client()
    await sync_to_async(bob_client.force_login)(bob)
    for template in ("/c/{}/", "/api/conversations/{}/"):
        foreign = await sync_to_async(bob_client.get)(template.format(conversation))
        absent = await sync_to_async(bob_client.get)(template.format(missing))
        assert foreign.status_code == absent.status_code == 404
        body = foreign.content.decode()
        assert all(bit not in body for bit in secret_bits)
    listing = (await sync_to_async(bob_client.get)("/api/conversations/")).content.decode()
    page = (await sync_to_async(bob_client.get)("/")).content.decode()
    assert all(bit not in listing + page for bit in secret_bits)

    # WebSocket: every frame type that takes an id.
    socket_b = await connect(bob)
    probes = [
        {"type": "send", "client_id": "b1", "conversation": conversation, "text": "hi"},
        {"type": "stop", "reply": reply},
        {"type": "stop", "reply": ack["message"]},
        {"type": "subscribe", "conversation": conversation, "after_seq": 0},
    ]
    for probe in probes:
        await socket_b.send(**probe)
        answer = await socket_b.recv()
        assert answer["type"] == "error" and answer["code"] == "not_found"
        raw = json.dumps(answer)
        assert all(bit not in raw.replace(reply, "") for bit in secret_bits[:2])
    assert await socket_b.nothing()
    # Nothing of alice's changed.
    assert await _everything_of(alice) == before


def test_upstream_errors_that_echo_a_key_are_redacted(settings):
    from conversations.providers.failures import http_error

    settings.CHATSITE_PROVIDERS = {"openai": {"BACKEND": "x", "API_KEY": "sk-live-abcdefghijklmnop"}}
    error = http_error(
        401, "Incorrect API key provided: sk-live-abcdefghijklmnop. Also sk-proj-XYZ123456789."
    )
    assert "abcdefgh" not in error.message and "XYZ123456789" not in error.message
    assert "[redacted]" in error.message and "HTTP 401" in error.message


async def test_the_key_appears_in_no_page_frame_or_log(connect, alice, upstream, caplog):
    caplog.set_level("DEBUG")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    page = (await sync_to_async(client.get)("/")).content.decode()
    socket = await connect(alice)
    for model in (
        "openai/fake?tokens=3&rate=0",
        "openai/fake?status=401",
        "openai/fake?tokens=5&rate=0&fault=reset&after=2",
    ):
        await socket.send(type="send", client_id=uuid.uuid4().hex, text="hi", model=model)
        await socket.recv_until("reply_finished")
    key = "sk-test-key-not-a-secret"
    assert upstream.requests[0].headers["authorization"].endswith(key)  # it was used
    assert key not in page
    assert all(key not in json.dumps(frame) for frame in socket.frames)
    assert key not in caplog.text


async def test_a_socket_that_only_listens_is_closed_when_its_password_changes(
    connect, alice, upstream, settings
):
    settings.CHATSITE_SESSION_RECHECK = 0.2
    watcher = await connect(alice)
    sender = await connect(alice)
    _, started = await start(sender, model="openai/fake?fault=drip&rate=50")
    await watcher.send(type="subscribe", conversation=started["conversation"], after_seq=0)
    assert (await watcher.recv())["type"] == "reply_started"

    def change_password() -> None:
        alice.set_password("a-brand-new-password-42")
        alice.save()

    await sync_to_async(change_password)()
    # No frame from either socket: the timer's re-check ends both.
    for socket in (watcher, sender):
        frames = await socket.recv_until("error")
        assert frames[-1]["code"] == "session_ended"
        closed = await socket.c.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4401}
    await registry.get(started["reply"]).stop()  # it goes on without viewers, by design


async def test_a_socket_that_only_pings_is_closed_when_its_session_expires(
    connect, alice, upstream, settings
):
    settings.CHATSITE_SESSION_RECHECK = 0.2
    socket = await connect(alice)
    from django.contrib.sessions.models import Session

    await sync_to_async(Session.objects.all().delete)()
    await socket.send(type="ping")
    assert (await socket.recv())["type"] == "pong"  # a ping checks nothing: the timer does
    assert (await socket.recv())["code"] == "session_ended"
    assert await socket.c.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
