"""A fake LLM upstream: OpenAI- and Anthropic-style streaming over real HTTP.

A small HTTP/1.1 server on :func:`asyncio.start_server` (stdlib only) that runs
in a background thread with its own event loop, so sync tests, async tests on
any loop, browser tests and benchmarks can all point a provider at it::

    with FakeUpstream() as fake:
        provider = OpenAIProvider("openai", {"BASE_URL": fake.openai_base_url, ...})
        ...
        record = fake.wait_for_requests(1)[0]

How a request is answered is a :class:`Scenario`: the server's ``default``,
with overrides taken from the request's ``model`` field in query-string form,
e.g. ``"fake?tokens=5&rate=0&fault=reset&after=2"``. Every request is recorded
as a :class:`RequestRecord` (headers, body, token times, text sent, whether
the client went away), which tests can wait on from any thread.

Routes: ``POST /v1/chat/completions`` (OpenAI Chat Completions),
``POST /v1/messages`` (Anthropic Messages), ``GET /v1/models`` (both
styles at once) and ``POST /v1/moderations`` (OpenAI's moderation, flagging the
words in ``FakeUpstream.flag_words``; ``moderation_status`` makes it fail). A
request that does not ask to stream gets the whole reply as one JSON body, in
each API's shape, once its stream would have ended. Streams use chunked
transfer encoding, so a connection that breaks mid-stream is always seen by
the client as broken, never as a clean end. Keep-alive is supported (HTTP/1.1
default).

The fake is a strict judge: it refuses what the real APIs refuse, with their
status and error body. Anthropic requests (and a model listing that sends an
Anthropic header) need a key, a non-empty ``x-api-key`` or (as the official SDK
sends it) ``Authorization: Bearer`` (else 401), and an ``anthropic-version``
(else 400); OpenAI requests need ``model`` and a
non-empty ``messages`` list; Anthropic requests need ``model``, a non-empty
``messages`` list of user/assistant turns and an integer ``max_tokens``. Modes
a real API never produces are refused for it (400): the Anthropic API always
reports usage and only sends its own stop reasons, and it never answers with an
empty stream or ``[DONE]``. The official ``openai`` and ``anthropic`` SDKs parse
every stream the fake sends for their API (``tests/testing/test_fakeupstream_sdks.py``).
Images are judged as strictly: a message's content may be a list of text and
(user messages only) image parts, OpenAI's ``{"type": "image_url", "image_url":
{"url": "data:image/png;base64,..."}}`` and Anthropic's ``{"type": "image",
"source": {"type": "base64", "media_type": ..., "data": ...}}``, with no other
fields, base64 that decodes, and bytes that are of the type named; only a model
in :data:`VISION_MODELS` (``fake-vision``, listed with
``architecture.input_modalities``) takes them. ``RequestRecord.images`` holds
what a request carried.

Server options, for what real servers do: ``models`` sets the ids
``/v1/models`` lists (llama.cpp lists path-shaped ones, ``/srv/models/x.gguf``);
``single_stream=True`` is a server that runs one stream at a time and, like
llama-cpp-python's server (its ``interrupt_requests``), ends a running
OpenAI-style stream when any other request arrives, ``GET /v1/models``
included: ``data: [DONE]`` with no finish reason, then the body is cut.

Run it standalone (no Django needed)::

    python -m conversations.testing.fakeupstream --port 8100 --text markdown --rate 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import http
import json
import logging
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("chatsite.fakeupstream")

FAULTS = (
    "",
    "malformed",
    "reset",
    "stall",
    "drip",
    "no_done",
    "error_event",
    "empty",
    "done_cut",
    "json",
    "json_error",
    "sse",
)
#: Faults only OpenAI-compatible servers produce (llama.cpp's server, llama-cpp-python's).
OPENAI_ONLY_FAULTS = ("empty", "done_cut")
#: Every stop_reason the Anthropic API sends.
ANTHROPIC_STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)
#: Message roles the OpenAI Chat Completions API accepts.
OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TEXTS = ("words", "markdown", "hostile", "math")
#: How a reply's reasoning is sent: OpenAI-compatible servers' two delta fields,
#: inline <think> at the start of the content, Anthropic's thinking blocks
#: (when the request turns thinking on) and its redacted_thinking.
REASONINGS = ("", "reasoning_content", "reasoning", "think", "thinking", "redacted")
OPENAI_REASONINGS = ("reasoning_content", "reasoning", "think")
ANTHROPIC_REASONINGS = ("thinking", "redacted")
#: How <think> and </think> arrive: cut across chunks, as a tokenizer cuts them.
THINK_OPEN = ("<thi", "nk>")
THINK_CLOSE = ("</th", "ink>\n\n")

#: The categories of OpenAI's moderation results (omni-moderation).
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
KEEPALIVE_IDLE_SECONDS = 120.0

MARKDOWN_REPLY = """## A fake reply

