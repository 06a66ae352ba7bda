"""Titles made by the conversation's model, in the background (realtime/titles.py):
after the first exchange, never delaying a reply, never over a user's title,
counted against no limit, dropped first when busy, pushed to every socket."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.realtime import pacing, titles
from conversations.realtime.registry import registry
from conversations.services import conversations as conversation_services
from conversations.services.limits import limits_usage
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

TITLE_MODEL = "openai/fake?tokens=3&rate=0"  # answers "w0 w1 w2 "
STALLING = "openai/fake?fault=stall&after=0"  # sends nothing until the client leaves
KEY = "sk-test-key-not-a-secret"  # the upstream fixture's


@pytest.fixture
async def auto_titles(settings, upstream):
    settings.CHATSITE_AUTO_TITLES = True
    settings.CHATSITE_TITLE_MODEL = TITLE_MODEL
    settings.CHATSITE_TITLE_TIMEOUT = 10.0
    settings.CHATSITE_TITLE_BUSY_REPLIES = 8
    yield upstream
    # Nothing may outlive a test: no title task either.
    left = [job.task for job in list(titles._jobs.values()) if job.task is not None and not job.task.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left)
    assert not left, "title work left running"


def title_requests(fake) -> list:
    return [r for r in fake.requests if r.body and r.body.get("max_tokens") == titles.MAX_TOKENS]


def reply_requests(fake) -> list:
    return [r for r in fake.requests if r.body and r.body.get("max_tokens") != titles.MAX_TOKENS]


@sync_to_async
def conversation(conversation_id: str) -> Conversation:
    return Conversation.objects.get(pk=conversation_id)


async def exchange(
    socket, text="How do I reverse a list in Python?", conversation=None, model=None, timeout=10.0
) -> list:
    frame = {"type": "send", "client_id": uuid.uuid4().hex, "conversation": conversation, "text": text}
    if model is not None:
        frame["model"] = model
    await socket.send(**frame)
    return await socket.recv_until("reply_finished", timeout=timeout)


async def no_title_work() -> bool:
    return not titles._jobs


async def cancel_title_work() -> None:
    """End a title the test left stalling on purpose."""
    tasks = [job.task for job in list(titles._jobs.values()) if job.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def test_after_the_first_exchange_a_title_is_stored_and_pushed_to_every_socket_of_the_user(
    connect, alice, bob, auto_titles
):
    mine, other_tab, bobs = await connect(alice), await connect(alice), await connect(bob)
    frames = await exchange(mine, model="openai/fake?tokens=5&rate=0")
    assert frames[-1]["status"] == "complete"
    conv_id = frames[0]["conversation"]
    before = await conversation(conv_id)
    assert before.title == "How do I reverse a list in Python?"  # the first-line title, at once

    pushed = (await mine.recv_until("conversation_updated"))[-1]
    assert pushed == {"type": "conversation_updated", "conversation": conv_id, "title": "w0 w1 w2"}
    # The other tab follows nothing, and gets it too; another user does not.
    assert (await other_tab.recv_until("conversation_updated"))[-1] == pushed
    assert await bobs.nothing()

    after = await conversation(conv_id)
    assert (after.title, after.title_is_auto, after.title_generated) == ("w0 w1 w2", True, True)
    assert after.updated_at == before.updated_at  # no activity: it keeps its place in the list

    # The title request came after the reply's last token, with a short prompt
    # quoting the first message and the reply, a few tokens and a low temperature.
    (reply,) = reply_requests(auto_titles)
    (asked,) = title_requests(auto_titles)
    assert asked.started_at > reply.token_times[-1]
    assert asked.body["temperature"] == titles.TEMPERATURE
    system, user = asked.body["messages"]
    assert system == {"role": "system", "content": titles.SYSTEM_PROMPT}
    assert "How do I reverse a list in Python?" in user["content"] and "w0 w1 w2 w3 w4" in user["content"]
    # It is no message of the conversation.
    assert await sync_to_async(Message.objects.filter(conversation_id=conv_id).count)() == 2


async def test_a_title_is_asked_once_per_conversation(connect, alice, auto_titles):
    socket = await connect(alice)
    frames = await exchange(socket)
    conv_id = frames[0]["conversation"]
    await socket.recv_until("conversation_updated")
    await exchange(socket, text="And in place?", conversation=conv_id)
    regenerated = {"type": "regenerate", "client_id": "r1", "reply": frames[1]["reply"]}
    await socket.send(**regenerated)
    await socket.recv_until("reply_finished")
    assert await socket.nothing()
    assert len(title_requests(auto_titles)) == 1


async def test_the_reply_is_not_delayed_and_a_new_send_is_not_blocked_while_the_title_is_made(
    connect, alice, auto_titles, settings, caplog
):
    settings.CHATSITE_TITLE_MODEL = STALLING
    settings.CHATSITE_TITLE_TIMEOUT = 30.0
    socket = await connect(alice)
    frames = await exchange(socket)
    conv_id = frames[0]["conversation"]
    (asked,) = [r for r in await auto_titles.wait_for_requests_async(2) if r in title_requests(auto_titles)]
    # The title request is open, and answers nothing: the next exchange goes on.
    assert not asked.completed and asked.disconnected_at is None
    second = await exchange(socket, text="And in place?", conversation=conv_id)
    assert [f["type"] for f in second if f["type"] != "delta"] == ["ack", "reply_started", "reply_finished"]
    assert second[-1]["status"] == "complete"
    assert titles._jobs  # still being made
    await cancel_title_work()


async def test_a_slow_title_times_out_and_the_first_line_title_stays(
    connect, alice, auto_titles, settings, caplog
):
    settings.CHATSITE_TITLE_MODEL = STALLING
    settings.CHATSITE_TITLE_TIMEOUT = 0.3
    caplog.set_level("INFO", logger="conversations.realtime.titles")
    socket = await connect(alice)
    frames = await exchange(socket, text="Plan a trip\nto Zanzibar")
    await eventually(no_title_work, what="the title work to end")
    (asked,) = title_requests(auto_titles)
    assert await asked.wait_disconnected_async(5)  # the upstream request was closed
    conv = await conversation(frames[0]["conversation"])
    assert conv.title == "Plan a trip to Zanzibar"
    assert "no answer within 0.3s; keeping the first-line title" in caplog.text
    assert await socket.nothing()


@pytest.mark.parametrize(
    ("model", "logged"),
    [
        ("openai/fake?status=500", "upstream_http"),  # the upstream fails
        ("openai/fake?tokens=40&rate=0", "is no title"),  # a sentence, not a title
        ("openai/fake?tokens=0", "is no title"),  # nothing at all
    ],
)
async def test_a_failing_or_garbage_answer_keeps_the_first_line_title_and_logs_no_secret(
    connect, alice, auto_titles, settings, caplog, model, logged
):
    settings.CHATSITE_TITLE_MODEL = model
    settings.CHATSITE_RETRY_ATTEMPTS = 1
    caplog.set_level("DEBUG")
    socket = await connect(alice)
    frames = await exchange(socket, text="A question about secrets")
    await eventually(lambda: title_requests(auto_titles), what="the title request")
    await eventually(no_title_work, what="the title work to end")
    conv = await conversation(frames[0]["conversation"])
    assert (conv.title, conv.title_is_auto) == ("A question about secrets", True)
    assert logged in caplog.text and "keeping the first" in caplog.text
    assert KEY not in caplog.text and KEY[:8] not in caplog.text
    assert await socket.nothing()


async def test_model_output_is_stored_and_pushed_as_plain_cleaned_text(connect, alice, auto_titles, settings):
    settings.CHATSITE_TITLE_MODEL = "openai/fake?text=hostile&tokens=6&rate=0"
    socket = await connect(alice)
    await exchange(socket)
    pushed = (await socket.recv_until("conversation_updated"))[-1]
    # "Here is some <b>bold</b> text.\n\n<script>…": the first line, as it is (the
    # page shows it as text), without its final period.
    assert pushed["title"] == "Here is some <b>bold</b> text"


async def test_a_user_title_is_never_replaced_even_by_a_rename_while_the_title_is_made(
    connect, alice, auto_titles, settings
):
    settings.CHATSITE_TITLE_MODEL = "openai/fake?tokens=3&rate=0&ttft=1"
    socket = await connect(alice)
    frames = await exchange(socket)
    conv_id = uuid.UUID(frames[0]["conversation"])
    await eventually(lambda: title_requests(auto_titles), what="the title request")
    # While the model thinks about its title, the user renames the conversation.
    await sync_to_async(conversation_services.conversation_update)(
        user=alice, conversation_id=conv_id, title="My own title"
    )
    (asked,) = title_requests(auto_titles)
    assert await asked.wait_completed_async(5)  # the model did answer "w0 w1 w2"
    await eventually(no_title_work, what="the title work to end")
    conv = await conversation(str(conv_id))
    assert (conv.title, conv.title_is_auto) == ("My own title", False)
    assert await socket.nothing()


async def test_a_conversation_renamed_before_its_first_reply_ends_is_never_asked_about(
    connect, alice, auto_titles
):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c1", conversation=None, text="hi", model="openai/fake?tokens=40&rate=20"
    )
    ack = await socket.recv()
    await sync_to_async(conversation_services.conversation_update)(
        user=alice, conversation_id=uuid.UUID(ack["conversation"]), title="Mine"
    )
    await socket.recv_until("reply_finished")
    await eventually(no_title_work, what="the title work to end")
    assert title_requests(auto_titles) == []
    assert (await conversation(ack["conversation"])).title == "Mine"


async def test_titles_count_against_no_user_limit(connect, alice, auto_titles, settings):
    settings.CHATSITE_TITLE_MODEL = STALLING
    settings.CHATSITE_TITLE_TIMEOUT = 30.0
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    settings.CHATSITE_MAX_MESSAGES_PER_MINUTE = 2
    socket = await connect(alice)
    await exchange(socket)
    await eventually(lambda: title_requests(auto_titles), what="the title request")
    # A title is being made: it is no streaming reply and no message of the user's.
    assert await sync_to_async(limits_usage)(user_ids={alice.pk}) == {alice.pk: (1, 0)}
    second = await exchange(socket, text="Another chat")
    assert second[-1]["type"] == "reply_finished" and second[-1]["status"] == "complete"
    assert not [f for f in second if f["type"] == "error"]
    await cancel_title_work()


async def test_the_setting_turns_titles_off(connect, alice, auto_titles, settings):
    settings.CHATSITE_AUTO_TITLES = False
    socket = await connect(alice)
    frames = await exchange(socket, text="No title for me")
    assert await socket.nothing()
    assert not titles._jobs and title_requests(auto_titles) == []
    assert (await conversation(frames[0]["conversation"])).title == "No title for me"


async def test_a_busy_process_drops_the_title_first(connect, alice, auto_titles, settings, caplog):
    settings.CHATSITE_TITLE_BUSY_REPLIES = 1
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 0
    caplog.set_level("INFO", logger="conversations.realtime.titles")
    socket, streaming = await connect(alice), await connect(alice)
    await streaming.send(
        type="send", client_id="long", conversation=None, text="go on", model="openai/fake?fault=drip&rate=20"
    )
    started = (await streaming.recv_until("reply_started"))[-1]
    frames = await exchange(socket)
    assert frames[-1]["status"] == "complete"
    await eventually(lambda: "skipped: 1 replies and 0 titles are live" in caplog.text, what="the skip")
    assert title_requests(auto_titles) == [] and not titles._jobs
    conv = await conversation(frames[0]["conversation"])
    assert (conv.title, conv.title_generated) == ("How do I reverse a list in Python?", False)
    await streaming.send(type="stop", reply=started["reply"])
    await streaming.recv_until("reply_finished")
    # Stopped after some text, and alone now: that conversation gets its title.
    assert (await streaming.recv_until("conversation_updated"))[-1]["title"] == "w0 w1 w2"
    await eventually(no_title_work, what="the title work to end")


async def test_a_process_whose_loop_is_behind_drops_the_title(
    connect, alice, auto_titles, settings, caplog, monkeypatch
):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 0
    caplog.set_level("INFO", logger="conversations.realtime.titles")
    # Every sample of the pacer finds the loop over its targets: the window widens.
    monkeypatch.setattr(
        pacing, "window_next", lambda *, window, streak, sample, targets: (targets.widest, streak + 1)
    )
    socket, streaming = await connect(alice), await connect(alice)
    await streaming.send(
        type="send", client_id="long", conversation=None, text="go on", model="openai/fake?fault=drip&rate=20"
    )
    started = (await streaming.recv_until("reply_started"))[-1]
    await eventually(lambda: registry.window > pacing.Targets.from_settings().base, what="a wider window")
    frames = await exchange(socket)
    assert frames[-1]["status"] == "complete"
    await eventually(lambda: "skipped: the process is behind" in caplog.text, what="the skip")
    assert title_requests(auto_titles) == [] and not titles._jobs
    conv = await conversation(frames[0]["conversation"])
    assert (conv.title, conv.title_generated) == ("How do I reverse a list in Python?", False)
    # Once the loop keeps up again, the next first exchange gets its title.
    monkeypatch.undo()
    await streaming.send(type="stop", reply=started["reply"])
    await streaming.recv_until("reply_finished")
    assert (await streaming.recv_until("conversation_updated"))[-1]["title"] == "w0 w1 w2"
    await eventually(no_title_work, what="the title work to end")


async def test_on_a_one_at_a_time_server_a_reply_that_starts_cancels_the_title(
    connect, alice, auto_titles, settings
):
    # A SINGLE_STREAM server (llama-cpp-python's) drops a running stream for the
    # next request, like the offline model makes the next generation wait: the
    # title gives way to the reply, and is asked again after it.
    settings.CHATSITE_PROVIDERS = {
        "openai": {**settings.CHATSITE_PROVIDERS["openai"], "SINGLE_STREAM": True},
    }
    settings.CHATSITE_TITLE_MODEL = STALLING
    settings.CHATSITE_TITLE_TIMEOUT = 30.0
    socket = await connect(alice)
    frames = await exchange(socket)
    conv_id = frames[0]["conversation"]
    (asked,) = [r for r in await auto_titles.wait_for_requests_async(2) if r in title_requests(auto_titles)]
    settings.CHATSITE_TITLE_MODEL = TITLE_MODEL  # the next ask answers
    second = await exchange(socket, text="And in place?", conversation=conv_id)
    assert second[-1]["status"] == "complete"
    assert await asked.wait_disconnected_async(5)  # the title's request was closed
    # Its claim was given back, so the second exchange asked again, and got a title.
    pushed = (await socket.recv_until("conversation_updated"))[-1]
    assert pushed["title"] == "w0 w1 w2"
    assert len(title_requests(auto_titles)) == 2


async def test_on_a_one_at_a_time_server_no_title_is_asked_while_a_reply_streams(
    connect, alice, auto_titles, settings, caplog
):
    settings.CHATSITE_PROVIDERS = {
        "openai": {**settings.CHATSITE_PROVIDERS["openai"], "SINGLE_STREAM": True},
    }
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 0
    caplog.set_level("INFO", logger="conversations.realtime.titles")
    socket, streaming = await connect(alice), await connect(alice)
    await streaming.send(
        type="send", client_id="long", conversation=None, text="go on", model="openai/fake?fault=drip&rate=20"
    )
    started = (await streaming.recv_until("reply_started"))[-1]
    await exchange(socket)
    await eventually(lambda: "skipped: a reply is using the model" in caplog.text, what="the skip")
    assert title_requests(auto_titles) == []
    await streaming.send(type="stop", reply=started["reply"])
    await streaming.recv_until("reply_finished")
    # Stopped after some text, and alone now: that conversation gets its title.
    assert (await streaming.recv_until("conversation_updated"))[-1]["title"] == "w0 w1 w2"
    await eventually(no_title_work, what="the title work to end")


async def test_shutdown_cancels_the_title_and_gives_its_claim_back(connect, alice, auto_titles, settings):
    settings.CHATSITE_TITLE_MODEL = STALLING
    settings.CHATSITE_TITLE_TIMEOUT = 30.0
    socket = await connect(alice)
    frames = await exchange(socket)
    await eventually(lambda: title_requests(auto_titles), what="the title request")
    assert registry.chores
    await registry.stop_all()  # what SIGTERM does
    assert not titles._jobs and not registry.chores
    (asked,) = title_requests(auto_titles)
    assert await asked.wait_disconnected_async(5)
    conv = await conversation(frames[0]["conversation"])
    assert (conv.title, conv.title_generated) == ("How do I reverse a list in Python?", False)


@pytest.mark.slow
async def test_with_the_offline_model_a_waiting_reply_wins_over_the_title(
    connect, alice, settings, monkeypatch
):
    """One lock per model instance: a reply that starts while the title is being
    generated cancels the title, which lets go of the model at its next token."""
    pytest.importorskip("llama_cpp")
    settings.CHATSITE_PROVIDERS = {
        "local": {
            "BACKEND": "conversations.providers.local.LocalProvider",
            "MODEL_PATH": "bundled",
            "MAX_TOKENS": 24,
        }
    }
    settings.CHATSITE_DEFAULT_MODEL = "local/SmolLM2-135M-Instruct"
    settings.CHATSITE_AUTO_TITLES = True
    settings.CHATSITE_TITLE_MODEL = ""
    settings.CHATSITE_TITLE_BUSY_REPLIES = 8
    # A title long enough to be caught generating (a real one is a few tokens).
    monkeypatch.setattr(titles, "MAX_TOKENS", 2000)
    from conversations.providers import get_provider

    local = get_provider("local")
    assert local is not None
    await asyncio.to_thread(local.preload)
    socket = await connect(alice)
    frames = await exchange(socket, text="Name three colours.", timeout=120)
    assert frames[-1]["status"] == "complete"
    conv_id = uuid.UUID(frames[0]["conversation"])
    job = await eventually(lambda: titles._jobs.get(conv_id), what="the title work")
    assert job.provider is local
    await eventually(local._lock.locked, what="the title to hold the model", timeout=60)
    second = await exchange(socket, text="And three animals.", conversation=str(conv_id), timeout=120)
    # The reply streamed (to its end, or to its 24 tokens).
    assert (second[-1]["status"], second[-1]["error_kind"]) in {("complete", None), ("error", "length_limit")}
    assert [f for f in second if f["type"] == "delta"]
    assert job.gave_way and job.task is not None and job.task.cancelled()
    assert (await conversation(str(conv_id))).title == "Name three colours."
    await cancel_title_work()


async def test_a_rename_reaches_every_socket_of_the_user_too(connect, alice, bob, auto_titles, settings):
    from django.test import AsyncClient

    settings.CHATSITE_AUTO_TITLES = False
    mine, bobs = await connect(alice), await connect(bob)
    frames = await exchange(mine)
    conv_id = frames[0]["conversation"]
    client = AsyncClient()
    await client.aforce_login(alice)
    answer = await client.post(
        f"/api/conversations/{conv_id}/update/",
        {"title": "  Renamed\nhere "},
        content_type="application/json",
    )
    assert answer.status_code == 200
    pushed = await mine.recv()
    assert pushed == {"type": "conversation_updated", "conversation": conv_id, "title": "Renamed here"}
    # Pinning is no title change; another user hears nothing.
    await client.post(
        f"/api/conversations/{conv_id}/update/", {"pinned": True}, content_type="application/json"
    )
    assert await mine.nothing() and await bobs.nothing()


async def test_the_title_model_may_be_another_providers_anthropic_here(connect, alice, auto_titles, settings):
    settings.CHATSITE_PROVIDERS = {
        **settings.CHATSITE_PROVIDERS,
        "anthropic": {
            "BACKEND": "conversations.providers.anthropic.AnthropicProvider",
            "BASE_URL": auto_titles.anthropic_base_url,
            "API_KEY": "sk-ant-test-not-a-secret",
            "MODELS": ["fake"],
        },
    }
    settings.CHATSITE_TITLE_MODEL = "anthropic/fake?tokens=3&rate=0"
    socket = await connect(alice)
    await exchange(socket, model="openai/fake?tokens=5&rate=0")
    assert (await socket.recv_until("conversation_updated"))[-1]["title"] == "w0 w1 w2"
    asked = [r for r in auto_titles.requests if r.path.endswith("/messages")]
    assert len(asked) == 1 and asked[0].body["max_tokens"] == titles.MAX_TOKENS
    assert asked[0].body["system"] == titles.SYSTEM_PROMPT
    assert [m["role"] for m in asked[0].body["messages"]] == ["user"]


@pytest.mark.parametrize("reasoning", ["reasoning_content", "think"])
async def test_a_reasoning_title_model_is_titled_by_its_answer_never_its_thinking(
    connect, alice, auto_titles, settings, reasoning
):
    settings.CHATSITE_TITLE_MODEL = f"openai/fake?tokens=3&rate=0&reasoning={reasoning}&thoughts=4"
    socket = await connect(alice)
    frames = await exchange(socket, model="openai/fake?tokens=5&rate=0")
    conv_id = frames[0]["conversation"]
    pushed = (await socket.recv_until("conversation_updated"))[-1]
    assert pushed["title"] == "w0 w1 w2"  # the reasoning tokens are "t0 t1 t2 t3"
    (asked,) = title_requests(auto_titles)
    assert asked.reasoning_sent.split() == ["t0", "t1", "t2", "t3"]
    assert (await conversation(conv_id)).title == "w0 w1 w2"


async def test_an_anthropic_title_model_is_asked_without_extended_thinking(
    connect, alice, auto_titles, settings
):
    settings.CHATSITE_PROVIDERS = {
        **settings.CHATSITE_PROVIDERS,
        "anthropic": {
            "BACKEND": "conversations.providers.anthropic.AnthropicProvider",
            "BASE_URL": auto_titles.anthropic_base_url,
            "API_KEY": "sk-ant-test-not-a-secret",
            "MODELS": ["fake"],
            "THINKING_BUDGET": 2048,  # the model's replies think; its titles need not
        },
    }
    settings.CHATSITE_TITLE_MODEL = "anthropic/fake?tokens=3&rate=0&reasoning=thinking"
    socket = await connect(alice)
    await exchange(socket, model="openai/fake?tokens=5&rate=0")
    assert (await socket.recv_until("conversation_updated"))[-1]["title"] == "w0 w1 w2"
    (asked,) = [r for r in auto_titles.requests if r.path.endswith("/messages")]
    assert "thinking" not in asked.body and asked.body["max_tokens"] == titles.MAX_TOKENS
