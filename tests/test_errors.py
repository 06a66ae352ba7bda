"""The words of a failed reply: one place (conversations/errors.py), every kind
the code can produce, the provider's host, never a secret."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from conversations import errors, serializers
from conversations.models import Conversation, Message
from conversations.realtime import protocol
from tests.realtime.test_consumer import get_reply, start

APP = Path(__file__).resolve().parent.parent / "conversations"


def _kinds_raised_in_the_code() -> set[str]:
    """Every error kind written as a literal where a reply's error is made:
    ``ProviderError("<kind>", ...)``, ``_finish("error", "<kind>", ...)`` and
    the reply runner's own timeouts."""
    kinds: set[str] = set()
    for path in APP.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if name == "ProviderError" and args:
                kinds.add(str(args[0]))
            elif name == "_finish" and len(args) >= 2 and args[0] == "error":
                kinds.add(str(args[1]))
    from conversations.realtime.replies import _TIMEOUT_SETTINGS

    return kinds | set(_TIMEOUT_SETTINGS)


def test_every_error_kind_the_code_can_produce_has_words_and_a_badge():
    raised = _kinds_raised_in_the_code()
    assert {"upstream_connect", "timeout_idle", "internal", "length_limit"} <= raised  # the scan works
    assert raised <= protocol.ERROR_KINDS, raised - protocol.ERROR_KINDS
    assert errors.DESCRIBED_KINDS == protocol.ERROR_KINDS
    assert set(errors.ERROR_LABELS) == protocol.ERROR_KINDS
    for kind in sorted(protocol.ERROR_KINDS):
        for facts in ({}, {"host": "127.0.0.1:9", "has_text": True, "limit": 30.0, "status_code": 500}):
            words = errors.error_describe(kind=kind, **facts)
            # A sentence for a person, not the machine's name for it.
            assert words[0].isupper() and words.rstrip()[-1] in ".?", (kind, words)
            assert kind not in words and "Error:" not in words, (kind, words)
        assert errors.error_label(kind=kind) and kind not in errors.error_label(kind=kind)


@pytest.mark.parametrize("cause", errors.CONNECT_CAUSES)
def test_each_connect_cause_names_the_host_and_says_what_to_do(cause):
    words = errors.error_describe(kind="upstream_connect", host="10.1.2.3:8080", cause=cause)
    assert "10.1.2.3" in words
    assert "?" in words or "Check" in words or "try again" in words.lower() or "Try again" in words


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_reply_to_a_closed_port_says_the_server_could_not_be_reached(
    connect, alice, upstream, settings, closed_port
):
    settings.CHATSITE_RETRY_ATTEMPTS = 1
    settings.CHATSITE_PROVIDERS = {
        **settings.CHATSITE_PROVIDERS,
        "down": {
            "BACKEND": "conversations.providers.openai.OpenAIProvider",
            "BASE_URL": f"http://127.0.0.1:{closed_port}/v1",
            "API_KEY": "sk-down-key-not-a-secret",
            "MODELS": ["m"],
        },
    }
    socket = await connect(alice)
    _, started = await start(socket, model="down/m")
    finished = (await socket.recv_until("reply_finished"))[-1]

    expected = f"Couldn't reach the model server at 127.0.0.1:{closed_port}. Is it running?"
    assert (finished["status"], finished["error_kind"]) == ("error", "upstream_connect")
    assert finished["error"] == expected
    reply = await get_reply(started["reply"])
    assert (reply.error_kind, reply.error_message) == ("upstream_connect", expected)
    # Reloaded over HTTP, the reply says the same.
    assert serializers.message_to_dict(reply)["error"] == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_an_upstream_error_says_what_the_server_said_and_what_to_do(connect, alice, upstream):
    socket = await connect(alice)
    await start(socket, model="openai/fake?status=404")
    finished = (await socket.recv_until("reply_finished"))[-1]

    host = upstream.openai_base_url.split("//", 1)[1].split("/", 1)[0]
    assert finished["error_kind"] == "upstream_http"
    assert finished["error"].startswith(
        f"The model server at {host} has no such model or endpoint (HTTP 404)."
    )
    assert "Check the model name" in finished["error"]
    assert "sk-test" not in finished["error"]


@pytest.mark.django_db
def test_an_imported_failed_reply_without_words_gets_the_words_of_its_kind(alice):
    conversation = Conversation.objects.create(user=alice, model="openai/fake", client_id="c1")
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="error", error_kind="timeout_idle", content=""
    )
    assert serializers.message_to_dict(reply)["error"] == errors.error_describe(kind="timeout_idle")


@pytest.fixture
def closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@sync_to_async
def _reply_state(reply_id: str) -> tuple:
    m = Message.objects.get(pk=reply_id)
    return m.status, m.error_kind, m.error_message, m.content, m.segments, m.last_seq


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_failed_reply_with_no_text_cannot_be_continued_and_is_unchanged(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=error_event&after=0")
    finished = (await socket.recv_until("reply_finished"))[-1]
    assert finished["status"] == "error" and finished["last_seq"] == 0
    before = await _reply_state(started["reply"])

    await socket.send(type="continue", reply=started["reply"])
    refusal = await socket.recv()

    assert (refusal["type"], refusal["code"]) == ("error", "not_continuable")
    assert "Regenerate" in refusal["message"]
    assert await _reply_state(started["reply"]) == before
    assert len(upstream.requests) == 1  # nothing went upstream


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_loop_state")
async def test_a_failed_reply_with_text_can_still_be_continued(connect, alice, upstream):
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?tokens=10&rate=0&fault=error_event&after=3")
    await socket.recv_until("reply_finished")

    await socket.send(type="continue", reply=started["reply"])
    frames = await socket.recv_until("reply_finished")
    assert frames[0]["type"] == "reply_started" and frames[0]["reply"] == started["reply"]
    assert len(upstream.requests) == 2
