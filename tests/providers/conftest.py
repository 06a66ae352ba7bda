"""Shared fixtures: one fake upstream for the session, reset before each test."""

from __future__ import annotations

import socket

import pytest

from conversations.providers.http import close_client
from conversations.testing.fakeupstream import FakeUpstream


@pytest.fixture(scope="session")
def fake_server():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def fake(fake_server):
    """The running fake upstream with no requests recorded."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


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
