"""Streaming an SSE response over the shared client, with errors mapped to kinds;
or the whole JSON answer of a request that does not stream.

Either is read inside the client's ``stream()`` context: cancelling the task
that reads (a Stop, a timeout) closes the upstream connection at once,
whether the body is streaming or still pending, and a pooled connection is
never left half read.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from conversations.providers.failures import ProviderError, http_error
from conversations.providers.http import connection_tracked, get_client

MAX_ERROR_BODY = 2000
#: The largest whole JSON answer read (a reply is at most CHATSITE_MAX_REPLY_CHARS anyway).
MAX_JSON_BODY = 16 * 1024 * 1024


class JsonAnswer(Exception):
    """A streaming request answered 2xx with a JSON body instead of an event
    stream (some proxies and batch gateways do): the provider reads ``data``
    as a whole answer. Raised before any event, so nothing was yielded yet."""

    def __init__(self, data: Any) -> None:
        super().__init__("the upstream answered with a JSON body")
        self.data = data


async def sse_events(
    url: str, *, body: dict[str, Any], headers: dict[str, str], accept: str = "text/event-stream"
) -> AsyncGenerator[ServerSentEvent, None]:
    """POST ``body`` as JSON and yield the response's server-sent events.

    The stream is opened with ``async with``: cancelling the task that
    iterates this generator (or closing the generator) closes the upstream
    connection at once, whether the body streams or is still pending. A 2xx
    answer with a JSON body raises :class:`JsonAnswer` (read whole) before any
    event: the answer of a request with streaming off (``accept``
    ``application/json``), or of a server that answers a stream request so.
    A server that streams although asked not to is read as the stream it is.
    """
    client = get_client()
    receiving = False  # past the response headers: any failure is a broken stream
    try:
        async with client.stream("POST", url, json=body, headers={"Accept": accept, **headers}) as response:
            receiving = True
            with connection_tracked(response):  # a Stop can shut it at once
                await _raise_for_status(response)
                if _is_json(response):
                    raise JsonAnswer(await _json_body(response))
                async for event in EventSource(response).aiter_sse():
                    yield event
    except (ProviderError, JsonAnswer):
        raise
    except SSEError as exc:
        raise ProviderError(
            "upstream_stream", f"the upstream did not send an event stream: {exc}", cause="not_sse"
        ) from None
    except httpx.TransportError as exc:
        raise _transport_error(exc, receiving=receiving) from None


async def _raise_for_status(response: httpx.Response) -> None:
    """An HTTP error status as its :class:`ProviderError`, with a short detail from the body."""
    if response.status_code < 400:
        return
    raw = b""
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) >= MAX_ERROR_BODY:
            break
    raise http_error(
        response.status_code,
        _error_detail(raw[:MAX_ERROR_BODY]),
        response.headers.get("retry-after"),
    )


def _is_json(response: httpx.Response) -> bool:
    media_type = str(response.headers.get("content-type", "")).partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _json_body(response: httpx.Response) -> Any:
    """The response's body as JSON (read whole, at most :data:`MAX_JSON_BODY` bytes)."""
    raw = bytearray()
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > MAX_JSON_BODY:
            raise ProviderError(
                "upstream_error", "the upstream's answer is larger than chatsite reads", cause="malformed"
            )
    try:
        return json.loads(raw)
    except ValueError:
        raise ProviderError(
            "upstream_error", "the upstream's answer is not the JSON expected", cause="malformed"
        ) from None


def _transport_error(exc: httpx.TransportError, *, receiving: bool) -> ProviderError:
    """A transport failure as its kind: before the response headers, the
    connection could not be made; after them, it broke."""
    if isinstance(exc, httpx.ReadTimeout):
        return ProviderError("timeout_idle", "the upstream stopped sending data")
    if receiving:
        return ProviderError(
            "upstream_stream",
            f"the upstream connection broke ({type(exc).__name__})",
            retryable=True,
            cause="broken",
        )
    cause = "pool" if isinstance(exc, httpx.PoolTimeout) else connect_cause(exc)
    return ProviderError(
        "upstream_connect", f"could not connect to the upstream ({cause})", retryable=True, cause=cause
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``)."""
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen and len(seen) < 16:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def connect_cause(exc: BaseException) -> str:
    """Why a connection could not be made, from the exception's underlying cause
    (one of ``errors.CONNECT_CAUSES``).

    The httpx-aiohttp transport maps every aiohttp connection error to
    ``httpx.ConnectTimeout``, a refused port included; the aiohttp exception
    (and the ``OSError`` under it) stays as the ``__cause__``, so that is what
    decides.
    """
    chain = _chain(exc)
    if any(isinstance(e, (aiohttp.ClientConnectorDNSError, socket.gaierror)) for e in chain):
        return "dns"
    if any(isinstance(e, (ssl.SSLError, aiohttp.ClientSSLError)) for e in chain):
        return "tls"
    if any(
        isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED
        for e in chain
    ):
        return "refused"
    if any(getattr(e, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH) for e in chain):
        return "unreachable"
    # aiohttp's connect timeouts are TimeoutErrors (asyncio's is the builtin since 3.11).
    if any(isinstance(e, TimeoutError) for e in chain) or (
        len(chain) == 1 and isinstance(exc, httpx.TimeoutException)
    ):
        return "timeout"
    if any(isinstance(e, (aiohttp.ServerDisconnectedError, ConnectionResetError)) for e in chain):
        return "disconnected"
    return "other"


def _error_detail(raw: bytes) -> str:
    """A short, safe description from an upstream error body."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:300]
    return text[:300]


def load_json(event: ServerSentEvent) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        raise ProviderError(
            "upstream_stream", "the upstream sent a malformed event (not JSON)", cause="malformed"
        ) from None


def load_object(event: ServerSentEvent) -> dict[str, Any]:
    data = load_json(event)
    if not isinstance(data, dict):
        raise ProviderError(
            "upstream_stream", "the upstream sent a malformed event (not an object)", cause="malformed"
        )
    return data
