"""One shared httpx.AsyncClient per process (per event loop).

Its timeout and pool size are the process's (``CHATSITE_HTTP_TIMEOUT``,
``CHATSITE_HTTP_MAX_CONNECTIONS``): ``providers/__init__.py`` hands them over
with :func:`http_configure`; a client made afterwards uses them.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

import httpx
from httpx_aiohttp import AiohttpTransport


@dataclass(frozen=True, slots=True)
class HttpOptions:
    #: Seconds to connect, to write a request, and to wait for a free connection
    #: (None: no limit).
    timeout: float | None = 10.0
    #: The shared pool's size (every provider's upstream streams together).
    max_connections: int = 1000


_options = HttpOptions()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def http_configure(*, options: HttpOptions) -> None:
    """The options of every client made from now on."""
    global _options
    _options = options


def timeouts() -> httpx.Timeout:
    # No read timeout: the reply runner enforces the first-token, idle and
    # total timeouts itself (one timer per reply, each with its own error
    # kind). A read timeout would cost a timer per chunk read: aiohttp
    # re-arms it on every chunk, about 5 % of the CPU of streaming under load.
    # Other requests (listing models) pass a timeout of their own.
    return httpx.Timeout(connect=_options.timeout, read=None, write=_options.timeout, pool=_options.timeout)


def get_client() -> httpx.AsyncClient:
    """The process's shared client for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limit = _options.max_connections
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