This is a **canned answer** from the fake upstream, with `inline code` \
and a [link to the docs](https://example.com/docs).

- first item
- second item with *emphasis*
- third item

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

That is all for now.

"""
#: The markdown reply split into small tokens (a word plus the whitespace after it).
MARKDOWN_TOKENS: tuple[str, ...] = tuple(re.findall(r"\S+\s*", MARKDOWN_REPLY))

#: Model output that tries every trick to run script or load a remote resource;
#: a safe client renders all of it inert.
HOSTILE_REPLY = """Here is some <b>bold</b> text.

<script>alert("script")</script>
<img src="x" onerror="alert('img')">
<svg onload="alert('svg')"><circle r="5"/></svg>
<iframe src="http://127.0.0.2:9/frame"></iframe>
<a href="javascript:alert('link')">click me</a> and [md link](javascript:alert('md'))
![remote image](http://127.0.0.2:9/pixel.png)
<img src="http://127.0.0.2:9/raw.png">
<style>body { background: url(http://127.0.0.2:9/bg.png) }</style>
<form action="http://127.0.0.2:9/steal"><input name="q"></form>
<div onclick="alert('div')" style="background-image: url(http://127.0.0.2:9/css.png)">styled</div>

The end.
"""
HOSTILE_TOKENS: tuple[str, ...] = tuple(re.findall(r"\S+\s*", HOSTILE_REPLY))

#: A reply with TeX in every delimiter a model uses, and the look-alikes that must
#: stay text: prices, math inside code, escaped dollars. Its display formulas are
#: several tokens long, so they arrive cut across deltas.
MATH_REPLY = r"""## Some math

Euler's identity $e^{i\pi} + 1 = 0$ and the area \(A = \pi r^2\) of a circle.

$$\int_0^1 x^2 \, dx = \frac{1}{3}$$

The roots of $ax^2 + bx + c = 0$ are
\[
x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}
\]

It costs $5 and $10 with tax; a dollar sign: \$3.

In code it stays code: `$x$` and

```
echo "$HOME $$"
```

That is all.
"""
MATH_TOKENS: tuple[str, ...] = tuple(re.findall(r"\S+\s*", MATH_REPLY))

MODELS = (
    ("fake", "Fake (plain words)"),
    ("fake?text=markdown&tokens=80&rate=40", "Fake (markdown)"),
    ("fake-vision", "Fake (vision)"),
)
#: The models that take images (by the part of the id before any "?"): the
#: listing says so as OpenRouter does (``architecture.input_modalities``), and
#: an image sent to any other model is refused as the APIs refuse it.
VISION_MODELS = frozenset({"fake-vision"})
#: The image types both APIs take, and the bytes each starts with.
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
_DATA_URL = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/]*={0,2})")


# --------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    """How one request is answered.

    Text: ``words`` sends "w0 ", "w1 ", ...; ``markdown`` sends MARKDOWN_REPLY in
    small tokens, repeated or cut to ``tokens`` (``hostile`` and ``math``: HOSTILE_REPLY
    and MATH_REPLY, the same way). A request's ``max_tokens`` below
    ``tokens`` cuts the reply with finish reason "length" ("max_tokens").

    Faults (streams only, but for ``stall``, ``json_error`` and ``sse``; a non-streaming
    request gets the whole reply as JSON, after ``ttft`` and the time its tokens
    would take at ``rate``: its body is pending all that while):

    - ``malformed``: after ``after`` tokens an event whose data is ``{not json``, then a clean end.
    - ``reset``: after ``after`` tokens the TCP connection is reset (RST).
    - ``stall``: after ``after`` tokens nothing more, until the client leaves.
    - ``drip``: tokens at ``rate`` forever (``tokens`` is ignored).
    - ``no_done``: the text (cut at ``after`` if set), then a clean end of the body with
      nothing after it: no finish chunk, usage or [DONE] (OpenAI); no content_block_stop,
      message_delta or message_stop (Anthropic).
    - ``error_event``: after ``after`` tokens an in-stream error event, then a clean end.
    - ``empty`` (OpenAI only): 200 and an event stream with no events at all, then a clean
      end (llama.cpp's server answering a prompt longer than its context).
    - ``done_cut`` (OpenAI only): the text (cut at ``after`` if set), then ``data: [DONE]``
      with no finish reason and no usage, then the body is cut (the connection closes
      before the chunked body's end): how llama-cpp-python's server ends an interrupted
      stream.
    - ``json``: a streaming request is answered as if it did not stream: 200 and the
      whole reply as one JSON body (``Content-Type: application/json``), as some
      proxies and batch gateways do.
    - ``json_error``: 200 and a JSON error body (OpenAI's ``{"error": {...}}``,
      Anthropic's ``{"type": "error", "error": {...}}``), to a streaming request or not
      (a proxy that wraps the upstream's failure).
    - ``sse``: a request that does not ask to stream is answered with a stream all the
      same (a server that ignores ``stream: false``; OpenAI-style, no usage without
      ``stream_options``).
    - ``stall`` with a non-streaming request: the head of the answer is sent, its body
      never (until the client leaves).

    ``usage=false``: no usage at all, not even when ``stream_options.include_usage``
    asks for it (llama-cpp-python's server never sends it). OpenAI only: the Anthropic
    API always reports usage, so its route refuses it.

    Reasoning (``reasoning``, with ``thoughts`` reasoning tokens "t0 ", "t1 ", …
    before the answer, paced like the answer's and counted by ``after``):

    - ``reasoning_content`` / ``reasoning`` (OpenAI route): in that delta field
      (DeepSeek, vLLM, llama.cpp's server / OpenRouter);
    - ``think`` (OpenAI route): inline at the start of ``content``, as
      ``<think>…</think>`` with both tags cut across chunks (Qwen3, R1);
    - ``thinking`` (Anthropic route, when the request turns thinking on, as the
      API does): a ``thinking`` block of ``thinking_delta`` events and a
      ``signature_delta``, then the text block;
    - ``redacted`` (Anthropic route, thinking on): a ``redacted_thinking`` block.

    Each route refuses the other's dialects, and the Anthropic route refuses what
    the API refuses with thinking on (a budget under 1024 or not under
    ``max_tokens``, a temperature other than 1, a final assistant message that
    does not start with a thinking block). ``RequestRecord.reasoning_sent`` is the
    reasoning written (without the tags).
    """

    tokens: int = 20
    rate: float = 50.0  # tokens per second after the first (0 = as fast as possible)
    ttft: float = 0.0  # seconds before the first token
    text: str = "words"  # "words" | "markdown" | "hostile" | "math"
    status: int = 200  # answer with this status and a JSON error body instead of streaming
    retry_after: float | None = None  # Retry-After header with a non-200 status
    fail_first: int = 0  # the first N requests with the same key fail
    key: str = ""  # groups requests for fail_first
    fault: str = ""  # see FAULTS
    after: int = 0  # tokens before the fault
    usage: bool = True
    finish_reason: str = "stop"
    reasoning: str = ""  # see REASONINGS: the reply reasons first, in that dialect
    thoughts: int = 8  # reasoning tokens ("t0 ", "t1 ", ...) before the answer's
    #: The answer's first tokens: the words of ``say`` (each with its space),
    #: then the usual ones ("fake?say=a+bad+word&tokens=6").
    say: str = ""

    @classmethod
    def from_model(cls, model: str, default: Scenario) -> Scenario:
        """``default`` overridden by the query string in ``model`` ("fake?tokens=5&rate=0").

        Raises ValueError for unknown keys or bad values.
        """
        _, _, query = model.partition("?")
        changes: dict[str, Any] = {}
        if query:
            hints = _field_types()
            try:
                pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
            except ValueError:
                raise ValueError(f"bad scenario query {query!r}") from None
            for key, raw in pairs:
                if key not in hints:
                    raise ValueError(f"unknown scenario key {key!r} (known: {', '.join(hints)})")
                changes[key] = _convert(key, hints[key], raw)
        scenario = dataclasses.replace(default, **changes)
        scenario.validate()
        return scenario

    def validate(self) -> None:
        """Raise ValueError if a field is out of range."""
        if self.tokens < 0:
            raise ValueError("tokens must not be negative")
        for name in ("rate", "ttft"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        if self.text not in TEXTS:
            raise ValueError(f"text must be one of {', '.join(TEXTS)}")
        if self.status != 200 and not 400 <= self.status <= 599:
            raise ValueError("status must be 200 or 400-599")
        if self.retry_after is not None and (not math.isfinite(self.retry_after) or self.retry_after < 0):
            raise ValueError("retry_after must be a finite number >= 0")
        if self.fail_first < 0 or self.after < 0:
            raise ValueError("fail_first and after must not be negative")
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(repr(f) for f in FAULTS)}")
        if self.fault == "drip" and self.rate <= 0:
            raise ValueError("fault=drip needs a rate > 0")
        if self.reasoning not in REASONINGS:
            raise ValueError(f"reasoning must be one of {', '.join(repr(r) for r in REASONINGS)}")
        if self.thoughts < 0:
            raise ValueError("thoughts must not be negative")

    def thought(self, index: int) -> str:
        return f"t{index} "

    def token(self, index: int) -> str:
        if self.say:
            said = self.say.split(" ")
            if index < len(said):
                return said[index] + " "
        if self.text == "markdown":
            return MARKDOWN_TOKENS[index % len(MARKDOWN_TOKENS)]
        if self.text == "hostile":
            return HOSTILE_TOKENS[index % len(HOSTILE_TOKENS)]
        if self.text == "math":
            return MATH_TOKENS[index % len(MATH_TOKENS)]
        return f"w{index} "


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Scenario)
    return {f.name: hints[f.name] for f in dataclasses.fields(Scenario)}


def _converter(name: str, hint: Any) -> Callable[[str], Any]:
    """An argparse ``type`` reading the scenario key ``name``."""
    return lambda raw: _convert(name, hint, raw)


def _convert(name: str, hint: Any, raw: str) -> Any:
    optional = False
    args = typing.get_args(hint)
    if args and type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    text = raw.strip()
    if optional and text.lower() in ("", "none", "null"):
        return None
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ValueError(f"bad value {raw!r} for scenario key {name!r}") from None
    return raw


# --------------------------------------------------------------------------
# Records


@dataclass(eq=False)
class RequestRecord:
    """One request as the server saw it; updated from the server thread while answering."""

    path: str
    method: str
    headers: dict[str, str]  # lower-cased names
    body: dict | None
    scenario: Scenario | None = None
    started_at: float = field(default_factory=time.monotonic)
    token_times: list[float] = field(default_factory=list)  # monotonic time of each text token
    disconnected_at: float | None = None  # when the client was noticed gone
    completed: bool = False  # the whole response was written
    interrupted: bool = False  # a single-stream server ended it for another request
    status: int | None = None  # the HTTP status answered
    _parts: list[str] = field(default_factory=list, repr=False)
    thought_times: list[float] = field(default_factory=list)  # monotonic time of each reasoning token
    _thoughts: list[str] = field(default_factory=list, repr=False)
    _disconnected: threading.Event = field(default_factory=threading.Event, repr=False)
    _completed: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def images(self) -> list[tuple[str, bytes]]:
        """The images the request carried, in order: (media type, bytes), either dialect."""
        found: list[tuple[str, bytes]] = []
        for message in (self.body or {}).get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else []:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image_url":
                    match = _DATA_URL.fullmatch(str((part.get("image_url") or {}).get("url", "")))
                    if match:
                        found.append((match.group(1), base64.b64decode(match.group(2))))
                elif part.get("type") == "image" and isinstance(part.get("source"), dict):
                    source = part["source"]
                    found.append(
                        (str(source.get("media_type")), base64.b64decode(str(source.get("data", ""))))
                    )
        return found

    @property
    def text_sent(self) -> str:
        """The text tokens written so far, concatenated."""
        return "".join(self._parts)

    def wait_disconnected(self, timeout: float) -> bool:
        """Block until the server noticed the client leave. Don't call from the client's loop.

        (In an async test, ``await record.wait_disconnected_async(t)`` keeps the loop
        running so the client can actually close its socket.)
        """
        return self._disconnected.wait(timeout)

    def wait_completed(self, timeout: float) -> bool:
        return self._completed.wait(timeout)

    async def wait_disconnected_async(self, timeout: float) -> bool:
        return await asyncio.to_thread(self._disconnected.wait, timeout)

    async def wait_completed_async(self, timeout: float) -> bool:
        return await asyncio.to_thread(self._completed.wait, timeout)

    def _add_token(self, text: str) -> None:
        self.token_times.append(time.monotonic())
        self._parts.append(text)

    def _add_thought(self, text: str) -> None:
        self.thought_times.append(time.monotonic())
        self._thoughts.append(text)

    @property
    def reasoning_sent(self) -> str:
        """The reasoning tokens written so far, concatenated (not the <think> tags)."""
        return "".join(self._thoughts)

    def _mark_disconnected(self) -> None:
        if self.disconnected_at is None and not self.completed:
            self.disconnected_at = time.monotonic()
            self._disconnected.set()

    def _mark_completed(self) -> None:
        self.completed = True
        self._completed.set()


# --------------------------------------------------------------------------
# HTTP plumbing


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(ConnectionError):
    pass


@dataclass
class _Request:
    method: str
    target: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    keep_alive: bool


class _Conn:
    """One client connection: buffered reads, chunked writes, EOF watching."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.keep_alive = True  # of the request being answered

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(65536)
        except OSError:
            return False
        if not data:
            return False
        self.buf += data
        return True

    async def read_request(self) -> _Request | None:
        """The next request, or None if the client closed the connection between requests."""
        while True:
            while self.buf.startswith(b"\r\n"):  # tolerated before a request line
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _HttpError(431, "request head too large")
            if not await self._fill():
                return None
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _HttpError(400, "bad header line")
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        if headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _HttpError(400, "bad content-length") from None
            if length < 0 or length > MAX_BODY_BYTES:
                raise _HttpError(413, "request body too large")
            body = await self._read_exactly(length)
        path = urlsplit(target).path or "/"
        return _Request(method, target, path, headers, body, keep_alive)

    async def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise _ClientGone("client closed the connection mid-request")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _HttpError(400, "bad chunked body")
            if not await self._fill():
                raise _ClientGone("client closed the connection mid-request")
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = (await self._read_line()).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _HttpError(400, "bad chunk size") from None
            if size == 0:
                while await self._read_line():  # trailers
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _HttpError(413, "request body too large")
            body += await self._read_exactly(size)
            await self._read_exactly(2)

    async def watch_eof(self) -> None:
        """Return when the client closes its side (or the connection breaks)."""
        while await self._fill():
            pass

    # -- writing

    def _check(self) -> None:
        if self.writer.transport.is_closing():
            raise _ClientGone("connection closed")

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._check()
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Overloaded" if status == 529 else "Error"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {formatdate(usegmt=True)}", "Server: fakeupstream"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def send_body(self, data: bytes) -> None:
        self._check()
        self.writer.write(data)
        await self.writer.drain()

    async def send_chunk(self, text: str) -> None:
        data = text.encode()
        self._check()
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self._check()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def flushed(self) -> None:
        """Wait (up to 2 s) until asyncio's write buffer is handed to the kernel."""
        self.writer.transport.set_write_buffer_limits(high=0)  # drain() now waits for an empty buffer
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.drain()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), dropping anything unsent."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _count_words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_count_words(part.get("text")) for part in content if isinstance(part, dict))
    return 0


def _prompt_tokens(body: dict) -> int:
    total = _count_words(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += _count_words(message.get("content"))
    return total


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_body(
    api: str, status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    if api == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_fake{uuid.uuid4().hex[:20]}",
        }
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _image_problem(media_type: object, data: object) -> str | None:
    """What is wrong with a base64 image of ``media_type`` (None: nothing)."""
    if media_type not in IMAGE_MAGIC:
        return f"the image type {media_type!r} is not supported: use one of {', '.join(sorted(IMAGE_MAGIC))}"
    if not isinstance(data, str) or not data:
        return "the image data is missing"
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return "the image data is not valid base64"
    if not raw.startswith(IMAGE_MAGIC[media_type]) or (media_type == "image/webp" and raw[8:12] != b"WEBP"):
        return f"Image does not match the provided media type {media_type}"
    return None


def _sees_images(model: str) -> bool:
    return model.partition("?")[0] in VISION_MODELS


def _openai_content_refusal(i: int, message: dict, model: str) -> tuple[str, str | None, str | None] | None:
    """A message's ``content``: a string, or a list of text and (user messages) image_url parts."""
    content = message.get("content")
    where = f"messages[{i}].content"
    if isinstance(content, str) or (content is None and message.get("role") == "assistant"):
        return None
    if not isinstance(content, list) or not content:
        return f"Invalid type for '{where}': expected a string or a non-empty array.", where, "invalid_type"
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                return (
                    f"Invalid '{at}': a text part is {{type, text}} with a string text.",
                    at,
                    "invalid_value",
                )
        elif kind == "image_url":
            if message.get("role") != "user":
                return (
                    f"Invalid '{at}': image_url parts are only allowed in user messages.",
                    at,
                    "invalid_value",
                )
            image = part.get("image_url")
            if (
                set(part) != {"type", "image_url"}
                or not isinstance(image, dict)
                or not isinstance(image.get("url"), str)
            ):
                return (
                    f"Invalid '{at}': an image_url part is {{type, image_url: {{url}}}}.",
                    at,
                    "invalid_value",
                )
            if set(image) - {"url", "detail"} or image.get("detail", "auto") not in ("auto", "low", "high"):
                return f"Invalid '{at}.image_url': unknown fields or detail.", at, "invalid_value"
            if not _sees_images(model):
                return (
                    "Invalid content type. image_url is only supported by certain models.",
                    at,
                    "invalid_value",
                )
            match = _DATA_URL.fullmatch(image["url"])
            if match is None:
                return (
                    f"Invalid '{at}.image_url.url': expected a base64 data URL (fake upstream).",
                    at,
                    "invalid_value",
                )
            problem = _image_problem(match.group(1), match.group(2))
            if problem:
                return f"Invalid image in '{at}': {problem}.", at, "invalid_image_format"
        else:
            return (
                f"Invalid value: '{kind}'. Supported values are: 'text' and 'image_url'.",
                f"{at}.type",
                "invalid_value",
            )
    return None


def _anthropic_content_refusal(i: int, message: dict, model: str) -> str | None:
    """A message's ``content``: a string, or a list of text and (user messages) image blocks."""
    content = message.get("content")
    if isinstance(content, str):
        return None if content else f"messages.{i}: text content blocks must be non-empty"
    if not isinstance(content, list) or not content:
        return f"messages.{i}.content: Input should be a valid list or string"
    for j, block in enumerate(content):
        at = f"messages.{i}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if set(block) != {"type", "text"} or not isinstance(block["text"], str):
                return f"{at}.text: Input should be a valid string"
            if not block["text"]:
                return f"{at}: text content blocks must be non-empty"
        elif kind == "image":
            if message.get("role") != "user":
                return f"{at}: image content blocks are only allowed in user messages"
            source = block.get("source")
            if set(block) != {"type", "source"} or not isinstance(source, dict):
                return f"{at}.source: Field required"
            if set(source) != {"type", "media_type", "data"} or source.get("type") != "base64":
                return f"{at}.source: an image source is {{type: 'base64', media_type, data}} (fake upstream)"
            if not _sees_images(model):
                return f"{at}: this model does not support image input (fake upstream)"
            problem = _image_problem(source.get("media_type"), source.get("data"))
            if problem:
                return f"{at}.source: {problem}"
        else:
            return f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
    return None


def _openai_refusal(body: dict) -> tuple[str, str | None, str | None] | None:
    """What the OpenAI API says about a body without its required fields: (message, param, code)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter", None, None
    if "messages" not in body:
        return "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
    messages = body["messages"]
    if not isinstance(messages, list):
        return (
            f"Invalid type for 'messages': expected an array, but got {_json_type(messages)} instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in OPENAI_ROLES:
            return (
                f"Invalid value for 'messages[{i}].role': expected one of {', '.join(OPENAI_ROLES)}.",
                f"messages[{i}].role",
                "invalid_value",
            )
        refused = _openai_content_refusal(i, message, model)
        if refused:
            return refused
    if "stream_options" in body and body.get("stream") is not True:
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    return None


def _anthropic_refusal(headers: dict[str, str], body: dict | None) -> tuple[int, str] | None:
    """What the Anthropic API says about a request it refuses: (status, message)."""
    bearer = headers.get("authorization", "")
    if not headers.get("x-api-key") and not bearer.removeprefix("Bearer ").strip():
        return 401, "x-api-key header is required"
    if not headers.get("anthropic-version"):
        return 400, "anthropic-version: header is required"
    if body is None:
        return None
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return 400, f"{name}: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return 400, "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return 400, "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return 400, "max_tokens: Input should be greater than or equal to 1"
    messages = body["messages"]
    if not isinstance(messages, list):
        return 400, "messages: Input should be a valid list"
    if not messages:
        return 400, "messages: at least one message is required"
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return 400, (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return 400, f"messages.{i}.role: Input should be 'user' or 'assistant'"
        problem = _anthropic_content_refusal(i, message, body["model"])
        if problem:
            return 400, problem
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
            return 400, "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled'"
        if thinking["type"] == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, bool) or not isinstance(budget, int):
                return 400, "thinking.enabled.budget_tokens: Field required"
            if budget < 1024:
                return 400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            if max_tokens <= budget:
                return 400, "`max_tokens` must be greater than `thinking.budget_tokens`"
            if "temperature" in body and body["temperature"] != 1:
                return 400, (
                    "`temperature` may only be set to 1 when thinking is enabled. "
                    "Please consult our documentation"
                )
            last = messages[-1]
            if isinstance(last, dict) and last.get("role") == "assistant":
                content = last.get("content")
                first = content[0] if isinstance(content, list) and content else content
                kind = first.get("type") if isinstance(first, dict) else "text"
                if kind not in ("thinking", "redacted_thinking"):
                    return 400, (
                        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                        f"`{kind}`. When `thinking` is enabled, a final `assistant` message must start "
                        "with a thinking block."
                    )
    return None


def _thinking_on(body: dict) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def _anthropic_dialect(scenario: Scenario, finish: str) -> str:
    """Why the Anthropic API could never answer like ``scenario`` ("" when it could)."""
    if not scenario.usage:
        return "usage=false is an OpenAI-compatible server's mode: the Anthropic API always reports usage"
    if scenario.fault in OPENAI_ONLY_FAULTS:
        return (
            f"fault={scenario.fault} is an OpenAI-compatible server's mode: the Anthropic API never sends it"
        )
    if scenario.reasoning in OPENAI_REASONINGS:
        return (
            f"reasoning={scenario.reasoning} is an OpenAI-compatible server's dialect: "
            "the Anthropic API sends thinking blocks (reasoning=thinking or redacted)"
        )
    stop = _anthropic_stop(finish)
    if stop not in ANTHROPIC_STOP_REASONS:
        known = ", ".join(ANTHROPIC_STOP_REASONS)
        return f"the Anthropic API never sends stop_reason {stop!r} (it sends {known})"
    return ""


def _json_type(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else "a value"


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------
# The server


class FakeUpstream:
    """The fake server. ``start()`` (or ``with``) runs it in a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Scenario | None = None,
        *,
        models: list[tuple[str, str]] | None = None,
        single_stream: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        #: The scenario for requests whose model has no query string; may be replaced any time.
        self.default = default or Scenario()
        self.default.validate()
        #: (id, display name) of the models ``GET /v1/models`` lists.
        self.models: list[tuple[str, str]] = list(models) if models else list(MODELS)
        #: Context windows ``GET /v1/models`` names, by model id, as vLLM does (``max_model_len``).
        self.model_windows: dict[str, int] = {}
        #: One stream at a time: any request ends a running OpenAI-style stream.
        self.single_stream = single_stream
        #: ``POST /v1/moderations`` flags an input holding one of these words
        #: (whole words, any case), in the category named: {"badword": "violence"}.
        self.flag_words: dict[str, str] = {}
        #: Not 200: ``/v1/moderations`` answers this status with an error body.
        self.moderation_status = 200
        #: Seconds ``/v1/moderations`` takes to answer.
        self.moderation_delay = 0.0
        self._running: set[asyncio.Event] = set()  # interrupt flags of the running streams
        self.requests: list[RequestRecord] = []
        self._cond = threading.Condition()
        self._fail_counts: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = False

    # -- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self._listen())
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._shutdown())
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._stopping = False
        thread = threading.Thread(target=run, name=f"fakeupstream-{self.port or 'auto'}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except Exception:  # pragma: no cover - best effort
            log.exception("fake upstream: shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # the connections' reads end, and so do their tasks
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- records

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        """All requests so far, once there are at least ``n``; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"expected {n} request(s), the fake upstream got {len(self.requests)}")
            return list(self.requests)

    async def wait_for_requests_async(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        return await asyncio.to_thread(self.wait_for_requests, n, timeout)

    def reset(self) -> None:
        """Forget the recorded requests and the fail_first counters."""
        with self._cond:
            self.requests.clear()
            self._fail_counts.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()

    def _status_for(self, scenario: Scenario) -> int:
        if scenario.fail_first <= 0:
            return scenario.status
        with self._cond:
            seen = self._fail_counts.get(scenario.key, 0) + 1
            self._fail_counts[scenario.key] = seen
        if seen <= scenario.fail_first:
            return scenario.status if scenario.status != 200 else 500
        return 200

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = _Conn(reader, writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_IDLE_SECONDS):
                        request = await conn.read_request()
                except TimeoutError:
                    break
                except _HttpError as exc:
                    conn.keep_alive = False
                    with contextlib.suppress(ConnectionError):
                        await self._send_json(
                            conn, exc.status, _error_body("openai", exc.status, exc.message)
                        )
                    break
                if request is None:
                    break
                if not await self._serve(conn, request) or not request.keep_alive:
                    break
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection; end quietly (Python 3.11's start_server
            # would log the cancelled task as an error).
            pass
        except Exception:
            log.exception("fake upstream: error while serving a connection")
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _serve(self, conn: _Conn, request: _Request) -> bool:
        """Answer one request; True if the connection can take another."""
        body: dict | None = None
        parse_error = ""
        if request.raw_body:
            try:
                loaded = json.loads(request.raw_body)
            except ValueError:
                parse_error = "the request body is not valid JSON"
            else:
                if isinstance(loaded, dict):
                    body = loaded
                else:
                    parse_error = "the request body must be a JSON object"
        record = RequestRecord(request.path, request.method, dict(request.headers), body)
        if self.single_stream:  # like llama-cpp-python: a new request ends the running stream
            for interrupt in list(self._running):
                interrupt.set()
        self._record(record)
        log.debug("%s %s %s", request.method, request.target, (body or {}).get("model", ""))

        conn.keep_alive = request.keep_alive
        response = self._respond(conn, request, record, parse_error)
        answer = asyncio.ensure_future(response)
        watch = asyncio.ensure_future(conn.watch_eof())
        try:
            done, _ = await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            answer.cancel()
            watch.cancel()
            await asyncio.gather(answer, watch, return_exceptions=True)
            raise
        if answer in done:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            try:
                return answer.result() and request.keep_alive
            except (ConnectionError, OSError):
                if not self._stopping:
                    record._mark_disconnected()
                return False
        # The client went away before the answer was done: stop writing at once.
        if not self._stopping:  # (stop() closing the connection is not the client leaving)
            record._mark_disconnected()
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        return False

    async def _respond(self, conn: _Conn, request: _Request, record: RequestRecord, parse_error: str) -> bool:
        path, method = request.path, request.method
        api = "anthropic" if path == "/v1/messages" else "openai"
        routes = {
            "/v1/models": "GET",
            "/v1/chat/completions": "POST",
            "/v1/messages": "POST",
            "/v1/moderations": "POST",
        }
        if path not in routes:
            return await self._send_error(conn, record, api, 404, f"no route for {path}")
        if method != routes[path]:
            return await self._send_error(
                conn, record, api, 405, f"use {routes[path]} for {path}", [("Allow", routes[path])]
            )
        headers = request.headers
        if path == "/v1/models":
            if "x-api-key" in headers or "anthropic-version" in headers:  # an Anthropic client
                refusal = _anthropic_refusal(headers, None)
                if refusal:
                    return await self._send_error(conn, record, "anthropic", *refusal)
            return await self._send_models(conn, record)
        if api == "anthropic" and (refusal := _anthropic_refusal(headers, None)):
            return await self._send_error(conn, record, api, *refusal)
        if parse_error:
            return await self._send_error(conn, record, api, 400, parse_error)
        body = record.body or {}
        if path == "/v1/moderations":
            return await self._send_moderation(conn, record, body)
        if api == "anthropic":
            if refusal := _anthropic_refusal(headers, body):
                return await self._send_error(conn, record, api, *refusal)
        elif refused := _openai_refusal(body):
            message, param, code = refused
            return await self._send_error(conn, record, api, 400, message, param=param, code=code)
        model = body["model"]
        try:
            scenario = Scenario.from_model(model, self.default)
        except ValueError as exc:
            return await self._send_error(conn, record, api, 400, str(exc))
        if api == "anthropic" and (wrong := _anthropic_dialect(scenario, _limit(scenario, body)[1])):
            return await self._send_error(conn, record, api, 400, f"{wrong} (fake upstream)")
        if api == "openai" and scenario.reasoning in ANTHROPIC_REASONINGS:
            wrong = (
                f"reasoning={scenario.reasoning} is the Anthropic API's dialect: "
                "use reasoning_content, reasoning or think"
            )
            return await self._send_error(conn, record, api, 400, f"{wrong} (fake upstream)")
        record.scenario = scenario
        status = self._status_for(scenario)
        if status != 200:
            extra = []
            if scenario.retry_after is not None:
                extra.append(("Retry-After", _format_seconds(scenario.retry_after)))
            message = (
                "rate limited by the fake upstream" if status == 429 else f"fake upstream error {status}"
            )
            return await self._send_error(conn, record, api, status, message, extra)
        streams = body.get("stream") is True or scenario.fault == "sse"
        if not streams or scenario.fault == "json":
            return await self._answer_whole(conn, record, scenario, api, body, model)
        if scenario.fault == "json_error":
            return await self._send_json_error(conn, record, api)
        if api == "anthropic":
            return await self._stream_anthropic(conn, record, scenario, body, model)
        return await self._stream_openai(conn, record, scenario, body, model)

    # -- simple answers

    async def _send_json(
        self, conn: _Conn, status: int, data: Any, extra: list[tuple[str, str]] | None = None
    ) -> None:
        payload = _json(data).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        await conn.send_head(status, headers + (extra or []))
        await conn.send_body(payload)

    async def _send_error(
        self,
        conn: _Conn,
        record: RequestRecord,
        api: str,
        status: int,
        message: str,
        extra: list[tuple[str, str]] | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> bool:
        record.status = status
        body = _error_body(api, status, message, param, code)
        if api == "anthropic":  # the API sends its request id as a header too
            extra = [("request-id", body["request_id"]), *(extra or [])]
        await self._send_json(conn, status, body, extra)
        record._mark_completed()
        return True

    async def _send_moderation(self, conn: _Conn, record: RequestRecord, body: dict) -> bool:
        """OpenAI's ``POST /v1/moderations``: one result per input string."""
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return await self._send_error(
                conn, record, "openai", 400, "'input' must be a string or a list of strings", param="input"
            )
        model = body.get("model", "omni-moderation-latest")
        if not isinstance(model, str) or set(body) - {"input", "model"}:
            return await self._send_error(conn, record, "openai", 400, "unexpected fields in the request")
        if self.moderation_delay:
            await asyncio.sleep(self.moderation_delay)
        if self.moderation_status != 200:
            status = self.moderation_status
            return await self._send_error(conn, record, "openai", status, f"fake moderation error {status}")
        results = []
        for text in inputs:
            hits = {
                category
                for word, category in self.flag_words.items()
                if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE)
            }
            categories = {name: name in hits for name in MODERATION_CATEGORIES}
            results.append(
                {
                    "flagged": bool(hits),
                    "categories": categories,
                    "category_scores": {name: 0.99 if on else 0.0001 for name, on in categories.items()},
                    "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
                }
            )
        record.status = 200
        answer = {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": model, "results": results}
        await self._send_json(conn, 200, answer)
        record._mark_completed()
        return True

    async def _send_models(self, conn: _Conn, record: RequestRecord) -> bool:
        data = [
            {
                "id": model_id,
                "object": "model",
                "created": 1700000000,
                "owned_by": "fakeupstream",
                "type": "model",
                "display_name": label,
                "created_at": "2023-11-14T22:13:20Z",
                **({"max_model_len": self.model_windows[model_id]} if model_id in self.model_windows else {}),
                **(
                    {"architecture": {"input_modalities": ["text", "image"]}}
                    if model_id.partition("?")[0] in VISION_MODELS
                    else {}
                ),
            }
            for model_id, label in self.models
        ]
        listing = {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }
        record.status = 200
        await self._send_json(conn, 200, listing)
        record._mark_completed()
        return True

    async def _answer_whole(
        self, conn: _Conn, record: RequestRecord, scenario: Scenario, api: str, body: dict, model: str
    ) -> bool:
        """A non-streaming request (or a stream request with ``fault=json``): the
        whole reply as one JSON body, in the API's own shape, reasoning included
        (other faults don't apply, but for ``stall`` and ``json_error``)."""
        count, finish = _limit(scenario, body)
        if scenario.fault == "stall":  # the head, then a body that never comes
            record.status = 200
            await conn.send_head(200, [("Content-Type", "application/json"), ("Content-Length", "100")])
            await asyncio.Event().wait()  # until the client leaves or the server stops
        delay = scenario.ttft + (max(count - 1, 0) / scenario.rate if scenario.rate else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if scenario.fault == "json_error":
            return await self._send_json_error(conn, record, api)
        text = "".join(scenario.token(i) for i in range(count))
        thoughts = ""
        if scenario.reasoning:
            thoughts = "".join(scenario.thought(i) for i in range(scenario.thoughts))
        prompt = _prompt_tokens(body)
        if api == "anthropic":
            blocks: list[dict] = []
            if _thinking_on(body) and scenario.reasoning == "redacted":
                blocks.append({"type": "redacted_thinking", "data": FAKE_REDACTED_DATA})
                thoughts = ""
            elif _thinking_on(body) and scenario.reasoning == "thinking":
                blocks.append({"type": "thinking", "thinking": thoughts, "signature": FAKE_SIGNATURE})
            else:
                thoughts = ""
            blocks.append({"type": "text", "text": text})
            output = count + scenario.thoughts * bool(thoughts)
            data: dict = {
                "id": f"msg_fake{uuid.uuid4().hex[:20]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": _anthropic_stop(finish),
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": output},  # always (usage=false is refused)
            }
        else:
            message: dict = {"role": "assistant", "content": text}
            if scenario.reasoning == "think":
                message["content"] = f"{''.join(THINK_OPEN)}{thoughts}{''.join(THINK_CLOSE)}{text}"
            elif scenario.reasoning:
                message[scenario.reasoning] = thoughts
            output = count + scenario.thoughts * bool(thoughts)
            data = {
                "id": f"chatcmpl-fake{uuid.uuid4().hex[:20]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            }
            if scenario.usage:
                data["usage"] = {
                    "prompt_tokens": prompt,
                    "completion_tokens": output,
                    "total_tokens": prompt + output,
                }
        record.status = 200
        # Recorded as written before the write: a client may read the body first.
        if thoughts:
            for i in range(scenario.thoughts):
                record._add_thought(scenario.thought(i))
        for i in range(count):
            record._add_token(scenario.token(i))
        await self._send_json(conn, 200, data)
        record._mark_completed()
        return True

    async def _send_json_error(self, conn: _Conn, record: RequestRecord, api: str) -> bool:
        """``fault=json_error``: 200, and the body of an error (a proxy wrapping a failure)."""
        record.status = 200
        if api == "anthropic":
            error: dict = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "the fake upstream injected an error"},
            }
        else:
            error = {
                "error": {
                    "message": "the fake upstream injected an error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        await self._send_json(conn, 200, error)
        record._mark_completed()
        return True

    # -- streams

    async def _start_stream(self, conn: _Conn, record: RequestRecord) -> None:
        record.status = 200
        await conn.send_head(
            200,
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "chunked"),
            ],
        )

    async def _tokens(
        self,
        conn: _Conn,
        record: RequestRecord,
        scenario: Scenario,
        count: int,
        event: Callable[[str], str],
        interrupt: asyncio.Event | None = None,
        prelude: list[tuple[str, str]] | None = None,
        thought: Callable[[str, str], str] | None = None,
    ) -> str:
        """Write the text tokens, paced; return the fault to inject now ("" when none).

        ``prelude``: (kind, text) pieces sent first, paced like tokens and counted
        by ``after``: kind "thought" (a reasoning token) or "tag" (a piece of
        <think> or </think>), written by ``thought(kind, text)``.

        "interrupted" when ``interrupt`` was set (a single-stream server got another request).
        """
        prelude = prelude or []
        lead = len(prelude)
        count += lead
        fault = scenario.fault
        fault_at = scenario.after if fault in ("malformed", "reset", "stall", "error_event") else None
        if fault in ("no_done", "done_cut") and scenario.after:
            count = min(count, scenario.after)
        drip = fault == "drip"
        interval = 1.0 / scenario.rate if scenario.rate > 0 else 0.0
        if scenario.ttft and await _pause(scenario.ttft, interrupt):
            return "interrupted"
        loop = asyncio.get_running_loop()
        first = loop.time()
        i = 0
        while drip or i < count:
            if i:
                if interval:
                    delay = first + i * interval - loop.time()
                    if delay > 0 and await _pause(delay, interrupt):
                        return "interrupted"
                elif i % 32 == 0:
                    await asyncio.sleep(0)  # let other streams run
            else:
                first = loop.time()
            if interrupt is not None and interrupt.is_set():
                return "interrupted"
            if i == fault_at:
                return fault
            if i < lead:
                assert thought is not None
                kind, text = prelude[i]
                await conn.send_chunk(thought(kind, text))
                if kind == "thought":
                    record._add_thought(text)
                i += 1
                continue
            text = scenario.token(i - lead)
            await conn.send_chunk(event(text))
            record._add_token(text)
            i += 1
        if fault_at is not None:  # after >= tokens: the fault comes after the text
            if interval and count:
                await asyncio.sleep(interval)
            return fault
        return fault if fault in ("no_done", "done_cut") else ""

    async def _inject(self, conn: _Conn, record: RequestRecord, fault: str, bad: str, error: str) -> bool:
        """Carry out a fault; True if the connection can be reused."""
        if fault == "reset":
            await conn.flushed()
            conn.reset()
            return False
        if fault == "stall":
            await asyncio.Event().wait()  # until the client leaves or the server stops
        if fault == "malformed":
            await conn.send_chunk(bad)
        elif fault == "error_event":
            await conn.send_chunk(error)
        await conn.end_chunks()  # malformed, error_event, no_done: a clean end of the body
        record._mark_completed()
        return True

    async def _stream_openai(
        self, conn: _Conn, record: RequestRecord, scenario: Scenario, body: dict, model: str
    ) -> bool:
        count, finish = _limit(scenario, body)
        options = body.get("stream_options")
        include_usage = scenario.usage and isinstance(options, dict) and bool(options.get("include_usage"))
        head = _json(
            {
                "id": f"chatcmpl-fake{uuid.uuid4().hex[:20]}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
        )[:-1]

        def chunk(choices: str, extra: str = "") -> str:
            return f'data: {head},"choices":{choices}{extra}}}\n\n'

        def token(text: str) -> str:
            return chunk(f'[{{"index":0,"delta":{{"content":{_json(text)}}},"finish_reason":null}}]')

        field = "content" if scenario.reasoning == "think" else scenario.reasoning

        def thought(kind: str, text: str) -> str:
            return chunk(f'[{{"index":0,"delta":{{"{field}":{_json(text)}}},"finish_reason":null}}]')

        prelude = _prelude(scenario)
        await self._start_stream(conn, record)
        if scenario.fault == "empty":  # no events at all
            await conn.end_chunks()
            record._mark_completed()
            return True
        interrupt = asyncio.Event() if self.single_stream else None
        if interrupt is not None:
            self._running.add(interrupt)
        try:
            await conn.send_chunk(chunk('[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]'))
            fault = await self._tokens(conn, record, scenario, count, token, interrupt, prelude, thought)
        finally:
            if interrupt is not None:
                self._running.discard(interrupt)
        if fault in ("done_cut", "interrupted"):
            # [DONE] with no finish reason, then the connection closes before the body's end.
            record.interrupted = fault == "interrupted"
            await conn.send_chunk("data: [DONE]\n\n")
            await conn.flushed()
            conn.writer.close()
            return False
        if fault:
            error = _json(
                {"error": {"message": "the fake upstream injected an error", "type": "server_error"}}
            )
            return await self._inject(conn, record, fault, "data: {not json\n\n", f"data: {error}\n\n")
        await conn.send_chunk(chunk(f'[{{"index":0,"delta":{{}},"finish_reason":{_json(finish)}}}]'))
        if include_usage:
            prompt = _prompt_tokens(body)
            count += len(record._thoughts)
            usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
            await conn.send_chunk(chunk("[]", f',"usage":{_json(usage)}'))
        await conn.send_chunk("data: [DONE]\n\n")
        await conn.end_chunks()
        record._mark_completed()
        return True

    async def _stream_anthropic(
        self, conn: _Conn, record: RequestRecord, scenario: Scenario, body: dict, model: str
    ) -> bool:
        count, finish = _limit(scenario, body)

        def event(name: str, data: str) -> str:
            return f"event: {name}\ndata: {data}\n\n"

        # With thinking on, block 0 is the thinking (or redacted_thinking) block
        # and the answer's text is block 1.
        thinking = _thinking_on(body)
        redacted = thinking and scenario.reasoning == "redacted"
        text_index = 1 if thinking else 0

        def token(text: str) -> str:
            return event(
                "content_block_delta",
                f'{{"type":"content_block_delta","index":{text_index},'
                f'"delta":{{"type":"text_delta","text":{_json(text)}}}}}',
            )

        def thought(kind: str, text: str) -> str:
            if kind == "tag":  # the end of the thinking block, the start of the text
                signature = {"type": "signature_delta", "signature": FAKE_SIGNATURE}
                return (
                    event(
                        "content_block_delta",
                        _json({"type": "content_block_delta", "index": 0, "delta": signature}),
                    )
                    + event("content_block_stop", '{"type":"content_block_stop","index":0}')
                    + event(
                        "content_block_start",
                        '{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}',
                    )
                )
            return event(
                "content_block_delta",
                f'{{"type":"content_block_delta","index":0,'
                f'"delta":{{"type":"thinking_delta","thinking":{_json(text)}}}}}',
            )

        prelude: list[tuple[str, str]] = []
        if thinking and not redacted:
            prelude = [("thought", scenario.thought(i)) for i in range(scenario.thoughts)] + [("tag", "")]

        message: dict = {
            "id": f"msg_fake{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": 1},  # always, as the API does
        }
        await self._start_stream(conn, record)
        await conn.send_chunk(event("message_start", _json({"type": "message_start", "message": message})))
        if redacted:
            block = {"type": "redacted_thinking", "data": FAKE_REDACTED_DATA}
            await conn.send_chunk(
                event(
                    "content_block_start",
                    _json({"type": "content_block_start", "index": 0, "content_block": block}),
                )
            )
            await conn.send_chunk(event("content_block_stop", '{"type":"content_block_stop","index":0}'))
        first: dict = {"type": "content_block_start", "index": text_index}
        first["content_block"] = {"type": "text", "text": ""}
        if thinking and not redacted:
            first["index"] = 0
            first["content_block"] = {"type": "thinking", "thinking": "", "signature": ""}
        await conn.send_chunk(event("content_block_start", _json(first)))
        await conn.send_chunk(event("ping", '{"type":"ping"}'))
        fault = await self._tokens(conn, record, scenario, count, token, None, prelude, thought)
        if fault:
            error = _json(
                {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "the fake upstream injected an error"},
                }
            )
            return await self._inject(
                conn,
                record,
                fault,
                event("content_block_delta", "{not json"),
                event("error", error),
            )
        await conn.send_chunk(
            event("content_block_stop", f'{{"type":"content_block_stop","index":{text_index}}}')
        )
        delta: dict = {
            "type": "message_delta",
            "delta": {"stop_reason": _anthropic_stop(finish), "stop_sequence": None},
            "usage": {"output_tokens": count + len(record._thoughts)},
        }
        await conn.send_chunk(event("message_delta", _json(delta)))
        await conn.send_chunk(event("message_stop", '{"type":"message_stop"}'))
        await conn.end_chunks()
        record._mark_completed()
        return True


async def _pause(seconds: float, interrupt: asyncio.Event | None) -> bool:
    """Sleep; True (at once) if ``interrupt`` is set meanwhile."""
    if interrupt is None:
        await asyncio.sleep(seconds)
        return False
    try:
        async with asyncio.timeout(seconds):
            await interrupt.wait()
    except TimeoutError:
        return False
    return True


#: What the fake signs a thinking block with, and the "encrypted" redacted thinking.
FAKE_SIGNATURE = "ZmFrZSBzaWduYXR1cmU="
FAKE_REDACTED_DATA = "ZmFrZSByZWRhY3RlZCB0aGlua2luZw=="


def _prelude(scenario: Scenario) -> list[tuple[str, str]]:
    """The reasoning an OpenAI-compatible stream sends before the answer."""
    if scenario.reasoning not in OPENAI_REASONINGS:
        return []
    thoughts = [("thought", scenario.thought(i)) for i in range(scenario.thoughts)]
    if scenario.reasoning != "think":
        return thoughts
    return [("tag", t) for t in THINK_OPEN] + thoughts + [("tag", t) for t in THINK_CLOSE]


def _limit(scenario: Scenario, body: dict) -> tuple[int, str]:
    """Token count and finish reason, honouring the request's max_tokens."""
    count, finish = scenario.tokens, scenario.finish_reason
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < count:
        count, finish = limit, "length"
    return count, finish


def _anthropic_stop(finish: str) -> str:
    return {"stop": "end_turn", "length": "max_tokens"}.get(finish, finish)


# --------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m conversations.testing.fakeupstream`` and ``manage.py fakeupstream``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port (default 8100; 0 picks a free one)")
    parser.add_argument("--log-requests", action="store_true", help="log every request")
    parser.add_argument(
        "--model-id",
        action="append",
        dest="model_ids",
        metavar="ID",
        help="list this model id in /v1/models instead of the fake's own (repeatable; "
        "e.g. a path like llama.cpp's /srv/models/x.gguf)",
    )
    parser.add_argument(
        "--single-stream",
        action="store_true",
        help="one stream at a time: any other request ends a running stream with [DONE] and a cut body "
        "(llama-cpp-python's interrupt_requests)",
    )
    defaults = Scenario()
    group = parser.add_argument_group("default scenario (a model 'fake?key=value&...' overrides it)")
    for name, hint in _field_types().items():
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_converter(name, hint),
            default=getattr(defaults, name),
            metavar=name.upper(),
            help=f"default {getattr(defaults, name)!r}",
        )


def serve(options: dict[str, Any], out: Any = None) -> None:
    """Run a fake upstream until Ctrl-C or SIGTERM."""
    out = out or sys.stdout
    names = [f.name for f in dataclasses.fields(Scenario)]
    default = Scenario(**{n: options[n] for n in names if n in options})
    default.validate()
    if options.get("log_requests"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        log.setLevel(logging.DEBUG)
    ids = options.get("model_ids") or []
    fake = FakeUpstream(
        options.get("host") or "127.0.0.1",
        options.get("port") or 0,
        default,
        models=[(model_id, model_id) for model_id in ids] or None,
        single_stream=bool(options.get("single_stream")),
    )
    stopping = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    fake.start()
    try:
        out.write(
            f"fake upstream listening on {fake.url}\n"
            f"  OpenAI base URL:    {fake.openai_base_url}\n"
            f"  Anthropic base URL: {fake.anthropic_base_url}\n"
            f"  models: {', '.join(m for m, _ in fake.models)} (or 'fake?tokens=5&rate=0&...')\n"
        )
        out.flush()
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:  # a second Ctrl-C must not interrupt the shutdown
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        fake.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        out.write("fake upstream stopped\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m conversations.testing.fakeupstream",
        description="A fake OpenAI/Anthropic-compatible LLM server for tests and benchmarks.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(vars(args))
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
