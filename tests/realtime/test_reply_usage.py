"""A reply's usage and its end: a stopped reply's tokens are what was generated
until the stop, and every reply ends with one log line (text or JSON)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from chatsite.logformat import BASE_KEYS, JsonFormatter
from tests.realtime.test_consumer import get_reply, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


async def test_a_stopped_replys_completion_tokens_are_the_tokens_it_got_before_the_stop(
    connect, alice, upstream
):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    for _ in range(4):
        await socket.recv_until("delta")
    await socket.send(type="stop", reply=started["reply"])
    await socket.recv_until("reply_finished")
    record = upstream.requests[-1]
    assert await record.wait_disconnected_async(2.0)
    reply = await get_reply(started["reply"])
    assert reply.status == "stopped"
    # The fake's own tokens, in the order it sent them: the saved text is the
    # first k of them, and k is the reply's completion tokens.
    sent = record._parts
    k = next(n for n in range(len(sent) + 1) if "".join(sent[:n]) == reply.content)
    assert k >= 4
    assert reply.completion_tokens == k <= len(sent)
    assert reply.usage_counted is True  # no usage from the upstream: counted here, and flagged


async def test_a_reply_ends_with_one_log_line_that_names_it_and_its_numbers(connect, alice, upstream, caplog):
    caplog.set_level(logging.INFO, logger="conversations.realtime.replies")
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=9&rate=0")
    await socket.recv_until("reply_finished")
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "reply_end"]
    assert len(lines) == 1
    line = lines[0]
    text = line.getMessage()
    assert text.startswith(f"reply {started['reply']} ended: ")
    assert "status=complete" in text and "error_kind=-" in text and "completion_tokens=9" in text
    assert "provider=openai" in text and "ttft_ms=" in text and "total_ms=" in text
    assert "sk-test" not in text

    parsed = json.loads(JsonFormatter().format(line))
    assert list(parsed)[: len(BASE_KEYS)] == list(BASE_KEYS)
    assert parsed["level"] == "INFO" and parsed["logger"] == "conversations.realtime.replies"
    assert parsed["message"] == text
    assert parsed["reply"] == started["reply"] and parsed["status"] == "complete"
    assert parsed["completion_tokens"] == 9 and parsed["usage_counted"] is False
    assert isinstance(parsed["total_ms"], float) and parsed["error_kind"] == ""


async def test_an_error_replys_log_line_names_its_kind(connect, alice, upstream, settings, caplog):
    settings.CHATSITE_RETRY_ATTEMPTS = 1
    caplog.set_level(logging.INFO, logger="conversations.realtime.replies")
    socket = await connect(alice)
    await start(socket, model="openai/fake?fault=reset&after=2")
    finished = (await socket.recv_until("reply_finished"))[-1]
    (line,) = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "reply_end"]
    assert line.fields["status"] == "error" and line.fields["error_kind"] == finished["error_kind"]
    assert f"error_kind={finished['error_kind']}" in line.getMessage()


def test_json_lines_carry_the_traceback_of_a_logged_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed["message"] == "failed here" and "ValueError: boom" in parsed["exception"]
