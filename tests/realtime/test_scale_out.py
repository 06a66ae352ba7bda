"""Two daphne processes behind one site, on the machine's real PostgreSQL and Redis.

A stop or a subscribe that reaches the process that does not own the reply is
routed to the one that does, and the subscriber there gets the same
exactly-once stream. Needs DATABASE_URL (PostgreSQL) and REDIS_URL, as CI sets.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.processes import open_socket as _open
from tests.processes import recv, saved, text_of, two_daphnes, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"),
        reason="needs DATABASE_URL=postgres://... and REDIS_URL (CI sets both)",
    ),
]
USER, PASSWORD = "sam", "scale-out-pass-1"


@pytest.fixture
def two_servers(fake_upstream, database):
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": os.environ["REDIS_URL"],
        "OPENAI_BASE_URL": fake_upstream.openai_base_url,
        "OPENAI_MODELS": "fake",
        "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
    }
    with two_daphnes(env, prefix="chatsite-scale-", user=(USER, PASSWORD)) as servers:
        yield servers


async def open_socket(server):
    return await _open(server, USER, PASSWORD)


async def test_subscribe_and_stop_reach_the_owning_process(two_servers):
    a, b = two_servers
    ws_a = await open_socket(a)
    await ws_a.send(
        json.dumps(
            {"type": "send", "client_id": "x1", "text": "go", "model": "openai/fake?fault=drip&rate=40"}
        )
    )
    ack = await recv(ws_a)
    assert ack["type"] == "ack"
    frames_a = await until(ws_a, "delta")
    frames_a += [await recv(ws_a) for _ in range(3)]
    have = max(f["seq"] for f in frames_a if f["type"] == "delta")

    ws_b = await open_socket(b)
    await ws_b.send(json.dumps({"type": "subscribe", "conversation": ack["conversation"], "after_seq": have}))
    frames_b = await until(ws_b, "reply_started")
    assert frames_b[-1]["after_seq"] == have
    frames_b.append(await recv(ws_b))
    reply_id = frames_b[0]["reply"]
    # Stop from the process that does not own the reply.
    await ws_b.send(json.dumps({"type": "stop", "reply": reply_id}))
    frames_b += await until(ws_b, "reply_finished")
    frames_a += await until(ws_a, "reply_finished")
    assert frames_a[-1]["status"] == frames_b[-1]["status"] == "stopped"
    assert frames_a[-1]["last_seq"] == frames_b[-1]["last_seq"]

    full = text_of(frames_a)
    head = "".join(f["text"] for f in frames_a if f["type"] == "delta" and f["seq"] <= have)
    assert head + text_of(frames_b) == full  # exactly once: no gap, no repeat
    content, status, last_seq = saved(a, reply_id)
    assert (content, status, last_seq) == (full, "stopped", frames_a[-1]["last_seq"])
    await ws_a.close()
    await ws_b.close()


async def test_a_resend_on_the_other_process_creates_nothing_new(two_servers):
    a, b = two_servers
    ws_a = await open_socket(a)
    send = {"type": "send", "client_id": "same", "text": "hi", "model": "openai/fake?tokens=160&rate=40"}
    await ws_a.send(json.dumps(send))
    ack = await recv(ws_a)
    ws_b = await open_socket(b)
    await ws_b.send(json.dumps(send))
    frames_b = await until(ws_b, "reply_finished")
    frames_a = await until(ws_a, "reply_finished")
    assert frames_b[0]["type"] == "ack" and frames_b[0]["created"] is False
    assert frames_b[0]["conversation"] == ack["conversation"]
    assert text_of(frames_b) == text_of(frames_a)
    import psycopg

    with psycopg.connect(a.env["DATABASE_URL"]) as conn:
        (count,) = conn.execute("select count(*) from conversations_message").fetchone()
    assert count == 2


async def test_a_stop_and_send_on_the_other_process_stops_the_reply_there_first(two_servers):
    """The reply runs in process a; the interrupting send reaches b. b has it
    stopped in a, waits until it is saved, then stores and starts the new one."""
    a, b = two_servers
    ws_a = await open_socket(a)
    await ws_a.send(
        json.dumps(
            {"type": "send", "client_id": "s1", "text": "go", "model": "openai/fake?fault=drip&rate=40"}
        )
    )
    ack = await recv(ws_a)
    frames_a = await until(ws_a, "delta")
    frames_a += [await recv(ws_a) for _ in range(2)]
    old = frames_a[1]["reply"]
    ws_b = await open_socket(b)
    await ws_b.send(
        json.dumps(
            {
                "type": "send",
                "client_id": "s2",
                "conversation": ack["conversation"],
                "text": "something else",
                "model": "openai/fake?tokens=5&rate=0",
                "interrupt": True,
            }
        )
    )
    frames_b = await until(ws_b, "reply_finished")
    frames_a += await until(ws_a, "reply_finished")
    assert (frames_a[-1]["reply"], frames_a[-1]["status"]) == (old, "stopped")
    # Stored, not refused: the store refuses while a reply of the conversation streams.
    assert frames_b[0]["type"] == "ack" and frames_b[0]["created"] is True
    assert frames_b[-1]["status"] == "complete" and frames_b[-1]["reply"] != old
    content, status, last_seq = saved(a, old)
    assert (content, status, last_seq) == (text_of(frames_a), "stopped", frames_a[-1]["last_seq"])
    import psycopg

    with psycopg.connect(a.env["DATABASE_URL"]) as conn:
        (parent,) = conn.execute(
            "select parent_id from conversations_message where id = %s", (frames_b[0]["message"],)
        ).fetchone()
    assert str(parent) == old
    await ws_a.close()
    await ws_b.close()
