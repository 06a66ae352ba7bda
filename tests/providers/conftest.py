"""The providers' fixtures (the fake upstream itself, ``fake``, is in tests/conftest.py)."""

from __future__ import annotations

import socket

import pytest

from conversations.providers.http import close_client


@pytest.fixture(autouse=True)
async def _close_http_client():
    """The shared httpx client is per event loop: close it before the test's loop goes."""
    yield
    await close_client()


@pytest.fixture
def closed_port_url():
    """An http:// URL on a local port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
