"""The WebSocket's ASGI middleware: who is on the other end."""

from __future__ import annotations

from importlib import import_module

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware
from django.conf import settings


class ReadOnlySessionMiddleware:
    """Put the handshake's Django session into the scope, for reading only.

    Channels' ``SessionMiddleware`` also wraps ``send``, so that an HTTP
    response can save a changed session; that wrapper runs on every frame a
    socket sends (about 5 % of the app's CPU while streaming under load). The
    chat socket never changes its session, so this one leaves ``send`` alone.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if "session" not in scope:
            key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
            store = import_module(settings.SESSION_ENGINE).SessionStore
            scope = dict(scope, session=store(key))
        return await self.inner(scope, receive, send)


def WebSocketAuthStack(inner):
    """Cookies, the session (read only) and ``scope["user"]``, as ``AuthMiddlewareStack`` gives."""
    return CookieMiddleware(ReadOnlySessionMiddleware(AuthMiddleware(inner)))
