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
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

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
        "model_cannot_see",  # images sent to a model that does not take them
        "too_many_attachments",  # over CHATSITE_ATTACHMENTS_PER_MESSAGE
        "prompt_moderated",  # the message matches a moderation rule: nothing was stored or sent
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
    #: Uploaded attachments' ids (``POST /api/attachments/``), in order.
    attachments: tuple[uuid.UUID, ...] = ()
    #: Stop and send: a reply of the user's running in the conversation is
    #: stopped (and saved) first, in the same step (``commands.reply_start``).
    interrupt: bool = False
    #: A compare: 2 to 4 distinct model ids, one reply each, in column order
    #: (empty: one reply, from ``model``).
    models: tuple[str, ...] = ()


#: How many models a compare ``send`` may name.
COMPARE_MIN_MODELS = 2
COMPARE_MAX_MODELS = 4


#: The most attachment ids a ``send`` may name, whatever the setting says.
ATTACHMENTS_MAX_IDS = 100


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
    #: Reply id -> the seq the client has of it (a compare's columns each
    #: resume from their own); a live reply not named starts from 0.
    after: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """The page's heartbeat: answered with ``pong``, touches nothing."""


ClientFrame = Send | Stop | Subscribe | Regenerate | Continue | Ping


Data = dict[str, Any]


def _field(data: Data, name: str, kind: type, *, required: bool = True) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise ProtocolError("invalid_field", f"'{name}' is required")
        return None
    value = data[name]
    # bool is an int subclass; never accept it where a number is wanted.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError("invalid_field", f"'{name}' has the wrong type")
    return value


def _optional_uuid(data: Data, name: str) -> uuid.UUID | None:
    raw = _field(data, name, str, required=False)
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ProtocolError("invalid_field", f"'{name}' is not a valid id") from None


def _uuid(data: Data, name: str) -> uuid.UUID:
    value = _optional_uuid(data, name)
    if value is None:
        raise ProtocolError("invalid_field", f"'{name}' is required")
    return value


def _client_id(data: Data) -> str:
    client_id: str = _field(data, "client_id", str)
    if not CLIENT_ID_RE.match(client_id):
        raise ProtocolError("invalid_field", "'client_id' must be 1-64 letters, digits, '-' or '_'")
    return client_id


def _model(data: Data) -> str | None:
    model: str | None = _field(data, "model", str, required=False)
    if model is None:
        return None
    return _model_id(model)


def _model_id(model: str) -> str:
    if len(model) > MODEL_MAX_CHARS:
        raise ProtocolError(
            "invalid_field", f"'model' is too long: ids of up to {MODEL_MAX_CHARS} characters are supported"
        )
    if not MODEL_RE.fullmatch(model):
        raise ProtocolError(
            "invalid_field", "'model' must be '<provider>/<model id>', as GET /api/models/ lists it"
        )
    return model


def _attachment_ids(data: Data) -> tuple[uuid.UUID, ...]:
    raw = data.get("attachments")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ProtocolError("invalid_field", "'attachments' must be a list of attachment ids")
    if len(raw) > ATTACHMENTS_MAX_IDS:
        raise ProtocolError(
            "too_many_attachments", f"a message can have at most {ATTACHMENTS_MAX_IDS} attachments"
        )
    try:
        ids = tuple(uuid.UUID(item) for item in raw)
    except ValueError:
        raise ProtocolError("invalid_field", "'attachments' holds an id that is not valid") from None
    return tuple(dict.fromkeys(ids))


