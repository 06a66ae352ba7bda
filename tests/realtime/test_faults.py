"""Faults against real processes: kill -9, a locked SQLite database, Redis going away.

After each, the invariants are checked in the database: exactly one terminal
status per reply, the saved text equal to (graceful ends) or a prefix of (a
crash) what was sent, and no reply left streaming.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import websockets

from tests.processes import Daphne, RedisServer, recv, text_of, until
from tests.processes import open_socket as _open
from tests.waiting import eventually

pytestmark = pytest.mark.slow
USER, PASSWORD = "flo", "fault-suite-pass-1"


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="chatsite-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def open_socket(server):
    return await _open(server, USER, PASSWORD)


def make_server(data_dir: Path, fake, **env) -> Daphne:
    return Daphne(
        data_dir,
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_MODELS": "fake",
            "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
            **env,
        },
    )


def reply_row(server: Daphne, reply_id: str):
    (row,) = server.query(
        "select content, status, last_seq from conversations_message where id = ?", uuid.UUID(reply_id).hex
    )
    return row


async def ws_is_quiet(ws, seconds: float) -> bool:
    """No frame arrives for ``seconds`` (a frame that does is a failure to show)."""
    try:
        frame = await recv(ws, timeout=seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"expected no frame, got {frame}")


def assert_no_reply_streaming(server: Daphne) -> None:
    assert server.query("select count(*) from conversations_message where status = 'streaming'") == [(0,)]


async def test_kill_9_mid_reply_loses_at_most_a_checkpoint_and_is_swept_at_restart(data_dir, fake_upstream):
    server = make_server(data_dir, fake_upstream)
    server.start()
    server.create_user(USER, PASSWORD)
    try:
        ws = await open_socket(server)
        await ws.send(
            json.dumps(
                {"type": "send", "client_id": "k1", "text": "go", "model": "openai/fake?fault=drip&rate=40"}
            )
        )
        frames = await until(ws, "delta")
        reply_id = frames[-1]["reply"]
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            frames.append(await recv(ws))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    finally:
        server.stop()
    received = text_of(frames)
    content, status, _ = reply_row(server, reply_id)
    assert status == "streaming"  # nobody could say otherwise yet
    assert received.startswith(content) and content
    lost_tokens = received[len(content) :].count(" ")
    # At 40 tokens/s and a 0.3 s checkpoint, one interval is 12 tokens; allow scheduling slack.
    assert lost_tokens <= 20, f"lost {lost_tokens} tokens"
    print(f"kill -9: lost {lost_tokens} tokens ({len(received) - len(content)} chars)")

    restarted = make_server(data_dir, fake_upstream)
    restarted.start()
    try:
        ws = await open_socket(restarted)
        content_after, status_after, _ = await eventually(
            lambda: (row := reply_row(restarted, reply_id))[1] != "streaming" and row,
            what="the restarted process to sweep the reply",
        )
        assert (content_after, status_after) == (content, "interrupted")
        assert_no_reply_streaming(restarted)
        await ws.close()
    finally:
        restarted.stop()


async def test_a_database_locked_longer_than_the_busy_timeout_loses_nothing(data_dir, fake_upstream):
    server = make_server(data_dir, fake_upstream, CHATSITE_SQLITE_BUSY_TIMEOUT="0.2")
    server.start()
    server.create_user(USER, PASSWORD)
    release = threading.Event()
    locked = threading.Event()

    def hold_write_lock():
        conn = sqlite3.connect(server.db_path, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(20)
        conn.rollback()
        conn.close()

    try:
        ws = await open_socket(server)
        await ws.send(
            json.dumps(
                {"type": "send", "client_id": "l1", "text": "go", "model": "openai/fake?tokens=60&rate=40"}
            )
        )
        frames = await until(ws, "delta")
        reply_id = frames[-1]["reply"]
        record = fake_upstream.requests[-1]
        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        assert locked.wait(5)
        # Checkpoints fail meanwhile; the stream goes on, and ends while still locked:
        # every token reaches the socket, and the reply is not finished.
        assert await record.wait_completed_async(15)
        while text_of(frames) != record.text_sent:
            frames.append(await recv(ws))
            assert frames[-1]["type"] == "delta", frames[-1]
        assert len([f for f in frames if f["type"] == "delta"]) > 5
        await eventually(
            lambda: "checkpoint of 1 replies failed (OperationalError)" in server.log.read_text(),
            what="a checkpoint to fail on the lock",
        )
        # The fault: the lock outlasts the end of the stream by five busy timeouts,
        # so the terminal save has to wait and retry; nothing is finished meanwhile.
        assert await ws_is_quiet(ws, 1.0)
        assert reply_row(server, reply_id)[1] == "streaming"
        release.set()
        holder.join()
        frames += await until(ws, "reply_finished")
        assert frames[-1]["status"] == "complete"
        content, status, last_seq = reply_row(server, reply_id)
        assert (content, status, last_seq) == (text_of(frames), "complete", frames[-1]["last_seq"])
        assert content == fake_upstream.requests[-1].text_sent
        assert_no_reply_streaming(server)
        await ws.close()
    finally:
        release.set()
        server.stop()


@pytest.fixture
def own_redis(data_dir):
    """A Redis of our own, so it can be stopped and started again."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(data_dir).start()
    yield server
    server.stop()


async def test_redis_going_away_and_back_needs_no_restart_and_loses_no_text(
    data_dir, fake_upstream, own_redis
):
    server = make_server(data_dir, fake_upstream, REDIS_URL=own_redis.url)
    server.start()
    server.create_user(USER, PASSWORD)
    try:
        ws = await open_socket(server)
        await ws.send(
            json.dumps(
                {"type": "send", "client_id": "r1", "text": "go", "model": "openai/fake?tokens=40&rate=20"}
            )
        )
        frames = await until(ws, "delta")
        reply_id = frames[-1]["reply"]
        record = fake_upstream.requests[-1]
        own_redis.kill()
        # The reply finishes while Redis is away.
        assert await record.wait_completed_async(10)
        content, status, _ = await eventually(
            lambda: (row := reply_row(server, reply_id))[1] != "streaming" and row,
            what="the reply to be saved as finished",
        )
        own_redis.start()
        assert (content, status) == (record.text_sent, "complete")
        # New connections work again without restarting daphne.
        for _ in range(30):
            try:
                ws2 = await open_socket(server)
                await ws2.send(
                    json.dumps(
                        {
                            "type": "send",
                            "client_id": "r2",
                            "text": "again",
                            "model": "openai/fake?tokens=3&rate=0",
                        }
                    )
                )
                frames2 = await until(ws2, "reply_finished", timeout=5)
                break
            except (websockets.ConnectionClosed, websockets.InvalidStatus, TimeoutError, OSError):
                await asyncio.sleep(0.3)
        else:
            pytest.fail("no new connection worked after Redis came back")
        assert frames2[-1]["status"] == "complete"
        assert_no_reply_streaming(server)
    finally:
        server.stop()
