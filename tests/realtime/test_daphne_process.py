"""Behaviour that needs a real daphne process: signals and real frame sizes."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest
import websockets

from chatsite.settings import frame_bytes_limit
from conversations.realtime import protocol
from tests.processes import Daphne, until
from tests.processes import open_socket as _open

pytestmark = pytest.mark.slow
USER, PASSWORD = "dora", "daphne-process-pw-1"


@pytest.fixture
def daphne(fake_upstream):
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-daphne-"))
    server = Daphne(
        data_dir,
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_MODELS": "fake",
            "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
        },
    )
    try:
        server.start()
        server.create_user(USER, PASSWORD)
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def open_socket(server):
    return await _open(server, USER, PASSWORD)


async def test_sigterm_mid_reply_saves_it_as_interrupted_with_every_token_sent(daphne, fake_upstream):
    ws = await open_socket(daphne)
    await ws.send(
        json.dumps(
            {"type": "send", "client_id": "t1", "text": "go", "model": "openai/fake?fault=drip&rate=40"}
        )
    )
    frames = await until(ws, "delta")
    frames += [json.loads(await ws.recv()) for _ in range(5)]
    reply_id = frames[-1]["reply"]
    daphne.proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(15):
            async for raw in ws:
                frames.append(json.loads(raw))
    except websockets.ConnectionClosed:
        pass
    code = await asyncio.to_thread(daphne.proc.wait, 15)
    assert code == 0, daphne.log.read_text()[-2000:]
    ((content, status, last_seq),) = daphne.query(
        "select content, status, last_seq from conversations_message where id = ?",
        uuid.UUID(reply_id).hex,
    )
    assert status == "interrupted"
    received = "".join(f["text"] for f in frames if f["type"] == "delta")
    # The client was told, and what it saw is exactly what was saved.
    finished = [f for f in frames if f["type"] == "reply_finished"]
    assert finished and finished[0]["status"] == "interrupted"
    assert content == received
    assert last_seq == finished[0]["last_seq"]


async def test_a_megabyte_frame_is_refused_and_the_socket_stays_usable(daphne):
    ws = await open_socket(daphne)
    await ws.send("x" * 1_000_000)
    frame = json.loads(await ws.recv())
    assert frame["type"] == "error" and frame["code"] == "frame_too_large"
    await ws.send(
        json.dumps(
            {
                "type": "send",
                "client_id": "after-big",
                "text": "still there?",
                "model": "openai/fake?tokens=3&rate=0",
            }
        )
    )
    frames = await until(ws, "reply_finished")
    assert frames[0]["type"] == "ack" and frames[-1]["status"] == "complete"
    await ws.close()


async def test_anonymous_and_foreign_origin_handshakes_are_refused(daphne):
    url = daphne.url.replace("http", "ws") + protocol.PATH
    with pytest.raises(websockets.InvalidStatus) as anonymous:
        await websockets.connect(url, additional_headers={"Origin": daphne.url})
    assert anonymous.value.response.status_code == 403
    cookie = await asyncio.to_thread(daphne.login_cookie, USER, PASSWORD)
    with pytest.raises(websockets.InvalidStatus) as foreign:
        await websockets.connect(url, additional_headers={"Origin": "http://evil.example", "Cookie": cookie})
    assert foreign.value.response.status_code == 403


async def test_only_the_sites_own_origin_opens_a_socket(daphne):
    url = daphne.url.replace("http", "ws") + protocol.PATH
    cookie = await asyncio.to_thread(daphne.login_cookie, USER, PASSWORD)
    for origin in (
        "http://127.0.0.1:9",
        "https://127.0.0.1",
        "http://localhost:3000",
        f"https://127.0.0.1:{daphne.port}",
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"Origin": origin, "Cookie": cookie})
        assert refused.value.response.status_code == 403, origin
    ws = await websockets.connect(url, additional_headers={"Origin": daphne.url, "Cookie": cookie})
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await ws.recv()) == {"type": "pong"}
    await ws.close()


async def test_the_frame_limit_is_daphnes_own_and_a_frame_over_it_closes_the_socket_with_1009(tmp_path):
    prompt_chars = 250_000  # the frame limit follows the prompt limit
    limit = frame_bytes_limit(prompt_chars)
    assert limit > 1_200_000 > 1024 * 1024  # above daphne's own default cap (1 MiB)
    server = Daphne(tmp_path, {"CHATSITE_MAX_PROMPT_CHARS": str(prompt_chars)})
    try:
        server.start(serve=True)  # as `manage.py serve` runs it
        server.create_user(USER, PASSWORD)
        ws = await _open(server, USER, PASSWORD)
        await ws.send("x" * 1_200_000)  # under the setting: read, and answered by the app
        frame = json.loads(await ws.recv())
        assert (frame["type"], frame["code"]) == ("error", "bad_frame")
        await ws.send("x" * (limit + 1))  # over it: never read
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None, "dropped without a close frame (1006)"
        assert closed.value.rcvd.code == 1009
        assert str(limit) in closed.value.rcvd.reason
        ws = await _open(server, USER, PASSWORD)  # a new socket works
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()
    finally:
        server.stop()
