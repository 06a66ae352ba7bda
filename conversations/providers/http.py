"""One shared httpx.AsyncClient per process (per event loop).

Its timeout and pool size are the process's (``CHATSITE_HTTP_TIMEOUT``,
``CHATSITE_HTTP_MAX_CONNECTIONS``): ``providers/__init__.py`` hands them over
with :func:`http_configure`; a client made afterwards uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

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


class _Transport(AiohttpTransport):
    """aiohttp's transport, telling each response the socket it arrives on
    (``extensions["socket"]``), so that a Stop can shut it at once."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        answer: Any = getattr(response.stream, "_aiohttp_response", None)
        connection = getattr(answer, "connection", None)
        transport = getattr(connection, "transport", None)
        if transport is not None:
            response.extensions["socket"] = transport.get_extra_info("socket")
        return response


class Connections:
    """The upstream connections a task has open (:func:`connection_tracked`),
    so that code outside the task can shut them at once (:meth:`shut`).

    Cancelling a task closes its connection only once the task runs again,
    and the socket goes one loop iteration after that: under load, each
    iteration is the time every other ready callback takes. A shut socket
    sends its FIN now; the task's own cleanup then finds it closed.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[int, Any] = {}

    def shut(self) -> None:
        for sock in list(self._open.values()):
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)


_connections: ContextVar[Connections | None] = ContextVar("chatsite_upstream_connections", default=None)


def connections_track() -> Connections:
    """Track the upstream connections the running task opens from now on."""
    tracked = Connections()
    _connections.set(tracked)
    return tracked


@contextlib.contextmanager
def connection_tracked(response: httpx.Response) -> Iterator[None]:
    """While the block runs, ``response``'s connection is among the running
    task's tracked ones (if its task tracks any: :func:`connections_track`)."""
    tracked = _connections.get()
    sock = response.extensions.get("socket")
    if tracked is None or sock is None:
        yield
        return
    tracked._open[id(sock)] = sock
    try:
        yield
    finally:
        tracked._open.pop(id(sock), None)


def get_client() -> httpx.AsyncClient:
    """The process's shared client for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limit = _options.max_connections
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        client = httpx.AsyncClient(
            # Same httpx API, aiohttp underneath: about half the CPU per SSE event.
            transport=_Transport(limits=limits, trust_env=False),
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
