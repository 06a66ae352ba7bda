"""Moderation through the real socket: a reply that matches is stopped at once,
and shows and saves exactly the text before what was held; a prompt that
matches is refused with nothing stored."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations import serializers
from conversations.models import Conversation, Message
from conversations.realtime.registry import registry
from tests import factories
from tests.conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

STOPPED_WORDS = "This reply was stopped because it matched a content rule set by the operator."
SAID = "here is a long and ordinary sentence before a badword and then much more"
BEFORE = SAID[: SAID.index("badword")]


@pytest.fixture
def rules(tmp_path, settings):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"words": {"slurs": ["badword"], "thinking": ["t3"]}}))
    settings.CHATSITE_MODERATION_RULES = str(path)
    settings.CHATSITE_MODERATION_HOLD_CHARS = 24
    return path


@pytest.fixture
def endpoint(upstream, settings):
    upstream.flag_words = {"badword": "violence"}
    upstream.moderation_status = 200
    settings.CHATSITE_MODERATION_URL = upstream.openai_base_url
    settings.CHATSITE_MODERATION_TIMEOUT = 2.0
    yield upstream
    upstream.flag_words = {}
    upstream.moderation_status = 200


@pytest.fixture
def saying(upstream):
    """The fake's replies start with SAID (set on the server, so no frame carries it in a model id)."""
    default = upstream.default
    upstream.default = dataclasses.replace(default, say=SAID)
    yield upstream
    upstream.default = default


@sync_to_async
def reply_row(reply_id: str) -> Message:
    return Message.objects.get(pk=reply_id)


@sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


async def send(socket, model: str, text: str = "hello") -> dict:
    await socket.send(type="send", client_id="c1", conversation=None, text=text, model=model)
    return await socket.recv()


async def run_reply(socket, model: str) -> tuple[dict, list[dict]]:
    ack = await send(socket, model)
    assert ack["type"] == "ack", ack
    frames = await socket.recv_until("reply_finished")
    return frames[0], frames


def chat_requests(fake) -> list:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


async def test_a_reply_that_matches_a_word_is_stopped_and_saves_exactly_what_was_shown(
    connect, alice, saying, rules
):
    socket = await connect(alice)
    started, frames = await run_reply(socket, "openai/fake?tokens=60&rate=200")
    finished = frames[-1]
    assert (finished["status"], finished["error_kind"]) == ("error", "moderation")
    assert finished["error"] == STOPPED_WORDS
    shown = deltas_text(frames)
    # Text before the word went out (all but the held window), and none of the word.
    assert shown and BEFORE.startswith(shown)
    reply = await reply_row(started["reply"])
    assert (reply.status, reply.error_kind, reply.content) == ("error", "moderation", shown)
    assert reply.last_seq == finished["last_seq"]
    assert reply.moderation_rule == "words:slurs"
    # The matched word is nowhere: not in a frame, not in the row; the rule is not told.
    assert not any("badword" in json.dumps(f) or "words:slurs" in json.dumps(f) for f in socket.frames)
    assert "badword" not in reply.content + reply.error_message
    # The upstream was told at once: its connection closed long before its 60 tokens.
    record = chat_requests(saying)[-1]
    assert await record.wait_disconnected_async(2.0), "the upstream stream was not closed"
    assert len(record.text_sent.split()) < 60
    assert registry.get(started["reply"]) is None


async def test_a_moderated_reply_cannot_be_continued(connect, alice, saying, rules):
    socket = await connect(alice)
    started, frames = await run_reply(socket, "openai/fake?tokens=20&rate=0")
    assert frames[-1]["error_kind"] == "moderation" and deltas_text(frames)
    await socket.send(type="continue", reply=started["reply"])
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "not_continuable")


async def test_staff_read_which_rule_stopped_the_reply(connect, transactional_db, saying, rules):
    admin = await sync_to_async(factories.user)("root")
    admin.is_staff = True
    await sync_to_async(admin.save)()
    socket = await connect(admin)
    started, frames = await run_reply(socket, "openai/fake?tokens=20&rate=0")
    assert frames[-1]["error"].startswith(STOPPED_WORDS)
    assert "words:slurs" in frames[-1]["error"]
    reply = await reply_row(started["reply"])
    assert reply.error_message == STOPPED_WORDS  # saved without it: a share never tells it
    # A reload tells staff too; the same reply read by anyone else would not name it.
    client = Client()
    await sync_to_async(client.force_login)(admin)
    page = await sync_to_async(client.get)(f"/api/conversations/{frames[0]['conversation']}/")
    (stored,) = [m for m in page.json()["messages"] if m["id"] == started["reply"]]
    assert stored["error"].startswith(STOPPED_WORDS) and "words:slurs" in stored["error"]
    assert serializers.message_to_dict(reply)["error"] == STOPPED_WORDS


async def test_a_clear_reply_with_rules_on_is_complete_and_whole(connect, alice, upstream, rules):
    socket = await connect(alice)
    started, frames = await run_reply(socket, "openai/fake?tokens=30&rate=0")
    assert frames[-1]["status"] == "complete"
    shown = deltas_text(frames)
    assert shown == chat_requests(upstream)[-1].text_sent  # the held tail was released at the end
    assert (await reply_row(started["reply"])).content == shown


async def test_a_short_answer_is_held_whole_then_released_at_the_end(connect, alice, upstream, rules):
    socket = await connect(alice)
    _, frames = await run_reply(socket, "openai/fake?tokens=3&rate=0")
    deltas = [f for f in frames if f["type"] == "delta"]
    assert deltas_text(frames) == "w0 w1 w2 "
    assert len(deltas) == 1  # shorter than the window: one frame, at the end


