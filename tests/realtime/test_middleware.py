"""The WebSocket's middleware: the session and user in the scope, ``send`` untouched."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from conversations.realtime.middleware import WebSocketAuthStack

pytestmark = pytest.mark.django_db(transaction=True)


async def _scope_seen(cookie: str | None) -> tuple[dict, object, object]:
    seen: dict = {}

    async def inner(scope, receive, send):
        seen["scope"], seen["send"] = scope, send
        # Resolve the lazy user the way a consumer does.
        seen["user"] = await sync_to_async(lambda: scope["user"]._wrapped if scope["user"] else None)()
        seen["is_authenticated"] = await sync_to_async(lambda: scope["user"].is_authenticated)()
        seen["username"] = await sync_to_async(lambda: getattr(scope["user"], "username", ""))()

    async def send(message):  # pragma: no cover - never called
        raise AssertionError(message)

    async def receive():  # pragma: no cover - never called
        raise AssertionError("receive")

    headers = [(b"cookie", cookie.encode())] if cookie else []
    await WebSocketAuthStack(inner)({"type": "websocket", "headers": headers}, receive, send)
    return seen, send, receive


async def test_logged_in_socket_gets_its_session_and_user_and_the_servers_own_send(alice):
    client = Client()
    await sync_to_async(client.force_login)(alice)
    key = client.cookies["sessionid"].value
    seen, send, _ = await _scope_seen(f"sessionid={key}")
    assert seen["send"] is send  # not wrapped: nothing runs per frame sent
    assert seen["scope"]["session"].session_key == key
    assert seen["is_authenticated"] is True and seen["username"] == "alice"


async def test_no_or_unknown_session_is_anonymous():
    for cookie in (None, "sessionid=not-a-real-session"):
        seen, _, _ = await _scope_seen(cookie)
        assert seen["is_authenticated"] is False
        assert isinstance(seen["user"], AnonymousUser)
