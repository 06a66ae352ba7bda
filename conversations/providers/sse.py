"""Streaming an SSE response over the shared client, with errors mapped to kinds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from .base import ProviderError, http_error
from .http import get_client

MAX_ERROR_BODY = 2000


async def sse_events(
    url: str, *, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[ServerSentEvent]:
    """POST ``body`` as JSON and yield the response's server-sent events.

    The stream is opened with ``async with``: cancelling the task that
    iterates this generator (or closing the generator) closes the upstream
    connection at once.
    """
    client = get_client()
    receiving = False  # past the response headers: any failure is a broken stream
    try:
        async with client.stream(
            "POST", url, json=body, headers={"Accept": "text/event-stream", **headers}
        ) as response:
            receiving = True
            if response.status_code >= 400:
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
            async for event in EventSource(response).aiter_sse():
                yield event
    except ProviderError:
        raise
    except SSEError as exc:
        raise ProviderError("upstream_stream", f"the upstream did not send an event stream: {exc}") from None
    except httpx.ReadTimeout:
        raise ProviderError("timeout_idle", "the upstream stopped sending data") from None
    except httpx.TransportError as exc:
        if receiving:
            raise ProviderError(
                "upstream_stream", f"the upstream connection broke ({type(exc).__name__})", retryable=True
            ) from None
        if isinstance(exc, httpx.PoolTimeout):
            raise ProviderError(
                "upstream_connect", "no upstream connection was free in time", retryable=True
            ) from None
        raise ProviderError(
            "upstream_connect", f"could not connect to the upstream ({type(exc).__name__})", retryable=True
        ) from None


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
            return err["message"][:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data.get("message"), str):
            return data["message"][:300]
    return text[:300]


def load_json(event: ServerSentEvent) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        raise ProviderError("upstream_stream", "the upstream sent a malformed event (not JSON)") from None


def load_object(event: ServerSentEvent) -> dict[str, Any]:
    data = load_json(event)
    if not isinstance(data, dict):
        raise ProviderError("upstream_stream", "the upstream sent a malformed event (not an object)")
    return data
