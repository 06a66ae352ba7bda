"""Two daphne processes on PostgreSQL and a private redis-server, when things fail.

A process dies (kill -9): a viewer on the other process is told how its reply
ended. Redis is unreachable, killed mid-stream, frozen (SIGSTOP) and restarted
on the same port: sockets stay open, each process's own replies keep
streaming, cross-process stop and subscribe degrade as docs/deploy.md says, and
everything recovers without a restart. The figures printed are the ones the
deploy guide quotes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.processes import Daphne, RedisServer, csrf_token, recv, saved, text_of, two_daphnes, until
from tests.processes import open_socket as _open

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="needs DATABASE_URL=postgres://... (CI sets it)",
    ),
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
]
USER, PASSWORD = "ines", "outage-suite-pass-1"
SLOW = "openai/fake?fault=drip&rate=40"


@pytest.fixture
def redis_server():
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-redis-"))
    server = RedisServer(data_dir).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def two_servers(fake_upstream, database, redis_server):
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
        "OPENAI_BASE_URL": fake_upstream.openai_base_url,
        "OPENAI_MODELS": "fake",
        "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
        "DJANGO_SETTINGS_MODULE": "tests.settings_fast_heartbeat",  # a heartbeat every 0.5 s
        "CHATSITE_LAYER_TIMEOUT": "0.5",
    }
    with two_daphnes(env, prefix="chatsite-outage-", user=(USER, PASSWORD)) as servers:
        yield servers


async def open_socket(server):
    return await _open(server, USER, PASSWORD)


async def start_reply(ws, client_id: str) -> tuple[dict, list[dict]]:
    """Send a slow reply; its ack and the frames up to its first delta."""
    await ws.send(json.dumps({"type": "send", "client_id": client_id, "text": "go", "model": SLOW}))
    ack = await recv(ws)
    assert ack["type"] == "ack", ack
    return ack, await until(ws, "delta")


async def follow_from_other(ws, conversation: str, after_seq: int = 0) -> list[dict]:
    await ws.send(json.dumps({"type": "subscribe", "conversation": conversation, "after_seq": after_seq}))
    frames = await until(ws, "reply_started")
    frames.append(await recv(ws))
    return frames


async def deltas(ws, count: int, timeout: float = 10.0) -> list[dict]:
    """The next ``count`` deltas (other frames in between are kept too)."""
    frames: list[dict] = []
    while sum(f["type"] == "delta" for f in frames) < count:
        frames.append(await recv(ws, timeout))
    return frames


async def during(ws, seconds: float) -> list[dict]:
    """Every frame that arrives in the next ``seconds``."""
    frames: list[dict] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await recv(ws, left))
        except TimeoutError:
            break
    return frames


async def alive(ws) -> list[dict]:
    """The socket is open and answered: a ping gets its pong (after any queued frames).
    The frames up to and including the pong: a caller that keeps a socket's
    frames adds them, or the deltas that arrived before the pong are lost to it."""
    await ws.send(json.dumps({"type": "ping"}))
    return await until(ws, "pong")


def texts_by_seq(frames: list[dict], reply: str) -> dict[int, str]:
    """The text a socket had of ``reply`` right after each of its deltas, by the delta's ``seq``
    (a catch-up delta carries several seqs' text and has the last one's seq)."""
    text, texts = "", {}
    for frame in frames:
        if frame["type"] == "delta" and frame["reply"] == reply:
            text += frame["text"]
            texts[frame["seq"]] = text
    return texts


def seqs(frames: list[dict], reply: str) -> list[int]:
    return [f["seq"] for f in frames if f["type"] == "delta" and f["reply"] == reply]


async def test_a_viewer_on_another_process_is_told_when_the_owner_dies_and_its_replies_are_swept(two_servers):
    a, b = two_servers
    ws_a = await open_socket(a)
    ack, frames_a = await start_reply(ws_a, "owner-dies")
    reply_id = frames_a[-1]["reply"]
    ws_b = await open_socket(b)
    frames_b = await follow_from_other(ws_b, ack["conversation"])

    a.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(a.proc.wait, 10)
    killed_at = time.monotonic()
    frames_b += await until(ws_b, "reply_finished", timeout=20)
    print(f"owner killed: the viewer on the other process was told after {time.monotonic() - killed_at:.2f}s")
    finished = frames_b[-1]
    assert (finished["reply"], finished["status"]) == (reply_id, "interrupted")
    content, status, last_seq = saved(b, reply_id)
    assert (status, finished["last_seq"]) == ("interrupted", last_seq)
    # What was saved is a prefix of what the viewer saw (a kill loses up to a checkpoint).
    assert text_of(frames_b).startswith(content)
    await alive(ws_b)
    await ws_b.close()


async def test_with_redis_unreachable_a_socket_opens_and_streams_its_own_process_replies(
    two_servers, redis_server
):
    a, b = two_servers
    redis_server.kill()
    ws = await open_socket(a)
    await ws.send(
        json.dumps(
            {"type": "send", "client_id": "no-redis", "text": "hi", "model": "openai/fake?tokens=20&rate=0"}
        )
    )
    frames = await until(ws, "reply_finished")
    assert frames[0]["type"] == "ack" and frames[-1]["status"] == "complete"
    content, status, _ = saved(a, frames[-1]["reply"])
    assert (content, status) == (text_of(frames), "complete")
    await alive(ws)
    await ws.close()


async def test_redis_killed_mid_stream_keeps_sockets_and_own_replies_and_recovers_when_it_returns(
    two_servers, redis_server
):
    a, b = two_servers
    ws_a = await open_socket(a)
    ack_a, frames_a = await start_reply(ws_a, "owned-by-a")
    reply_a = frames_a[-1]["reply"]
    ws_b = await open_socket(b)
    _, frames_b = await start_reply(ws_b, "owned-by-b")
    reply_b = frames_b[-1]["reply"]
    viewer = await open_socket(b)  # on B, following A's reply
    frames_v = await follow_from_other(viewer, ack_a["conversation"])

    redis_server.kill()
    # Each process's own reply keeps streaming to its own sockets, which stay open.
    for ws, frames, reply in ((ws_a, frames_a, reply_a), (ws_b, frames_b, reply_b)):
        before = seqs(frames, reply)[-1]
        frames += await during(ws, 2.0)
        after = seqs(frames, reply)[-1]
        assert after > before + 5, (before, after)
        print(f"redis killed: {after - before} deltas reached an own socket in the next 2 s")
    frames_v += await alive(viewer)  # a delta already on its way when Redis died comes first
    # A stop for a reply of the other process says it cannot reach it.
    await viewer.send(json.dumps({"type": "stop", "reply": reply_a}))
    refusal = await until(viewer, "error")
    frames_v += refusal
    assert (refusal[-1]["code"], refusal[-1]["ref"]) == ("unavailable", reply_a)

    redis_server.start()  # the same port, empty
    back_at = time.monotonic()
    # The viewer's stream resumes by itself: the owner kept its frames.
    frames_v += await deltas(viewer, 3, timeout=15)
    resumed = time.monotonic() - back_at
    # Cross-process stop works again.
    while True:
        await viewer.send(json.dumps({"type": "stop", "reply": reply_a}))
        answer = await recv(viewer)
        frames_v.append(answer)
        if answer["type"] == "error":
            assert answer["code"] == "unavailable", answer
            assert time.monotonic() - back_at < 20, "cross-process stop did not recover"
            continue
        break
    frames_v += await until(viewer, "reply_finished")
    routed = time.monotonic() - back_at
    frames_a += await until(ws_a, "reply_finished")
    assert frames_a[-1]["status"] == frames_v[-1]["status"] == "stopped"
    assert frames_v[-1]["last_seq"] == frames_a[-1]["last_seq"]
    seen = seqs(frames_v, reply_a)
    assert seen == sorted(set(seen))  # in order, never twice
    # After every delta the viewer has exactly the owner's text up to that seq: a
    # silent gap fails at the seq where it happened.
    owner_texts = texts_by_seq(frames_a, reply_a)
    wrong = [seq for seq, text in texts_by_seq(frames_v, reply_a).items() if text != owner_texts.get(seq)]
    assert not wrong, f"the viewer's text differs from the owner's from seq {wrong[0]} on"
    assert text_of(frames_v) == text_of(frames_a)  # every piece of text exactly once
    print(
        f"redis back: the remote viewer's stream resumed after {resumed:.2f}s, "
        f"cross-process stop worked after {routed:.2f}s"
    )
    content, status, last_seq = saved(a, reply_a)
    assert (content, status, last_seq) == (text_of(frames_a), "stopped", frames_a[-1]["last_seq"])
    # B's own reply was never disturbed.
    await ws_b.send(json.dumps({"type": "stop", "reply": reply_b}))
    frames_b += await until(ws_b, "reply_finished")
    assert seqs(frames_b, reply_b) == list(range(1, frames_b[-1]["last_seq"] + 1))
    assert saved(b, reply_b)[:2] == (text_of(frames_b), "stopped")
    for ws in (ws_a, ws_b, viewer):
        await ws.close()


def login(server: Daphne) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=5)
    page = client.get("/accounts/login/")
    token = csrf_token(page.text)
    response = client.post(
        "/accounts/login/",
        data={"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{server.url}/accounts/login/"},
    )
    assert response.status_code == 302
    return client


def logout(client: httpx.Client, server: Daphne) -> httpx.Response:
    return client.post(
        "/accounts/logout/",
        headers={"X-CSRFToken": client.cookies["csrftoken"], "Referer": f"{server.url}/"},
    )


async def test_a_frozen_redis_holds_up_no_logout_handshake_or_own_reply_and_all_resumes(
    two_servers, redis_server
):
    a, b = two_servers
    ws_a = await open_socket(a)
    ack_a, frames_a = await start_reply(ws_a, "frozen")
    reply_a = frames_a[-1]["reply"]
    started = time.monotonic()
    session = await asyncio.to_thread(login, b)
    took_login_before = time.monotonic() - started
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    leaving = await websockets.connect(
        b.url.replace("http", "ws") + "/ws/chat/", additional_headers={"Cookie": cookie, "Origin": b.url}
    )

    redis_server.freeze()
    try:
        started = time.monotonic()
        response = await asyncio.to_thread(logout, session, b)  # httpx gives up after 5 s
        took_logout = time.monotonic() - started
        assert response.status_code == 302
        started = time.monotonic()
        fresh_cookie = await asyncio.to_thread(b.login_cookie, USER, PASSWORD)
        took_login = time.monotonic() - started
        started = time.monotonic()
        fresh = await websockets.connect(  # a new handshake succeeds
            b.url.replace("http", "ws") + "/ws/chat/",
            additional_headers={"Cookie": fresh_cookie, "Origin": b.url},
        )
        took_handshake = time.monotonic() - started
        await alive(fresh)
        frames_a += await deltas(ws_a, 10)  # A's own reply goes on
        print(
            f"redis frozen: logout answered in {took_logout:.2f}s, a login took {took_login:.2f}s "
            f"({took_login_before:.2f}s before the freeze), a new handshake {took_handshake:.2f}s"
        )
    finally:
        redis_server.thaw()
    # Redis resumes: the logout's message arrives and closes the session's socket.
    ended = await until_closed(leaving)
    assert ended[-1]["code"] == "session_ended"
    assert leaving.close_code == 4401
    # Cross-process routing works again: a stop from B reaches A.
    await fresh.send(json.dumps({"type": "stop", "reply": reply_a}))
    frames_a += await until(ws_a, "reply_finished")
    assert frames_a[-1]["status"] == "stopped"
    assert saved(a, reply_a)[:2] == (text_of(frames_a), "stopped")
    await ws_a.close()
    await fresh.close()


async def until_closed(ws, timeout: float = 15.0) -> list[dict]:
    frames: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                frames.append(json.loads(raw))
    except websockets.ConnectionClosed:
        pass
    return frames
