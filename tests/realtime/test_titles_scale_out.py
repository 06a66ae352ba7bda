"""A title made in one daphne process reaches the user's sockets on the other,
over Redis, on the machine's real PostgreSQL. Needs DATABASE_URL (PostgreSQL)
and REDIS_URL, as CI sets."""

from __future__ import annotations

import json
import os

import pytest

from tests.processes import open_socket, recv, two_daphnes, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"),
        reason="needs DATABASE_URL=postgres://... and REDIS_URL (CI sets both)",
    ),
]
USER, PASSWORD = "tia", "titles-scale-pass-1"
OTHER, OTHER_PASSWORD = "ulf", "titles-scale-pass-2"


@pytest.fixture
def two_servers(fake_upstream, database):
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": os.environ["REDIS_URL"],
        "OPENAI_BASE_URL": fake_upstream.openai_base_url,
        "OPENAI_MODELS": "fake",
        "CHATSITE_AUTO_TITLES": "on",
        "CHATSITE_TITLE_MODEL": "openai/fake?tokens=3&rate=0",
    }
    with two_daphnes(env, prefix="chatsite-titles-scale-", user=(USER, PASSWORD)) as servers:
        servers[0].create_user(OTHER, OTHER_PASSWORD)
        yield servers


async def test_a_title_made_in_one_process_reaches_the_users_socket_in_the_other(two_servers):
    a, b = two_servers
    ws_a = await open_socket(a, USER, PASSWORD)
    ws_b = await open_socket(b, USER, PASSWORD)  # the same user, on the other process
    other_b = await open_socket(b, OTHER, OTHER_PASSWORD)  # another user there
    send = {"type": "send", "client_id": "t1", "text": "Plan a trip", "model": "openai/fake?tokens=5&rate=0"}
    await ws_a.send(json.dumps(send))
    frames = await until(ws_a, "reply_finished")
    conversation = frames[0]["conversation"]
    expected = {"type": "conversation_updated", "conversation": conversation, "title": "w0 w1 w2"}
    assert (await until(ws_a, "conversation_updated"))[-1] == expected
    assert await recv(ws_b) == expected  # the other process's socket follows nothing, and gets it
    # The other user's socket got nothing: a ping is answered first.
    await other_b.send(json.dumps({"type": "ping"}))
    assert (await recv(other_b))["type"] == "pong"
    for ws in (ws_a, ws_b, other_b):
        await ws.close()
