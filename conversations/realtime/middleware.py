"""The WebSocket's ASGI middleware: who is on the other end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddleware
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from conversations.realtime.outbox import Send

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ReadOnlySessionMiddleware:
    """Put the handshake's Django session into the scope, for reading only.

    Channels' ``SessionMiddleware`` also wraps ``send``, so that an HTTP
    response can save a changed session; that wrapper runs on every frame a
    socket sends (about 5 % of the app's CPU while streaming under load). The
    chat socket never changes its session, so this one leaves ``send`` alone.
    """

    def __init__(self, inner: App) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "session" not in scope:
            key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
            store = import_module(settings.SESSION_ENGINE).SessionStore
            scope = dict(scope, session=store(key))
        await self.inner(scope, receive, send)


def WebSocketAuthStack(inner: App) -> App:
    """Cookies, the session (read only) and ``scope["user"]``, as ``AuthMiddlewareStack`` gives."""
    stack: App = CookieMiddleware(ReadOnlySessionMiddleware(AuthMiddleware(inner)))
    return stack


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(value: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, host, port), or None if it is not one."""
    try:
        parsed = urlsplit(value.strip())
        port = parsed.port
    except ValueError:
        return None
    scheme, host = parsed.scheme.lower(), (parsed.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parsed.path not in ("", "/") or parsed.username:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _header(scope: Scope, name: bytes) -> str | None:
    key: bytes
    value: bytes
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def site_origin(scope: Scope) -> tuple[str, str, int] | None:
    """The origin the handshake was addressed to, as Django sees a request: its
    scheme (``wss``, or ``SECURE_PROXY_SSL_HEADER`` behind a proxy) and its ``Host``
    (``X-Forwarded-Host`` with ``USE_X_FORWARDED_HOST``), which must be allowed by
    ``ALLOWED_HOSTS``."""
    secure = scope.get("scheme") in ("wss", "https")
    if settings.SECURE_PROXY_SSL_HEADER:
        header, expected = settings.SECURE_PROXY_SSL_HEADER
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        forwarded = _header(scope, name)
        if forwarded is not None:
            secure = forwarded.split(",")[0].strip() == expected
    host = (settings.USE_X_FORWARDED_HOST and _header(scope, b"x-forwarded-host")) or _header(scope, b"host")
    if not host:
        return None
    host = host.split(",")[0].strip()
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed):
        return None
    return _origin_parts(f"{'https' if secure else 'http'}://{host}")


def _trusted(origin: tuple[str, str, int], pattern: str) -> bool:
    """One entry of ``CSRF_TRUSTED_ORIGINS``: exact, or ``scheme://*.domain[:port]``."""
    wildcard = "://*." in pattern
    parts = _origin_parts(pattern.replace("://*.", "://", 1) if wildcard else pattern)
    if parts is None:
        return False
    scheme, host, port = parts
    if (origin[0], origin[2]) != (scheme, port):
        return False
    return origin[1] == host or (wildcard and origin[1].endswith("." + host))


class OriginValidator:
    """Open a WebSocket only for a page of this site.

    The handshake's ``Origin`` must be the site's own origin (scheme, host and
    port, as the handshake was addressed) or one of ``CSRF_TRUSTED_ORIGINS``
    (``DJANGO_CSRF_TRUSTED_ORIGINS``). Anything else, including no Origin, is
    refused with 403 before the socket opens: another service on the same host
    name (another port, or plain http beside https) must not chat with a
    visitor's cookies.
    """

    def __init__(self, inner: App) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            await WebsocketDenier()(scope, receive, send)
            return
        await self.inner(scope, receive, send)


def origin_allowed(scope: Scope) -> bool:
    raw = _header(scope, b"origin")
    origin = _origin_parts(raw) if raw else None
    if origin is None:
        return False
    if origin == site_origin(scope):
        return True
    return any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)
