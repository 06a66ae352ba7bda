"""Compare: one message, two to four models, each reply streamed as its own
(``send`` with ``models``), through the real ASGI stack."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.realtime import protocol
from conversations.realtime.registry import registry
from tests.conftest import deltas_text
from tests.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

FAST = ["openai/fake?tokens=12&rate=0", "openai/fake?tokens=20&rate=0", "openai/fake?tokens=8&rate=0"]
SLOW = "openai/fake?fault=drip&rate=40"


@sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


@sync_to_async
def replies_of(message_id: str) -> list[Message]:
    return list(Message.objects.filter(parent_id=message_id).order_by("created_at"))


@sync_to_async
def conversation_of(conversation_id: str) -> Conversation:
    return Conversation.objects.get(pk=conversation_id)


async def compare(socket, models, *, conversation=None, client_id=None, text="hello"):
    client_id = client_id or uuid.uuid4().hex
    await socket.send(type="send", client_id=client_id, conversation=conversation, text=text, models=models)
    ack = (await socket.recv_until("ack"))[-1]  # (after any frames of other replies)
    return ack


async def until_all_finished(socket, replies, timeout=10.0, seen=()) -> list[dict]:
    """The frames until each of ``replies`` has finished (``seen``: frames
    already received, whose ends count)."""
    frames: list[dict] = []
    done = {f["reply"] for f in seen if f["type"] == "reply_finished"} & set(replies)
    while done != set(replies):
        frame = await socket.recv(timeout=timeout)
        frames.append(frame)
        if frame["type"] == "reply_finished":
            done.add(frame["reply"])
    return frames


def text_of(frames: list[dict], reply: str) -> str:
    return deltas_text(frames, reply)


async def test_a_compare_stores_one_message_and_a_sibling_reply_per_model_and_streams_each(
    connect, alice, upstream
):
    socket = await connect(alice)
    ack = await compare(socket, FAST)
    assert ack["created"] is True and len(ack["replies"]) == 3
    frames = await until_all_finished(socket, ack["replies"])
    started = [f for f in frames if f["type"] == "reply_started"]
    # One start per column, in column order, each naming its model.
    assert [f["reply"] for f in started] == ack["replies"]
    assert [f["model"] for f in started] == FAST
    stored = await replies_of(ack["message"])
    assert [str(m.pk) for m in stored] == ack["replies"]  # versions in column order
    for message, model in zip(stored, FAST, strict=True):
        assert message.status == "complete"
        assert f"{message.provider}/{message.model}" == model
        # Each column's seqs are its own, and the saved text is exactly what it sent.
        seqs = [f["seq"] for f in frames if f["type"] == "delta" and f["reply"] == str(message.pk)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert message.content == text_of(frames, str(message.pk)) != ""
    assert {m.completion_tokens for m in stored} == {12, 20, 8}
    conversation = await conversation_of(ack["conversation"])
    # Until the user picks one, the first column is the shown branch.
    assert str(conversation.active_leaf_id) == ack["replies"][0]
    assert conversation.model == FAST[0]


@pytest.mark.parametrize(
    "models",
    [
        ["openai/fake"],  # one
        ["openai/a", "openai/b", "openai/c", "openai/d", "openai/e"],  # five
        ["openai/a", "openai/a"],  # a repeat
        ["openai/a", "no-slash"],  # malformed
        "openai/a",  # not a list
        ["openai/a", 7],
    ],
)
async def test_a_compare_of_the_wrong_shape_is_a_bad_frame_and_stores_nothing(
    connect, alice, upstream, models
):
    socket = await connect(alice)
    await socket.send(type="send", client_id="c1", conversation=None, text="hi", models=models)
    error = await socket.recv()
    assert (error["type"], error["code"], error["ref"]) == ("error", "bad_frame", "c1")
    assert await counts() == (0, 0)


async def test_model_and_models_together_are_a_bad_frame(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c1", conversation=None, text="hi", model="openai/a", models=FAST[:2]
    )
    error = await socket.recv()
    assert error["code"] == "bad_frame" and "not both" in error["message"]
    assert await counts() == (0, 0)


async def test_a_compare_of_an_unconfigured_provider_stores_nothing(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c1", conversation=None, text="hi", models=["openai/fake", "nowhere/x"]
    )
    error = await socket.recv()
    assert error["code"] == "unknown_model"
    assert await counts() == (0, 0)


async def test_the_concurrent_reply_limit_counts_each_column_and_refuses_a_compare_whole(
    connect, alice, upstream, settings
):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 3
    socket = await connect(alice)
    # One reply streaming elsewhere: two slots left.
    await socket.send(type="send", client_id="one", conversation=None, text="a", model=SLOW)
    first = await socket.recv()
    assert first["type"] == "ack"
    await socket.recv()  # its reply_started
    before = await counts()
    await socket.send(type="send", client_id="three", conversation=None, text="b", models=FAST)
    error = await socket.recv_until("error")
    assert (error[-1]["code"], error[-1]["ref"]) == ("too_many_replies", "three")
    assert await counts() == before  # nothing stored
    # Two columns fit.
    ack = await compare(socket, FAST[:2], client_id="two")
    assert len(ack["replies"]) == 2
    await socket.send(type="stop", reply=first["replies"][0])
    frames = await until_all_finished(socket, [*ack["replies"], first["replies"][0]])
    assert {f["status"] for f in frames if f["type"] == "reply_finished"} == {"complete", "stopped"}


async def test_a_retried_compare_stores_nothing_new_and_follows_the_same_replies(connect, alice, upstream):
    socket = await connect(alice)
    ack = await compare(socket, [SLOW, FAST[0]], client_id="again")
    before = await counts()
    again = await connect(alice)
    retry = await compare(again, [SLOW, FAST[0]], client_id="again")
    assert retry["created"] is False
    assert retry["replies"] == ack["replies"] and retry["message"] == ack["message"]
    assert await counts() == before
    # The retrying socket streams every column (the finished one: its end).
    await socket.send(type="stop", reply=ack["replies"][0])
    frames = await until_all_finished(again, ack["replies"])
    assert {f["reply"] for f in frames if f["type"] == "reply_finished"} == set(ack["replies"])
    await until_all_finished(socket, ack["replies"])


async def test_one_column_stopped_while_the_others_complete(connect, alice, upstream):
    socket = await connect(alice)
    ack = await compare(socket, [SLOW, FAST[1]])
    slow, fast = ack["replies"]
    frames: list[dict] = []
    while sum(1 for f in frames if f["type"] == "delta" and f["reply"] == slow) < 3:
        frames.append(await socket.recv())
    await socket.send(type="stop", reply=slow)
    frames += await until_all_finished(socket, ack["replies"], seen=frames)
    ends = {f["reply"]: f["status"] for f in frames if f["type"] == "reply_finished"}
    assert ends == {slow: "stopped", fast: "complete"}
    stored = {str(m.pk): m for m in await replies_of(ack["message"])}
    assert stored[slow].status == "stopped" and stored[slow].content == text_of(frames, slow)
    assert stored[fast].status == "complete" and stored[fast].content == text_of(frames, fast)
    assert registry.in_conversation(uuid.UUID(ack["conversation"])) == []


async def test_a_second_socket_subscribes_to_every_column_each_piece_exactly_once(connect, alice, upstream):
    socket = await connect(alice)
    ack = await compare(socket, [SLOW, "openai/fake?fault=drip&rate=60"])
    first: list[dict] = []
    while sum(1 for f in first if f["type"] == "delta") < 6:
        first.append(await socket.recv())
    have = {}
    for reply in ack["replies"]:
        seqs = [f["seq"] for f in first if f["type"] == "delta" and f["reply"] == reply]
        have[reply] = max(seqs, default=0)
    second = await connect(alice)
    # It has some of each column's text (a page that reloaded): each resumes from its own seq.
    await second.send(type="subscribe", conversation=ack["conversation"], after=have)
    attach: list[dict] = []
    while sum(1 for f in attach if f["type"] == "reply_started") < 2:
        attach.append(await second.recv())
    assert {f["reply"]: f["after_seq"] for f in attach if f["type"] == "reply_started"} == have
    for reply in ack["replies"]:
        await socket.send(type="stop", reply=reply)
    attach += await until_all_finished(second, ack["replies"], seen=attach)
    first += await until_all_finished(socket, ack["replies"], seen=first)
    for reply in ack["replies"]:
        seen = [f for f in first if f["type"] == "delta" and f["reply"] == reply and f["seq"] <= have[reply]]
        full = (await sync_to_async(Message.objects.get)(pk=reply)).content
        assert text_of(seen, reply) + text_of(attach, reply) == full
        assert text_of(first, reply) == full


async def test_subscribe_while_a_compare_streams_tells_an_ended_column_with_its_saved_text(
    connect, alice, upstream
):
    socket = await connect(alice)
    ack = await compare(socket, [SLOW, FAST[0]])
    slow, fast = ack["replies"]
    await socket.recv_until("reply_finished")  # the fast one
    second = await connect(alice)
    await second.send(type="subscribe", conversation=ack["conversation"], after={})
    frames: list[dict] = []
    while sum(1 for f in frames if f["type"] == "reply_started") < 2 or not any(
        f["type"] == "reply_finished" and f["reply"] == fast for f in frames
    ):
        frames.append(await second.recv())
    # Column order: the slow one (first column) attaches first, then the ended one, told whole.
    assert [f["reply"] for f in frames if f["type"] == "reply_started"] == [slow, fast]
    saved = (await sync_to_async(Message.objects.get)(pk=fast)).content
    assert text_of(frames, fast) == saved
    await socket.send(type="stop", reply=slow)
    await until_all_finished(second, [slow], seen=frames)


async def test_subscribe_with_after_seq_alone_still_follows_a_single_reply(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="send", client_id="s", conversation=None, text="x", model=SLOW)
    ack = await socket.recv()
    second = await connect(alice)
    await second.send(type="subscribe", conversation=ack["conversation"], after_seq=0)
    started = await second.recv()
    assert started["type"] == "reply_started" and started["reply"] == ack["replies"][0]
    await socket.send(type="stop", reply=ack["replies"][0])
    await second.recv_until("reply_finished")


async def test_a_send_after_a_compare_continues_the_branch_the_user_picked(connect, alice, upstream, client):
    socket = await connect(alice)
    ack = await compare(socket, FAST[:2])
    await until_all_finished(socket, ack["replies"])
    await sync_to_async(client.force_login)(alice)
    url = f"/api/conversations/{ack['conversation']}/branch/"
    response = await sync_to_async(client.post)(
        url, json.dumps({"message": ack["replies"][1]}), content_type="application/json"
    )
    assert response.status_code == 200
    await socket.send(
        type="send", client_id="next", conversation=ack["conversation"], text="more", model=FAST[0]
    )
    nxt = await socket.recv()
    await socket.recv_until("reply_finished")
    user_message = await sync_to_async(Message.objects.get)(pk=nxt["message"])
    assert str(user_message.parent_id) == ack["replies"][1]
    # The model read column 2's reply as the history, not column 1's.
    second_text = (await sync_to_async(Message.objects.get)(pk=ack["replies"][1])).content
    assert second_text in json.dumps(upstream.requests[-1].body)


async def test_a_compare_while_a_reply_runs_is_refused_reply_running(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(type="send", client_id="s", conversation=None, text="x", model=SLOW)
    ack = await socket.recv()
    await socket.recv()
    before = await counts()
    await socket.send(type="send", client_id="c", conversation=ack["conversation"], text="y", models=FAST[:2])
    error = await socket.recv_until("error")
    assert error[-1]["code"] == "reply_running"
    assert await counts() == before
    await socket.send(type="stop", reply=ack["replies"][0])
    await eventually(lambda: registry.get(ack["replies"][0]) is None, what="the stopped reply saved")


def test_ack_declares_replies_as_an_array_of_ids():
    frame = json.loads(
        protocol.frame_ack(client_id="c", conversation="x", message="m", created=True, replies=["a", "b"])
    )
    protocol.check_server_frame(frame)
    with pytest.raises(AssertionError):
        protocol.check_server_frame({**frame, "replies": [1]})
    with pytest.raises(AssertionError):
        protocol.check_server_frame({**frame, "replies": "a"})


@sync_to_async
def compare_running_elsewhere(user, owner: str, owner_channel: str) -> list[Message]:
    from django.utils import timezone

    from conversations.models import Worker

    Worker.objects.create(pk=owner, channel=owner_channel, heartbeat_at=timezone.now())
    conversation = Conversation.objects.create(user=user, title="t", model="openai/a")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="go")
    return [
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            parent=question,
            status=Message.Status.STREAMING,
            worker=owner,
            provider="openai",
            model=name,
        )
        for name in ("a", "b")
    ]


async def test_a_compare_running_in_another_process_is_followed_there_column_by_column(connect, alice):
    import asyncio

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    owner_channel = await layer.new_channel()
    first, second = await compare_running_elsewhere(alice, "elsewhere:1:1", owner_channel)
    socket = await connect(alice)
    after = {str(first.pk): 3, str(second.pk): 1}
    await socket.send(type="subscribe", conversation=str(first.conversation_id), after=after)
    asks = [await asyncio.wait_for(layer.receive(owner_channel), 5) for _ in range(2)]
    # The owner is asked for each column, each from the client's own seq of it.
    assert {(a["type"], a["reply"], a["after_seq"]) for a in asks} == {
        ("reply.subscribe", str(first.pk), 3),
        ("reply.subscribe", str(second.pk), 1),
    }
    for reply, seq in ((first, 3), (second, 1)):
        key = str(reply.pk)
        for frame in (
            protocol.frame_reply_started(
                conversation=str(reply.conversation_id),
                reply=key,
                model=f"openai/{reply.model}",
                provider="openai",
                after_seq=seq,
            ),
            protocol.frame_delta(reply=key, seq=seq + 1, text=f"{reply.model}!"),
        ):
            await layer.send(asks[0]["channel"], {"type": "chat.frame", "text": frame})
    frames = [await socket.recv() for _ in range(4)]
    assert deltas_text(frames, str(first.pk)) == "a!" and deltas_text(frames, str(second.pk)) == "b!"
    await socket.close()


@pytest.mark.parametrize(
    "after",
    [
        {"not-an-id": 1},
        {str(uuid.uuid4()): -1},
        {str(uuid.uuid4()): True},
        [1],
        {str(uuid.uuid4()): i for i in range(5)},
    ],
)
def test_subscribe_after_maps_up_to_four_reply_ids_to_seqs_or_is_invalid(after):
    frame = json.dumps({"type": "subscribe", "conversation": str(uuid.uuid4()), "after": after})
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_frame(frame, max_bytes=100_000, max_prompt_chars=1000)
    assert refused.value.code == "invalid_field"


def test_subscribe_after_parses_to_a_map_of_reply_ids():
    reply = uuid.uuid4()
    frame = protocol.parse_client_frame(
        json.dumps({"type": "subscribe", "conversation": str(uuid.uuid4()), "after": {reply.hex: 4}}),
        max_bytes=100_000,
        max_prompt_chars=1000,
    )
    assert isinstance(frame, protocol.Subscribe) and dict(frame.after) == {str(reply): 4}


def test_the_limit_refuses_a_compare_that_does_not_fit_whole(settings):
    from conversations.exceptions import TooManyReplies
    from conversations.services.limits import limits_refusal

    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 4
    assert limits_refusal(recent=0, streaming=1, replies=3) is None
    assert isinstance(limits_refusal(recent=0, streaming=2, replies=3), TooManyReplies)
    assert isinstance(limits_refusal(recent=0, streaming=4), TooManyReplies)
