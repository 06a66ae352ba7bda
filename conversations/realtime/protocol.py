"""The WebSocket wire protocol, declared once.

Client frames are parsed and validated here, at the boundary; the consumer
never looks inside a raw frame. Server frames are built here too, and every
server frame type is declared in :data:`SERVER_FRAMES` so tests can check
that whatever the server sends matches the declaration (``docs/protocol.md``
describes the same frames for client authors).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

PATH = "/ws/chat/"

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: "<provider>/<model id as the provider lists it>": the provider is the part
#: before the first "/"; the model id is anything printable (paths such as
#: "/srv/models/x.gguf", "org/name", "llama3:8b"), to MODEL_MAX_CHARS in all.
MODEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}/[^\x00-\x1f\x7f]+$")
MODEL_MAX_CHARS = 200  # Conversation.model


class ProtocolError(Exception):
    """A client frame that cannot be accepted. ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# Error codes the server sends in ``error`` frames.
ERROR_CODES = frozenset(
    {
        "bad_frame",  # not JSON / not an object / binary
        "frame_too_large",
        "unknown_type",
        "invalid_field",  # a field is missing or of the wrong type or shape
        "prompt_too_long",
        "not_found",  # a conversation or reply id that is missing or not yours
        "reply_running",  # the conversation already has a running reply
        "not_continuable",  # only a stopped, interrupted or errored reply can be continued
        "unknown_model",
        "too_many_messages",  # over CHATSITE_MAX_MESSAGES_PER_MINUTE
        "too_many_replies",  # over CHATSITE_MAX_CONCURRENT_REPLIES
        "session_ended",  # logged out elsewhere: the socket closes next
        "unavailable",  # the reply's process cannot be reached now (channel layer down)
        "internal",
    }
)


@dataclass(frozen=True, slots=True)
class Send:
    client_id: str
    text: str
    conversation: uuid.UUID | None
    model: str | None
    edit_of: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Regenerate:
    client_id: str
    reply: uuid.UUID
    model: str | None


@dataclass(frozen=True, slots=True)
class Continue:
    reply: uuid.UUID


@dataclass(frozen=True, slots=True)
class Stop:
    reply: uuid.UUID


@dataclass(frozen=True, slots=True)
class Subscribe:
    conversation: uuid.UUID
    after_seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    """The page's heartbeat: answered with ``pong``, touches nothing."""


ClientFrame = Send | Stop | Subscribe | Regenerate | Continue | Ping


def _field(data: dict, name: str, kind: type | tuple, *, required: bool = True) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise ProtocolError("invalid_field", f"'{name}' is required")
        return None
    value = data[name]
    # bool is an int subclass; never accept it where a number is wanted.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError("invalid_field", f"'{name}' has the wrong type")
    return value


def _uuid(data: dict, name: str, *, required: bool = True) -> uuid.UUID | None:
    raw = _field(data, name, str, required=required)
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ProtocolError("invalid_field", f"'{name}' is not a valid id") from None


def _client_id(data: dict) -> str:
    client_id = _field(data, "client_id", str)
    if not CLIENT_ID_RE.match(client_id):
        raise ProtocolError("invalid_field", "'client_id' must be 1-64 letters, digits, '-' or '_'")
    return client_id


def _model(data: dict) -> str | None:
    model = _field(data, "model", str, required=False)
    if model is None:
        return None
    if len(model) > MODEL_MAX_CHARS:
        raise ProtocolError(
            "invalid_field", f"'model' is too long: ids of up to {MODEL_MAX_CHARS} characters are supported"
        )
    if not MODEL_RE.fullmatch(model):
        raise ProtocolError(
            "invalid_field", "'model' must be '<provider>/<model id>', as GET /api/models/ lists it"
        )
    return model


def _send(data: dict, client_id: str, max_prompt_chars: int) -> Send:
    body = _field(data, "text", str)
    if not body.strip():
        raise ProtocolError("invalid_field", "'text' must not be empty")
    if len(body) > max_prompt_chars:
        raise ProtocolError("prompt_too_long", f"a message is limited to {max_prompt_chars} characters")
    return Send(
        client_id=client_id,
        text=body,
        conversation=_uuid(data, "conversation", required=False),
        model=_model(data),
        edit_of=_uuid(data, "edit_of", required=False),
    )


