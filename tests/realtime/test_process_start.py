"""A server process is ready when it starts, not when its first socket connects.

The sweep of replies left ``streaming`` by a dead process (and the heartbeat,
and the command listener) start with a bare ``daphne chatsite.asgi:application``,
before any request reaches it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.processes import Daphne, until
from tests.processes import open_socket as _open

pytestmark = pytest.mark.slow
USER, PASSWORD = "gus", "process-start-pw-1"
REPLIES = 5


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="chatsite-start-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_server(data_dir: Path, fake) -> Daphne:
    return Daphne(
        data_dir,
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_MODELS": "fake",
            "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
            "CHATSITE_MAX_CONCURRENT_REPLIES": str(REPLIES),
        },
    )


def statuses(server: Daphne, reply_ids: list[str]) -> dict[str, str]:
    return {
        reply_id: server.query(
            "select status from conversations_message where id = ?", uuid.UUID(reply_id).hex
        )[0][0]
        for reply_id in reply_ids
    }


async def test_a_bare_daphne_sweeps_a_killed_process_replies_before_any_request(data_dir, fake_upstream):
    killed = make_server(data_dir, fake_upstream)
    killed.start()
    killed.create_user(USER, PASSWORD)
    replies: dict[str, str] = {}  # reply -> conversation
    try:
        ws = await _open(killed, USER, PASSWORD)
        for n in range(REPLIES):
            send = {
                "type": "send",
                "client_id": f"s{n}",
                "text": "go",
                "model": "openai/fake?fault=drip&rate=40",
            }
            await ws.send(json.dumps(send))
            frames = await until(ws, "reply_started")
            replies[frames[-1]["reply"]] = frames[-1]["conversation"]
        await until(ws, "delta")
        killed.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(killed.proc.wait, 10)
    finally:
        killed.stop()
    assert set(statuses(killed, list(replies)).values()) == {"streaming"}  # nobody could say otherwise yet

    restarted = make_server(data_dir, fake_upstream)
    restarted.spawn()  # a bare daphne; not one request is made to it until the sweep is seen
    try:
        deadline = time.monotonic() + 30
        while set(statuses(restarted, list(replies)).values()) != {"interrupted"}:
            assert restarted.proc.poll() is None, restarted.log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"still {statuses(restarted, list(replies))}"
            await asyncio.sleep(0.05)
        # And the HTTP reads (no WebSocket has connected) say so too.
        cookie = await asyncio.to_thread(restarted.login_cookie, USER, PASSWORD)
        async with httpx.AsyncClient(base_url=restarted.url, headers={"Cookie": cookie}) as client:
            for reply_id, conversation in replies.items():
                body = (await client.get(f"/api/conversations/{conversation}/")).json()
                (reply,) = [m for m in body["messages"] if m["id"] == reply_id]
                assert reply["status"] == "interrupted"
    finally:
        restarted.stop()