def _compare_models(data: Data) -> tuple[str, ...]:
    """A compare's ``models``: 2 to 4 distinct well-formed ids, never with
    ``model``. Anything else is a ``bad_frame`` (nothing is stored)."""
    raw = data.get("models")
    if raw is None:
        return ()
    wanted = f"'models' must be a list of {COMPARE_MIN_MODELS} to {COMPARE_MAX_MODELS} distinct model ids"
    if data.get("model") is not None:
        raise ProtocolError("bad_frame", "a send names either 'model' or 'models', not both")
    if (
        not isinstance(raw, list)
        or not COMPARE_MIN_MODELS <= len(raw) <= COMPARE_MAX_MODELS
        or not all(isinstance(item, str) for item in raw)
        or len(set(raw)) != len(raw)
    ):
        raise ProtocolError("bad_frame", wanted)
    try:
        return tuple(_model_id(item) for item in raw)
    except ProtocolError as exc:
        raise ProtocolError("bad_frame", f"{wanted}: {exc.message}") from None


def _subscribe_after(data: Data) -> Mapping[str, int] | None:
    raw = data.get("after")
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or len(raw) > COMPARE_MAX_MODELS
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values())
    ):
        raise ProtocolError(
            "invalid_field",
            f"'after' maps up to {COMPARE_MAX_MODELS} reply ids to seqs (integers, not negative)",
        )
    try:
        return MappingProxyType({str(uuid.UUID(k)): v for k, v in raw.items()})
    except ValueError:
        raise ProtocolError("invalid_field", "'after' holds a reply id that is not valid") from None


def _send(data: Data, client_id: str, max_prompt_chars: int) -> Send:
    body: str = _field(data, "text", str)
    attachments = _attachment_ids(data)
    if not body.strip() and not attachments:
        raise ProtocolError("invalid_field", "'text' must not be empty")
    if len(body) > max_prompt_chars:
        raise ProtocolError("prompt_too_long", f"a message is limited to {max_prompt_chars} characters")
    return Send(
        client_id=client_id,
        text=body,
        conversation=_optional_uuid(data, "conversation"),
        model=_model(data),
        edit_of=_optional_uuid(data, "edit_of"),
        attachments=attachments,
        interrupt=_field(data, "interrupt", bool, required=False) is True,
        models=_compare_models(data),
    )


def parse_client_frame(text: str | None, *, max_bytes: int, max_prompt_chars: int) -> ClientFrame:
    """Validate one text frame from a client and return its typed form."""
    if text is None:
        raise ProtocolError("bad_frame", "binary frames are not accepted; send JSON text")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("frame_too_large", f"frames are limited to {max_bytes} bytes")
    try:
        data: object = json.loads(text)
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
            return Regenerate(client_id=client_id, reply=_uuid(data, "reply"), model=_model(data))
        except ProtocolError as exc:
            exc.ref = client_id
            raise
    if kind == "continue":
        return Continue(reply=_uuid(data, "reply"))
    if kind == "stop":
        return Stop(reply=_uuid(data, "reply"))
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        after: int | None = _field(data, "after_seq", int, required=False)
        if after is not None and after < 0:
            raise ProtocolError("invalid_field", "'after_seq' must not be negative")
        return Subscribe(
            conversation=_uuid(data, "conversation"), after_seq=after or 0, after=_subscribe_after(data)
        )
    if not isinstance(kind, str):
        raise ProtocolError("invalid_field", "'type' is required")
    raise ProtocolError("unknown_type", f"unknown frame type {kind[:40]!r}")


# --- Server frames ------------------------------------------------------------
# Every server frame type is declared once, in SERVER_FRAMES: its fields, each
# with its JSON type, whether it may be null and the values it may take. Each
# type has one builder below (``frame_<type>``, keyword-only, its parameters
# the declared fields); check_server_frame (the tests) and the page's
# static/chat/frames.js (through the generated frame_declarations.js) validate
# against the same table, and docs/protocol.md documents it (a test checks).

