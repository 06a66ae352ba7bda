"""Model ids as servers list them, and model lists refreshed in the background.

``Listing`` is a small OpenAI-style ``GET /v1/models`` server whose answer a test
controls (ids, a failure, a listing held until released); chat requests go to
the project's fake upstream, which streams for any model id.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import AsyncClient

from conversations import catalog
from conversations.models import Conversation, Message

from .conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

PATH_ID = "/srv/models/x.gguf"


class Listing:
    """``GET /v1/models`` on loopback, answering ``ids`` (or ``status``); ``hold()``
    keeps the next listings waiting until ``release()``."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = list(ids)
        self.status = 200
        self.requests = 0
        self.arrived = threading.Event()
        self._open = threading.Event()
        self._open.set()
        listing = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listing.requests += 1
                listing.arrived.set()
                listing._open.wait(30)
                if self.path != "/v1/models":
                    self.send_error(404)
                    return
                body = json.dumps(
                    {"object": "list", "data": [{"id": i, "object": "model"} for i in listing.ids]}
                    if listing.status == 200
                    else {"error": {"message": "the listing failed"}}
                ).encode()
                self.send_response(listing.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self.arrived.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listing(settings):
    """``Listing`` as the only provider, "openai" (with one configured model)."""
    server = Listing([PATH_ID, "llama3:8b", "Qwen/Qwen2.5-7B-Instruct"])
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": server.base_url,
            "API_KEY": "sk-test-key-not-a-secret",
            "MODELS": ["configured-model"],
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = ""
    settings.CHATSITE_MODELS_REFRESH = 3600.0
    yield server
    server.close()


@pytest.fixture
def closed_port_url():
    """An http:// URL on a loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def logged_in(user) -> AsyncClient:
    client = AsyncClient()
    await database_sync_to_async(client.force_login)(user)
    return client


def page_data(html: str) -> dict:
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the chat page has no page data"
    return json.loads(found.group(1))


# --- a send with the id a server lists ---------------------------------------


async def start(socket, model: str):
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="hello", model=model)
    ack = await socket.recv()
    assert ack["type"] == "ack", ack
    started = await socket.recv()
    assert started["type"] == "reply_started", started
    return ack, started


@pytest.mark.parametrize("listed", [PATH_ID, "llama3:8b", "Qwen/Qwen2.5-7B-Instruct", "models/a.b/c-1.2"])
async def test_a_send_with_a_listed_model_id_reaches_the_server_with_that_id_and_completes(
    connect, alice, upstream, listed
):
    socket = await connect(alice)
    ack, started = await start(socket, f"openai/{listed}")
    frames = await socket.recv_until("reply_finished")

    assert frames[-1]["status"] == "complete", frames[-1]
    chat = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert [r.body["model"] for r in chat] == [listed]
    reply = await sync_to_async(Message.objects.get)(pk=started["reply"])
    assert (reply.provider, reply.model, reply.content) == ("openai", listed, deltas_text(frames))
    conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert conversation.model == f"openai/{listed}"

    # The next message of that conversation (no model named) goes on with it.
    await socket.send(
        type="send", client_id=uuid.uuid4().hex, conversation=ack["conversation"], text="more", model=None
    )
    await socket.recv_until("reply_finished")
    chat = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert [r.body["model"] for r in chat] == [listed, listed]


async def test_a_path_shaped_id_of_a_provider_that_is_not_configured_is_refused_as_unknown(
    connect, alice, upstream
):
    socket = await connect(alice)
    await socket.send(type="send", client_id="c-1", conversation=None, text="hello", model="nope//srv/x.gguf")
    error = await socket.recv()

    assert (error["type"], error["code"], error["ref"]) == ("error", "unknown_model", "c-1")
    assert await sync_to_async(Message.objects.count)() == 0


# --- /api/models/ and the chat page ------------------------------------------


async def test_the_models_api_needs_a_logged_in_user(listing):
    response = await AsyncClient().get("/api/models/")

    assert response.status_code == 401
    assert response.json() == {"error": "not_authenticated", "message": "log in first"}
    assert listing.requests == 0


async def test_the_models_api_lists_every_listed_id_the_default_and_each_providers_state(alice, listing):
    await catalog.model_refresh()
    client = await logged_in(alice)
    response = await client.get("/api/models/")

    assert response.status_code == 200
    data = response.json()
    assert [m["id"] for m in data["models"]] == [
        "openai/configured-model",
        f"openai/{PATH_ID}",
        "openai/llama3:8b",
        "openai/Qwen/Qwen2.5-7B-Instruct",
    ]
    assert all(set(m) == {"id", "label", "description", "vision"} for m in data["models"])
    assert data["default"] == "openai/configured-model"
    state = data["providers"]["openai"]
    assert state["reachable"] is True and state["error_kind"] is None and state["unreachable_since"] is None
    assert state["listed_at"] == state["checked_at"] is not None
    assert listing.requests == 1  # the request itself listed nothing


async def test_a_failed_refresh_keeps_the_last_good_list_and_says_since_when_the_provider_is_unreachable(
    alice, listing
):
    await catalog.model_refresh()
    listing.status = 500
    await catalog.model_refresh()
    first_failure = (await (await logged_in(alice)).get("/api/models/")).json()
    await catalog.model_refresh()
    data = (await (await logged_in(alice)).get("/api/models/")).json()

    assert f"openai/{PATH_ID}" in [m["id"] for m in data["models"]]
    assert len(data["models"]) == 4
    state = data["providers"]["openai"]
    assert state["reachable"] is False
    assert state["error_kind"] == "upstream_http"
    assert "HTTP 500" in state["error"]
    # "since" is the first failure, not the latest one; the last good listing stays known.
    assert state["unreachable_since"] == first_failure["providers"]["openai"]["unreachable_since"]
    assert state["listed_at"] is not None and state["listed_at"] <= state["unreachable_since"]

    listing.status = 200
    await catalog.model_refresh()
    state = (await (await logged_in(alice)).get("/api/models/")).json()["providers"]["openai"]
    assert state["reachable"] is True and state["unreachable_since"] is None


async def test_a_provider_that_refuses_connections_is_marked_unreachable_with_its_configured_models(
    alice, settings, closed_port_url
):
    settings.CHATSITE_PROVIDERS = {
        "openai": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": closed_port_url + "/v1",
            "MODELS": ["configured-model"],
        }
    }
    await catalog.model_refresh()
    data = (await (await logged_in(alice)).get("/api/models/")).json()

    assert [m["id"] for m in data["models"]] == ["openai/configured-model"]
    assert data["providers"]["openai"]["reachable"] is False
    assert data["providers"]["openai"]["error_kind"] == "upstream_connect"


async def test_a_stalled_listing_does_not_delay_the_chat_page_or_the_models_api(alice, listing):
    client = await logged_in(alice)
    listing.hold()
    try:
        # A fresh process: the first reader starts the background listing, which
        # the server holds. The page and the API answer while it is held (before
        # the change the page waited for the listing, up to its 5 s timeout).
        page = await asyncio.wait_for(client.get("/"), 4)
        api = await asyncio.wait_for(client.get("/api/models/"), 4)
        assert await asyncio.to_thread(listing.arrived.wait, 10), "the background listing never started"
        assert not listing._open.is_set()
    finally:
        listing.release()

    assert page.status_code == 200
    data = page_data(page.content.decode())
    assert [m["id"] for m in data["models"]] == ["openai/configured-model"]
    assert data["model_providers"]["openai"]["reachable"] is None  # not listed yet
    assert api.json()["providers"]["openai"]["reachable"] is None

    # Once the held listing answers, the next reader has the full list.
    await catalog.model_list_settled(timeout=10)
    data = (await client.get("/api/models/")).json()
    assert f"openai/{PATH_ID}" in [m["id"] for m in data["models"]]
    assert listing.requests == 1


async def test_the_chat_page_offers_the_last_good_list_with_a_path_shaped_default(alice, settings, listing):
    listing.ids = [PATH_ID, "llama3:8b"]
    settings.CHATSITE_PROVIDERS["openai"]["MODELS"] = []
    await catalog.model_refresh()
    client = await logged_in(alice)
    data = page_data((await client.get("/")).content.decode())

    assert [m["id"] for m in data["models"]] == [f"openai/{PATH_ID}", "openai/llama3:8b"]
    assert data["default_model"] == f"openai/{PATH_ID}"
    assert data["model_providers"]["openai"]["reachable"] is True
    assert listing.requests == 1


# --- single-stream servers ----------------------------------------------------


async def test_a_single_stream_provider_is_not_listed_while_it_streams(connect, alice, settings, upstream):
    settings.CHATSITE_PROVIDERS["openai"]["SINGLE_STREAM"] = True
    settings.CHATSITE_MODELS_REFRESH = 3600.0
    await catalog.model_refresh()
    listings = lambda: [r for r in upstream.requests if r.path == "/v1/models"]  # noqa: E731
    assert len(listings()) == 1

    socket = await connect(alice)
    _, started = await start(socket, "openai/fake?tokens=50&rate=20")
    await socket.recv_until("delta")
    await catalog.model_refresh()  # while it streams: skipped
    assert len(listings()) == 1
    assert catalog.provider_state_list()["openai"]["reachable"] is True  # the last list stands

    await socket.send(type="stop", reply=started["reply"])
    await socket.recv_until("reply_finished")
    await catalog.model_refresh()  # idle again: listed
    assert len(listings()) == 2


async def test_a_provider_without_the_single_stream_option_is_listed_while_it_streams(
    connect, alice, settings, upstream
):
    settings.CHATSITE_MODELS_REFRESH = 3600.0
    socket = await connect(alice)
    _, started = await start(socket, "openai/fake?tokens=50&rate=20")
    await socket.recv_until("delta")
    await catalog.model_refresh()

    assert len([r for r in upstream.requests if r.path == "/v1/models"]) == 1
    await socket.send(type="stop", reply=started["reply"])
    await socket.recv_until("reply_finished")


async def test_a_send_without_a_model_on_a_fresh_process_waits_for_the_first_listing_and_uses_its_first_model(
    connect, alice, upstream, settings
):
    settings.CHATSITE_DEFAULT_MODEL = ""
    settings.CHATSITE_PROVIDERS["openai"]["MODELS"] = []
    socket = await connect(alice)
    await socket.send(type="send", client_id="c-1", conversation=None, text="hello", model=None)
    frames = await socket.recv_until("reply_finished")

    assert frames[-1]["status"] == "complete"
    assert [r.path for r in upstream.requests] == ["/v1/models", "/v1/chat/completions"]
    assert upstream.requests[-1].body["model"] == "fake"
