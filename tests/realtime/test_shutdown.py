"""SIGTERM: where its handling is installed, and what the handler waits for before the process ends."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from conversations.realtime import cluster, shutdown
from conversations.realtime.outbox import outbox
from conversations.realtime.registry import registry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


async def test_sigterm_handling_is_installed_when_the_process_registers():
    loop = asyncio.get_running_loop()
    assert loop not in shutdown._installed  # a fresh loop: nothing registered on it yet
    await cluster.ensure_started()
    assert loop in shutdown._installed


async def test_the_handler_lets_every_final_frame_out_before_the_drain_and_the_exit(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send",
        client_id=uuid.uuid4().hex,
        conversation=None,
        text="go",
        model="openai/fake?tokens=2000&rate=50",
    )
    reply_id = (await socket.recv_until("delta"))[-1]["reply"]
    reply = registry.get(reply_id)
    assert reply is not None
    seen_by_drain: list[bool] = []

    async def drain() -> None:
        seen_by_drain.append(reply.finished)

    # A frame of another socket holds up the process's sender.
    gate = asyncio.Event()

    async def slow_send(message: dict) -> None:
        await gate.wait()

    outbox.put(slow_send, "held")
    interrupting = asyncio.ensure_future(shutdown._interrupt(drain))
    await asyncio.wait_for(asyncio.wait({reply.task}), 5)
    done, _ = await asyncio.wait({interrupting}, timeout=0.3)
    assert not done and not seen_by_drain  # the reply ended, but its last frame has not left yet
    gate.set()
    await asyncio.wait_for(interrupting, 5)
    assert seen_by_drain == [True]  # the drain comes after every reply ended
    # Everything the socket is to get was already handed to it: nothing is waited for.
    texts = []
    while not socket.c.output_queue.empty():
        texts.append(json.loads(socket.c.output_queue.get_nowait()["text"]))
    finished = [f for f in texts if f["type"] == "reply_finished"]
    assert len(finished) == 1 and (finished[0]["reply"], finished[0]["status"]) == (reply_id, "interrupted")