JsonType = Literal["string", "integer", "number", "boolean", "object", "array"]

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
        "overloaded",  # shed or refused for want of capacity (realtime/capacity.py)
        "moderation",  # a moderation rule stopped the reply (the matched text is neither shown nor saved)
        "internal",
    }
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a server frame. Every declared field is always present."""

    type: JsonType
    nullable: bool = False
    #: The only values a string field may take (None: any string).
    values: frozenset[str] | None = None
    #: An object's own fields (None: any object).
    fields: Mapping[str, FieldSpec] | None = None
    #: What each item of an array is (None: anything).
    items: FieldSpec | None = None
    #: ``(field, value)``: this field is non-null exactly when that field of
    #: the frame has that value (e.g. ``error_kind`` goes with status ``error``).
    only_when: tuple[str, str] | None = None


_ID = FieldSpec("string")  # a UUID's text
#: type -> its fields, in the order the builders write them. Frames are closed:
#: the server sends no field that is not declared here.
SERVER_FRAMES: Mapping[str, Mapping[str, FieldSpec]] = MappingProxyType(
    {
        "ack": {
            "client_id": FieldSpec("string"),
            "conversation": _ID,
            "message": _ID,
            "created": FieldSpec("boolean"),
            # The replies to the message, in column order: one for a send, a
            # regenerate or a continue; 2 to 4 for a compare (``send`` with ``models``).
            "replies": FieldSpec("array", items=_ID),
        },
        "reply_started": {
            "conversation": _ID,
            "reply": _ID,
            "model": FieldSpec("string"),
            "provider": FieldSpec("string"),
            "after_seq": FieldSpec("integer"),
        },
        "delta": {"reply": _ID, "seq": FieldSpec("integer"), "text": FieldSpec("string")},
        # The model's reasoning, numbered in the same seq as the answer's deltas.
        # The reply waits for the model (its capacity is taken): its place in
        # the queue from 1 and the work before it; sent when they change, and
        # once with position 0 when its request goes out.
        "reply_queued": {"reply": _ID, "position": FieldSpec("integer"), "ahead": FieldSpec("integer")},
        "reasoning_delta": {
            "reply": _ID,
            "seq": FieldSpec("integer"),
            "text": FieldSpec("string"),
            "redacted": FieldSpec("boolean"),
        },
        "reply_finished": {
            "conversation": _ID,
            "reply": _ID,
            "status": FieldSpec("string", values=TERMINAL_STATUSES),
            "error_kind": FieldSpec(
                "string", nullable=True, values=ERROR_KINDS, only_when=("status", "error")
            ),
            "error": FieldSpec("string", nullable=True),
            "last_seq": FieldSpec("integer"),
            "finish_reason": FieldSpec("string", nullable=True),
            "usage": FieldSpec(
                "object",
                fields={
                    "prompt_tokens": FieldSpec("integer", nullable=True),
                    "completion_tokens": FieldSpec("integer", nullable=True),
                    "counted": FieldSpec("boolean"),
                },
            ),
            "metrics": FieldSpec(
                "object",
                fields={
                    "ttft_ms": FieldSpec("number", nullable=True),
                    "tokens_per_s": FieldSpec("number", nullable=True),
                    "total_ms": FieldSpec("number", nullable=True),
                    # Time to the first piece of the answer (after any reasoning),
                    # and how long the model reasoned (None: it did not).
                    "first_answer_ms": FieldSpec("number", nullable=True),
                    "reasoning_ms": FieldSpec("number", nullable=True),
                    # How long the reply waited for the model (None: it did not wait).
                    "queued_ms": FieldSpec("number", nullable=True),
                },
            ),
            # Earlier messages of the branch not sent to the model (they did not
            # fit its window), and that window in tokens (None: not known).
            "omitted_messages": FieldSpec("integer"),
            "context_tokens": FieldSpec("integer", nullable=True),
        },
        "error": {
            "code": FieldSpec("string", values=ERROR_CODES),
            "message": FieldSpec("string"),
            "ref": FieldSpec("string", nullable=True),
        },
        "pong": {},
        # A conversation's title changed (a title made by its model, after its
        # first exchange): sent to every socket of its user, in every process.
        "conversation_updated": {"conversation": _ID, "title": FieldSpec("string")},
    }
)

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _value_problem(where: str, value: object, spec: FieldSpec) -> str | None:
    if value is None:
        return None if spec.nullable else f"{where} must not be null"
    # bool is an int subclass: it is never a number here, and nothing else is a bool.
    if not isinstance(value, _PY_TYPES[spec.type]) or (isinstance(value, bool) != (spec.type == "boolean")):
        return f"{where} is {type(value).__name__}, not {spec.type}"
    if spec.values is not None and value not in spec.values:
        return f"{where} {value!r} is not one of {sorted(spec.values)}"
    if spec.fields is not None:
        assert isinstance(value, dict)
        return _fields_problem(where, value, spec.fields)
    if spec.items is not None:
        assert isinstance(value, list)
        for i, item in enumerate(value):
            problem = _value_problem(f"{where}[{i}]", item, spec.items)
            if problem is not None:
                return problem
    return None


def _fields_problem(
    where: str, data: Mapping[str, object], fields: Mapping[str, FieldSpec], *, frame: bool = False
) -> str | None:
    extra = set(data) - set(fields) - ({"type"} if frame else set())
    if extra:
        return f"{where}: undeclared fields {sorted(extra)}"
    for name, spec in fields.items():
        if name not in data:
            return f"{where}: missing field {name!r}"
        problem = _value_problem(f"{where}.{name}", data[name], spec)
        if problem is not None:
            return problem
        if spec.only_when is not None:
            other, value = spec.only_when
            if (data[name] is not None) != (data.get(other) == value):
                return f"{where}.{name} goes with {other} {value!r} only"
    return None


def server_frame_problem(frame: object) -> str | None:
    """What is wrong with a decoded server frame against its declaration; None if nothing."""
    if not isinstance(frame, dict):
        return f"a frame is a JSON object, not {type(frame).__name__}"
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in SERVER_FRAMES:
        return f"undeclared server frame type {kind!r}"
    return _fields_problem(kind, frame, SERVER_FRAMES[kind], frame=True)


def check_server_frame(frame: object) -> None:
    """Raise AssertionError if ``frame`` does not match its declaration."""
    problem = server_frame_problem(frame)
    if problem is not None:
        raise AssertionError(problem)


def _spec_json(spec: FieldSpec) -> Data:
    data: Data = {"type": spec.type}
    if spec.nullable:
        data["nullable"] = True
    if spec.values is not None:
        data["values"] = sorted(spec.values)
    if spec.fields is not None:
        data["fields"] = {name: _spec_json(field) for name, field in spec.fields.items()}
    if spec.items is not None:
        data["items"] = _spec_json(spec.items)
    if spec.only_when is not None:
        data["only_when"] = list(spec.only_when)
    return data


def server_frames_json() -> dict[str, Data]:
    """SERVER_FRAMES as plain JSON data, for the page's validator."""
    return {
        kind: {name: _spec_json(spec) for name, spec in fields.items()}
        for kind, fields in SERVER_FRAMES.items()
    }