def parse_client_frame(text: str | None, *, max_bytes: int, max_prompt_chars: int) -> ClientFrame:
    """Validate one text frame from a client and return its typed form."""
    if text is None:
        raise ProtocolError("bad_frame", "binary frames are not accepted; send JSON text")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("frame_too_large", f"frames are limited to {max_bytes} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_frame", "the frame is not valid JSON") from None
    except RecursionError:  # e.g. a thousand nested '[': no frame is nested that deep
        raise ProtocolError(
            "bad_frame", "the frame is nested too deeply; frames are flat JSON objects"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "a frame must be a JSON object")
    kind = data.get("type")
    if kind == "send" or kind == "regenerate":
        # Once the client_id is known, every refusal names it, so that a client can
        # match the refusal to the request it is waiting on.
        client_id = _client_id(data)
        try:
            if kind == "send":
                return _send(data, client_id, max_prompt_chars)
            return Regenerate(client_id=client_id, reply=_uuid(data, "reply"), model=_model(data))  # type: ignore[arg-type]
        except ProtocolError as exc:
            exc.ref = client_id
            raise
    if kind == "continue":
        return Continue(reply=_uuid(data, "reply"))  # type: ignore[arg-type]
    if kind == "stop":
        return Stop(reply=_uuid(data, "reply"))  # type: ignore[arg-type]
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        after = _field(data, "after_seq", int, required=False)
        if after is not None and after < 0:
            raise ProtocolError("invalid_field", "'after_seq' must not be negative")
        return Subscribe(conversation=_uuid(data, "conversation"), after_seq=after or 0)  # type: ignore[arg-type]
    if not isinstance(kind, str):
        raise ProtocolError("invalid_field", "'type' is required")
    raise ProtocolError("unknown_type", f"unknown frame type {kind[:40]!r}")


# --- Server frames ------------------------------------------------------------
# type -> {field: allowed python types}. Every field listed is always present.
_num = (int, float, type(None))
_opt_str = (str, type(None))
SERVER_FRAMES: dict[str, dict[str, tuple[type, ...]]] = {
    "ack": {"client_id": (str,), "conversation": (str,), "message": (str,), "created": (bool,)},
    "reply_started": {
        "conversation": (str,),
        "reply": (str,),
        "model": (str,),
        "provider": (str,),
        "after_seq": (int,),
    },
    "delta": {"reply": (str,), "seq": (int,), "text": (str,)},
    "reply_finished": {
        "conversation": (str,),
        "reply": (str,),
        "status": (str,),
        "error_kind": _opt_str,
        "error": _opt_str,
        "last_seq": (int,),
        "finish_reason": _opt_str,
        "usage": (dict,),
        "metrics": (dict,),
        # Earlier messages of the branch not sent to the model (they did not
        # fit its window), and that window in tokens (None: not known).
        "omitted_messages": (int,),
        "context_tokens": (int, type(None)),
    },
    "error": {"code": (str,), "message": (str,), "ref": _opt_str},
    "pong": {},
}

TERMINAL_STATUSES = frozenset({"complete", "stopped", "error", "interrupted"})
ERROR_KINDS = frozenset(
    {
        "rate_limited",
        "upstream_http",
        "upstream_connect",
        "upstream_stream",
        "upstream_error",
        "timeout_first_token",
        "timeout_idle",
        "timeout_total",
        "length_limit",
        "context_length",  # the prompt does not fit the model's window
        "model_unavailable",
        "internal",
    }
)


def check_server_frame(frame: dict) -> None:
    """Raise AssertionError if ``frame`` does not match its declaration."""
    kind = frame.get("type")
    spec = SERVER_FRAMES.get(kind)  # type: ignore[arg-type]
    if spec is None:
        raise AssertionError(f"undeclared server frame type {kind!r}")
    extra = set(frame) - set(spec) - {"type"}
    if extra:
        raise AssertionError(f"{kind}: undeclared fields {sorted(extra)}")
    for name, types in spec.items():
        if name not in frame:
            raise AssertionError(f"{kind}: missing field {name!r}")
        if not isinstance(frame[name], types) or (isinstance(frame[name], bool) and bool not in types):
            raise AssertionError(f"{kind}: field {name!r} has type {type(frame[name]).__name__}")
    if kind == "reply_finished":
        if frame["status"] not in TERMINAL_STATUSES:
            raise AssertionError(f"reply_finished: status {frame['status']!r}")
        if (frame["status"] == "error") != (frame["error_kind"] is not None):
            raise AssertionError("reply_finished: error_kind goes with status 'error' only")
        if frame["error_kind"] is not None and frame["error_kind"] not in ERROR_KINDS:
            raise AssertionError(f"reply_finished: unknown error kind {frame['error_kind']!r}")
    if kind == "error" and frame["code"] not in ERROR_CODES:
        raise AssertionError(f"error: unknown code {frame['code']!r}")


def encode(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)


def encode_delta(reply: str, seq: int, text: str) -> str:
    # The hot path: one small format instead of building and dumping a dict.
    return f'{{"type":"delta","reply":"{reply}","seq":{seq},"text":{json.dumps(text, ensure_ascii=False)}}}'


_DELTA_HEAD = '{"type":"delta","reply":"'


def delta_position(frame: str) -> tuple[str, int] | None:
    """The reply and ``seq`` of a frame made by :func:`encode_delta`; None for any other frame."""
    if not frame.startswith(_DELTA_HEAD):
        return None
    start = len(_DELTA_HEAD)
    end = frame.index('"', start)
    seq_at = end + len('","seq":')
    return frame[start:end], int(frame[seq_at : frame.index(",", seq_at)])


def error_frame(code: str, message: str, ref: str | None = None) -> str:
    assert code in ERROR_CODES, code
    return encode("error", code=code, message=message, ref=ref)


#: The answer to a ``ping``.
PONG = encode("pong")
