"""Each daphne counts its own replies and sockets: scraped on its own port with
the token (docs/deploy.md, "Metrics"), two processes tell what each did."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from tests.processes import open_socket, two_daphnes, until
from tests.views.test_metrics import samples

pytestmark = pytest.mark.slow
USER, PASSWORD = "mira", "metrics-process-pw-1"
TOKEN = "a-scrape-token-for-two-processes"
MODEL = "fake?tokens=7&rate=0"


@pytest.fixture
def daphnes(fake_upstream):
    env = {
        "OPENAI_BASE_URL": fake_upstream.openai_base_url,
        "OPENAI_MODELS": MODEL,
        "CHATSITE_METRICS_TOKEN": TOKEN,
    }
    with two_daphnes(env, prefix="chatsite-metrics-", user=(USER, PASSWORD)) as servers:
        yield servers


def scrape(server) -> dict:
    answer = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == 200, answer.status_code
    return samples(answer.text)


async def test_each_process_is_scraped_on_its_own_port_and_counts_only_its_own(daphnes):
    first, second = daphnes
    ws = await open_socket(first, USER, PASSWORD)
    try:
        send = {"type": "send", "client_id": uuid.uuid4().hex, "conversation": None, "text": "hi"}
        await ws.send(json.dumps({**send, "model": f"openai/{MODEL}"}))
        frames = await until(ws, "reply_finished")
        assert frames[-1]["status"] == "complete"
        here, there = await asyncio.gather(
            asyncio.to_thread(scrape, first), asyncio.to_thread(scrape, second)
        )
    finally:
        await ws.close()
    started = ("chatsite_replies_started_total", (("model", MODEL), ("provider", "openai")))
    assert here[started] == 1 and started not in there
    assert here[("chatsite_websocket_connections", ())] == 1
    assert there[("chatsite_websocket_connections", ())] == 0
    tokens = ("chatsite_completion_tokens_total", (("model", MODEL), ("provider", "openai")))
    assert here[tokens] == 7
    # Without the token, neither process reveals the endpoint.
    hidden = await asyncio.to_thread(httpx.get, f"{second.url}/metrics", timeout=5)
    assert hidden.status_code == 404