# --- Server frame builders: one per declared type ------------------------------


def _encode(kind: str, fields: Data) -> str:
    # "type" first: frame_type() and delta_position() read it from the text.
    text: str = json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)
    return text


def frame_ack(*, client_id: str, conversation: str, message: str, created: bool, replies: list[str]) -> str:
    """``replies``: the reply ids, in column order (one, unless a compare)."""
    return _encode(
        "ack",
        {
            "client_id": client_id,
            "conversation": conversation,
            "message": message,
            "created": created,
            "replies": replies,
        },
    )


def frame_reply_started(*, conversation: str, reply: str, model: str, provider: str, after_seq: int) -> str:
    return _encode(
        "reply_started",
        {
            "conversation": conversation,
            "reply": reply,
            "model": model,
            "provider": provider,
            "after_seq": after_seq,
        },
    )


def frame_reply_queued(*, reply: str, position: int, ahead: int) -> str:
    """The reply's place in the queue for the model (0: its request goes out now)."""
    return _encode("reply_queued", {"reply": reply, "position": position, "ahead": ahead})


_DELTA_HEAD = '{"type":"delta","reply":"'


def frame_delta(*, reply: str, seq: int, text: str) -> str:
    # The hot path: one small format instead of building and dumping a dict
    # (a test checks it against the declaration). ``reply`` is a UUID's text:
    # nothing in it needs escaping.
    return f'{{"type":"delta","reply":"{reply}","seq":{seq},"text":{json.dumps(text, ensure_ascii=False)}}}'


