"""A model that cannot stream, through the socket: its whole answer is one delta,
the reply ends in one of the usual statuses with usage and metrics, a Stop while
the answer is pending closes the upstream and saves nothing it did not show,
and the first-token timeout covers the whole wait."""

from __future__ import annotations

import pytest

from tests.realtime.test_consumer import deltas_text, get_reply, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


@pytest.fixture
def whole(upstream, settings):
    """The fake upstream as the "openai" provider with streaming off."""
    settings.CHATSITE_PROVIDERS = {
        "openai": {**settings.CHATSITE_PROVIDERS["openai"], "STREAM": False},
    }
    return upstream


async def test_a_whole_answer_is_one_delta_and_a_complete_reply_with_usage(connect, alice, whole):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=12&rate=0&ttft=0.05")
    frames = await socket.recv_until("reply_finished")

    deltas = [f for f in frames if f["type"] == "delta"]
    record = whole.requests[-1]
    assert record.body["stream"] is False
    assert len(deltas) == 1 and deltas[0]["text"] == record.text_sent == "".join(f"w{i} " for i in range(12))
    finished = frames[-1]
    assert finished["status"] == "complete" and finished["finish_reason"] == "stop"
    assert finished["last_seq"] == deltas[0]["seq"]
    assert finished["usage"]["completion_tokens"] == 12 and finished["usage"]["counted"] is False
    metrics = finished["metrics"]
    assert metrics["ttft_ms"] >= 50 and metrics["total_ms"] >= metrics["ttft_ms"]
    assert metrics["tokens_per_s"] is None  # a whole answer has no pace of its own
    reply = await get_reply(started["reply"])
    assert (reply.status, reply.content, reply.completion_tokens) == ("complete", deltas[0]["text"], 12)


async def test_a_whole_answers_reasoning_arrives_first_and_is_saved_apart(connect, alice, whole):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=3&rate=0&reasoning=think&thoughts=4")
    frames = await socket.recv_until("reply_finished")

    kinds = [(f["type"], f["text"]) for f in frames if f["type"] in ("delta", "reasoning_delta")]
    assert kinds == [("reasoning_delta", "t0 t1 t2 t3 "), ("delta", "w0 w1 w2 ")]
    reply = await get_reply(started["reply"])
    assert (reply.reasoning, reply.content) == ("t0 t1 t2 t3 ", "w0 w1 w2 ")


async def test_a_whole_answer_cut_for_length_ends_as_length_limit(connect, alice, whole):
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=50&rate=0&finish_reason=length")
    frames = await socket.recv_until("reply_finished")

    assert frames[-1]["status"] == "error" and frames[-1]["error_kind"] == "length_limit"
    assert deltas_text(frames) == "".join(f"w{i} " for i in range(50))


async def test_a_stop_while_the_answer_is_pending_closes_the_upstream_and_saves_nothing(
    connect, alice, whole
):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=5&ttft=30")
    record = (await whole.wait_for_requests_async(1))[0]
    await socket.send(type="stop", reply=started["reply"])
    frames = await socket.recv_until("reply_finished")

    assert await record.wait_disconnected_async(2), "the upstream never saw the connection close"
    assert not [f for f in frames if f["type"] == "delta"]
    assert frames[-1]["status"] == "stopped" and frames[-1]["last_seq"] == 0
    reply = await get_reply(started["reply"])
    assert (reply.status, reply.content) == ("stopped", "")


async def test_the_first_token_timeout_covers_the_whole_wait(connect, alice, whole, settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 0.4
    settings.CHATSITE_IDLE_TIMEOUT = 0.1  # does not apply while waiting for the answer
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=5&ttft=5")
    frames = await socket.recv_until("reply_finished")

    assert frames[-1]["status"] == "error" and frames[-1]["error_kind"] == "timeout_first_token"
    assert whole.requests[-1].wait_disconnected(2.0)
    assert (await get_reply(started["reply"])).content == ""


async def test_a_stream_request_answered_with_json_completes_as_one_delta(connect, alice, upstream):
    socket = await connect(alice)
    await start(socket, model="openai/fake?tokens=4&rate=0&fault=json")
    frames = await socket.recv_until("reply_finished")

    assert upstream.requests[-1].body["stream"] is True
    assert [f["text"] for f in frames if f["type"] == "delta"] == ["w0 w1 w2 w3 "]
    assert frames[-1]["status"] == "complete" and frames[-1]["usage"]["completion_tokens"] == 4


async def test_a_whole_answer_over_the_reply_limit_is_cut_there_and_saved_as_seen(
    connect, alice, whole, settings
):
    settings.CHATSITE_MAX_REPLY_CHARS = 25
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=100&rate=0")
    frames = await socket.recv_until("reply_finished")

    assert frames[-1]["error_kind"] == "length_limit"
    reply = await get_reply(started["reply"])
    assert len(reply.content) == 25 and reply.content == deltas_text(frames)


async def test_a_non_streaming_model_makes_the_conversations_title_too(connect, alice, whole, settings):
    settings.CHATSITE_AUTO_TITLES = True
    settings.CHATSITE_TITLE_MODEL = "openai/fake?tokens=3&rate=0"
    settings.CHATSITE_TITLE_TIMEOUT = 10.0
    socket = await connect(alice)
    await start(socket, text="How do I reverse a list?", model="openai/fake?tokens=5&rate=0")
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "complete"

    pushed = (await socket.recv_until("conversation_updated"))[-1]
    assert pushed["title"] == "w0 w1 w2"
    assert all(r.body["stream"] is False for r in whole.requests if r.path == "/v1/chat/completions")
