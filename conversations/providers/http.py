"""One shared httpx.AsyncClient per process (per event loop)."""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def timeouts() -> httpx.Timeout:
    # No read timeout: the reply runner enforces the first-token, idle and
    # total timeouts itself (one timer per reply, each with its own error
    # kind). A read timeout would cost a timer per chunk read: aiohttp
    # re-arms it on every chunk, about 5 % of the CPU of streaming under load.
    # Other requests (listing models) pass a timeout of their own.
    return httpx.Timeout(
        connect=settings.CHATSITE_HTTP_CONNECT_TIMEOUT,
        read=None,
        write=settings.CHATSITE_HTTP_WRITE_TIMEOUT,
        pool=settings.CHATSITE_HTTP_POOL_TIMEOUT,
    )


def get_client() -> httpx.AsyncClient:
    """The process's shared client for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limit = settings.CHATSITE_HTTP_MAX_CONNECTIONS
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        client = httpx.AsyncClient(
            # Same httpx API, aiohttp underneath: about half the CPU per SSE event.
            transport=AiohttpTransport(limits=limits, trust_env=False),
            timeout=timeouts(),
            limits=limits,
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


async def close_client() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()