_REASONING_HEAD = '{"type":"reasoning_delta","reply":"'


def frame_reasoning_delta(*, reply: str, seq: int, text: str, redacted: bool) -> str:
    """A piece of the reply's reasoning (``redacted``: the provider hid some of it)."""
    return (
        f'{{"type":"reasoning_delta","reply":"{reply}","seq":{seq},'
        f'"text":{json.dumps(text, ensure_ascii=False)},"redacted":{"true" if redacted else "false"}}}'
    )


def delta_position(frame: str) -> tuple[str, int] | None:
    """The reply and ``seq`` of a frame made by :func:`frame_delta` or
    :func:`frame_reasoning_delta`; None for any other frame."""
    if frame.startswith(_DELTA_HEAD):
        start = len(_DELTA_HEAD)
    elif frame.startswith(_REASONING_HEAD):
        start = len(_REASONING_HEAD)
    else:
        return None
    end = frame.index('"', start)
    seq_at = end + len('","seq":')
    return frame[start:end], int(frame[seq_at : frame.index(",", seq_at)])


_TYPE_HEAD = '{"type":"'


def frame_type(frame: str) -> str | None:
    """The type of a frame made by a builder here, read from its head (no JSON parse)."""
    if not frame.startswith(_TYPE_HEAD):
        return None
    end = frame.find('"', len(_TYPE_HEAD))
    return frame[len(_TYPE_HEAD) : end] if end > 0 else None


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """A reply's final state: what ``reply_finished`` says, whether it comes
    from the live reply that just ended or from the database's saved row."""

    conversation: str
    reply: str
    status: str
    error_kind: str | None
    error: str | None
    last_seq: int
    finish_reason: str | None
    usage: Mapping[str, int | bool | None]
    metrics: Mapping[str, float | None]
    omitted_messages: int
    context_tokens: int | None


_NO_REASONING_METRICS = {"first_answer_ms": None, "reasoning_ms": None, "queued_ms": None}


def frame_reply_finished(*, end: ReplyEnd) -> str:
    """The one builder of ``reply_finished``. Its rules hold for every source:
    a status that is not terminal (a row still marked streaming whose process
    died) is told as ``interrupted``; ``error_kind`` goes with ``error`` only
    (``internal`` when an error has none); empty words are ``null``."""
    status = end.status if end.status in TERMINAL_STATUSES else "interrupted"
    return _encode(
        "reply_finished",
        {
            "conversation": end.conversation,
            "reply": end.reply,
            "status": status,
            "error_kind": (end.error_kind or "internal") if status == "error" else None,
            "error": end.error or None,
            "last_seq": end.last_seq,
            "finish_reason": end.finish_reason or None,
            "usage": dict(end.usage),
            # A reply that did not reason may leave out the reasoning timings.
            "metrics": {**_NO_REASONING_METRICS, **end.metrics},
            "omitted_messages": end.omitted_messages,
            "context_tokens": end.context_tokens,
        },
    )


def frame_error(*, code: str, message: str, ref: str | None = None) -> str:
    assert code in ERROR_CODES, code
    return _encode("error", {"code": code, "message": message, "ref": ref})


def frame_pong() -> str:
    """The answer to a ``ping``."""
    return _encode("pong", {})


def frame_conversation_updated(*, conversation: str, title: str) -> str:
    """A conversation's new title, for every socket of its user."""
    return _encode("conversation_updated", {"conversation": conversation, "title": title})
