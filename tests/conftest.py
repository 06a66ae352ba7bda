"""Shared fixtures: users, a logged-in WebSocket, and the fake upstream."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from conversations.providers.http import close_client
from conversations.realtime import capacity, protocol
from conversations.realtime.registry import registry
from conversations.testing.fakeupstream import FakeUpstream
from tests import factories


@pytest.fixture(scope="session")
def fake_upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_upstream):
    """The session's fake upstream with no requests recorded (the tests that speak
    to it directly: the providers' and the fake's own)."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture
def upstream(fake_upstream, settings):
    """The fake upstream as the only provider ("openai"), fast timers for tests."""
    fake_upstream.reset()
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": fake_upstream.openai_base_url,
            "API_KEY": "sk-test-key-not-a-secret",
            "MODELS": ["fake"],
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = "openai/fake"
    settings.CHATSITE_CHECKPOINT_INTERVAL = 0.2
    settings.CHATSITE_RETRY_BACKOFF = 0.05
    return fake_upstream


@pytest.fixture
async def clean_loop_state():
    yield
    # Nothing may outlive a test: no reply task, no open upstream client.
    leftover = [r for r in registry.by_id.values() if r.task and not r.task.done()]
    for reply in leftover:
        await reply.stop()
    await close_client()
    capacity.capacity_reset()  # lanes hold futures of this test's loop
    assert not leftover, f"replies left running: {[r.key for r in leftover]}"


@pytest.fixture
def alice(transactional_db):
    return factories.user("alice")


@pytest.fixture
def bob(transactional_db):
    return factories.user("bob")


class Socket:
    """A logged-in WebsocketCommunicator that checks every server frame."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.c = communicator
        self.connected = False  # whether the handshake was accepted
        self.frames: list[dict] = []

    async def send(self, **frame) -> None:
        await self.c.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.c.send_to(text_data=text, bytes_data=data)

    async def recv(self, timeout: float = 5.0) -> dict:
        raw = await self.c.receive_from(timeout=timeout)
        frame = json.loads(raw)
        protocol.check_server_frame(frame)
        self.frames.append(frame)
        return frame

    async def recv_until(self, kind: str, timeout: float = 10.0) -> list[dict]:
        """Frames up to and including the first of type ``kind``."""
        got: list[dict] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no {kind!r} frame within {timeout}s; got {got}")
            frame = await self.recv(timeout=left)
            got.append(frame)
            if frame["type"] == kind:
                return got

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.c.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.c.disconnect()


@pytest.fixture
async def connect():
    """``await connect(user)`` opens a logged-in socket through the real ASGI stack."""
    from chatsite.asgi import application

    opened: list[Socket] = []

    async def _connect(
        user, origin: bytes | None = b"http://localhost", host: bytes = b"localhost", extra=()
    ) -> Socket:
        """``host``: the handshake's Host header (the site's own origin is http://localhost)."""
        headers = [(b"host", host), *extra]
        if user is not None:
            client = Client()
            await sync_to_async(client.force_login)(user)
            headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
        if origin is not None:
            headers.append((b"origin", origin))
        communicator = WebsocketCommunicator(application, protocol.PATH, headers=headers)
        connected, _ = await communicator.connect()
        socket = Socket(communicator)
        socket.connected = connected
        opened.append(socket)
        return socket

    yield _connect
    for socket in opened:
        try:
            await socket.c.disconnect()
        except Exception:  # already closed by the test
            pass


def deltas_text(frames: list[dict], reply: str | None = None) -> str:
    return "".join(
        f["text"] for f in frames if f["type"] == "delta" and (reply is None or f["reply"] == reply)
    )