async def test_reasoning_is_moderated_too(connect, alice, upstream, rules):
    socket = await connect(alice)
    started, frames = await run_reply(
        socket, "openai/fake?reasoning=reasoning_content&thoughts=8&tokens=5&rate=0"
    )
    assert (frames[-1]["status"], frames[-1]["error_kind"]) == ("error", "moderation")
    assert not any(f["type"] == "delta" for f in frames)  # the answer never began
    reasoning = "".join(f["text"] for f in frames if f["type"] == "reasoning_delta")
    assert "t3" not in reasoning and "t0 t1 t2 ".startswith(reasoning)
    reply = await reply_row(started["reply"])
    assert reply.reasoning == reasoning and reply.content == ""


async def test_a_prompt_that_matches_is_refused_and_nothing_is_stored_or_sent(
    connect, alice, upstream, rules
):
    socket = await connect(alice)
    before = await counts()
    error = await send(socket, "openai/fake?tokens=3&rate=0", text="please say BADWORD now")
    assert error == {
        "type": "error",
        "code": "prompt_moderated",
        "message": "This message was not sent: it matches a rule set by the operator of this server.",
        "ref": "c1",
    }
    assert await counts() == before
    assert chat_requests(upstream) == []
    assert await socket.nothing()


async def test_an_edit_that_matches_is_refused_too(connect, alice, upstream, rules):
    socket = await connect(alice)
    ack = await send(socket, "openai/fake?tokens=3&rate=0", text="a fine question")
    await socket.recv_until("reply_finished")
    before = await counts()
    await socket.send(
        type="send",
        client_id="c2",
        conversation=ack["conversation"],
        text="a badword question",
        edit_of=ack["message"],
        model="openai/fake?tokens=3&rate=0",
    )
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "prompt_moderated")
    assert await counts() == before


# --- the endpoint -------------------------------------------------------------------


async def test_the_endpoint_stops_a_flagged_reply_and_shows_only_what_it_cleared(
    connect, alice, endpoint, saying
):
    socket = await connect(alice)
    started, frames = await run_reply(socket, "openai/fake?tokens=60&rate=100")
    assert (frames[-1]["status"], frames[-1]["error_kind"]) == ("error", "moderation")
    shown = deltas_text(frames)
    assert "badword" not in shown and BEFORE.startswith(shown)
    reply = await reply_row(started["reply"])
    assert (reply.content, reply.moderation_rule) == (shown, "endpoint:violence")
    record = chat_requests(endpoint)[-1]
    assert await record.wait_disconnected_async(2.0)
    # Every text shown was cleared by a call first.
    checked = "".join(r.body["input"] for r in endpoint.requests if r.path == "/v1/moderations")
    assert shown in checked


async def test_the_endpoint_refuses_a_flagged_prompt(connect, alice, endpoint):
    socket = await connect(alice)
    before = await counts()
    error = await send(socket, "openai/fake?tokens=3&rate=0", text="badword")
    assert error["code"] == "prompt_moderated"
    assert await counts() == before and chat_requests(endpoint) == []


async def test_the_endpoint_clears_a_clean_reply(connect, alice, endpoint):
    socket = await connect(alice)
    started, frames = await run_reply(socket, "openai/fake?tokens=20&rate=200")
    assert frames[-1]["status"] == "complete"
    assert deltas_text(frames) == chat_requests(endpoint)[-1].text_sent


async def test_an_endpoint_that_fails_lets_the_reply_through_by_default(
    connect, alice, endpoint, saying, caplog
):
    endpoint.moderation_status = 500
    socket = await connect(alice)
    _, frames = await run_reply(socket, "openai/fake?tokens=10&rate=0")
    assert frames[-1]["status"] == "complete"
    assert "badword" in deltas_text(frames)
    assert "CHATSITE_MODERATION_FAIL=open" in caplog.text


async def test_an_endpoint_that_fails_closed_stops_the_reply_and_says_why(connect, alice, endpoint, settings):
    settings.CHATSITE_MODERATION_FAIL = "closed"
    endpoint.moderation_status = 503
    socket = await connect(alice)
    # The prompt is refused first: the check does not answer.
    error = await send(socket, "openai/fake?tokens=3&rate=0")
    assert error["code"] == "prompt_moderated" and "not answering" in error["message"]


async def test_a_title_the_model_made_that_matches_a_rule_is_not_used(
    connect, alice, upstream, rules, settings
):
    from conversations.realtime import titles

    settings.CHATSITE_AUTO_TITLES = True
    settings.CHATSITE_TITLE_MODEL = "openai/fake?say=a+badword&tokens=2&rate=0"
    socket = await connect(alice)
    _, frames = await run_reply(socket, "openai/fake?tokens=5&rate=0")
    assert frames[-1]["status"] == "complete"
    titled = [
        r for r in await upstream.wait_for_requests_async(2) if r.body.get("max_tokens") == titles.MAX_TOKENS
    ]
    assert titled and await titled[0].wait_completed_async(5.0)
    jobs = [job.task for job in list(titles._jobs.values()) if job.task is not None]
    if jobs:
        await asyncio.wait(jobs)
    conversation = await sync_to_async(Conversation.objects.get)(pk=frames[0]["conversation"])
    assert conversation.title == "hello"  # the first-line title stays
    assert await socket.nothing()  # no conversation_updated
