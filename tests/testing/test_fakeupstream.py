"""The fake LLM upstream itself: scenario parsing, pacing, faults, disconnects, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conversations.testing.fakeupstream import (
    MARKDOWN_REPLY,
    MARKDOWN_TOKENS,
    MATH_REPLY,
    MATH_TOKENS,
    FakeUpstream,
    Scenario,
)

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hi"}]
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test-not-secret", "anthropic-version": "2023-06-01"}


def chat(fake, model: str, *, stream: bool = True, **extra) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(fake.openai_base_url + "/chat/completions", json=body, timeout=10)


def messages(fake, model: str, *, headers=ANTHROPIC_HEADERS, **extra) -> httpx.Response:
    body = {"model": model, "stream": True, "max_tokens": 100, "messages": HI, **extra}
    return httpx.post(fake.anthropic_base_url + "/v1/messages", json=body, headers=headers, timeout=10)


def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]


def raw_stream_request(fake, model: str, *, stream: bool = True) -> socket.socket:
    """Send a (streaming) request on a plain socket (so the test decides when to hang up)."""
    body = json.dumps({"model": model, "stream": stream, "messages": HI}).encode()
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}"
        data += chunk
    return data


# -- scenarios


def test_scenario_from_model_parses_typed_overrides():
    default = Scenario(tokens=7, text="markdown")

    assert Scenario.from_model("fake", default) == default
    parsed = Scenario.from_model(
        "fake?tokens=5&rate=0&fault=reset&after=2&usage=false&retry_after=1.5&key=a+b", default
    )
    assert parsed == Scenario(
        tokens=5, rate=0.0, text="markdown", fault="reset", after=2, usage=False, retry_after=1.5, key="a b"
    )
    assert isinstance(parsed.tokens, int) and isinstance(parsed.rate, float)
    assert Scenario.from_model("fake?retry_after=none", Scenario(retry_after=3)).retry_after is None
    assert default == Scenario(tokens=7, text="markdown")  # not modified


@pytest.mark.parametrize(
    "model",
    [
        "fake?tokenz=3",
        "fake?tokens=many",
        "fake?fault=explode",
        "fake?text=poetry",
        "fake?usage=maybe",
        "fake?status=302",
        "fake?rate=-1",
        "fake?fault=drip&rate=0",
        "fake?tokens",
    ],
)
def test_scenario_from_model_rejects_bad_input(model):
    with pytest.raises(ValueError):
        Scenario.from_model(model, Scenario())


def test_unknown_key_is_answered_with_400_in_each_apis_shape(fake):
    openai = chat(fake, "fake?bogus=1")
    anthropic = messages(fake, "fake?bogus=1")

    assert openai.status_code == 400
    assert "unknown scenario key 'bogus'" in openai.json()["error"]["message"]
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"
    assert "unknown scenario key 'bogus'" in anthropic.json()["error"]["message"]
    assert fake.requests[0].scenario is None


def test_unknown_route_and_wrong_method(fake):
    assert httpx.get(fake.url + "/v2/nothing", timeout=10).status_code == 404
    assert httpx.get(fake.openai_base_url + "/chat/completions", timeout=10).status_code == 405


def test_openai_stream_shape(fake):
    response = chat(fake, "fake?tokens=3&rate=0", stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    data = sse_data(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == ["w0 ", "w1 ", "w2 "]
    assert chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_usage_chunk_only_when_asked_for(fake):
    chunks = [json.loads(d) for d in sse_data(chat(fake, "fake?tokens=2&rate=0"))[:-1]]

    assert all("usage" not in c for c in chunks)


def test_markdown_text_repeats_and_truncates(fake):
    n = len(MARKDOWN_TOKENS)
    whole = chat(fake, f"fake?text=markdown&tokens={n + 3}&rate=0", stream=False).json()
    text = whole["choices"][0]["message"]["content"]

    assert text == MARKDOWN_REPLY + "".join(MARKDOWN_TOKENS[:3])
    for needle in ("## ", "- first item", "**canned answer**", "```python\n", "[link to the docs]("):
        assert needle in text


def test_math_text_streams_its_formulas_cut_across_tokens(fake):
    n = len(MATH_TOKENS)
    whole = chat(fake, f"fake?text=math&tokens={n}&rate=0", stream=False).json()

    assert whole["choices"][0]["message"]["content"] == MATH_REPLY
    # The first display formula arrives in several pieces: the page sees it open first.
    opening = next(i for i, token in enumerate(MATH_TOKENS) if token.startswith("$$"))
    assert not MATH_TOKENS[opening].rstrip().endswith("$$")
    for needle in ("\\(A = \\pi r^2\\)", "\\, dx", "$5 and $10", "`$x$`"):
        assert needle in MATH_REPLY


def test_tokens_are_paced_at_the_rate_after_ttft(fake):
    response = chat(fake, "fake?tokens=11&rate=20&ttft=0.3")
    record = fake.wait_for_requests(1)[0]

    assert response.status_code == 200
    assert len(record.token_times) == 11
    assert record.text_sent == "".join(f"w{i} " for i in range(11))
    assert record.token_times[0] - record.started_at >= 0.28
    spread = record.token_times[-1] - record.token_times[0]
    assert 0.45 <= spread < 5.0  # ten gaps of 1/20 s (generous upper bound: noisy machines)
    assert record.wait_completed(2)


def test_fail_first_counts_per_key_and_reset_forgets(fake):
    model = "fake?tokens=1&rate=0&fail_first=2&status=503&retry_after=4&key=k1"

    first, second, third = (chat(fake, model) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "4"
    assert chat(fake, "fake?tokens=1&rate=0&fail_first=1&key=k2").status_code == 500  # its own counter
    fake.reset()
    assert fake.requests == []
    assert chat(fake, model).status_code == 503


def test_models_listing(fake):
    listing = httpx.get(fake.openai_base_url + "/models", timeout=10).json()

    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [
        "fake",
        "fake?text=markdown&tokens=80&rate=40",
        "fake-vision",
    ]
    assert all(m["object"] == "model" and m["display_name"] for m in listing["data"])


# -- a strict judge: what the real APIs refuse


@pytest.mark.parametrize(
    ("headers", "status", "kind", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error", "x-api-key header is required"),
        (
            {"x-api-key": "", "anthropic-version": "2023-06-01"},
            401,
            "authentication_error",
            "x-api-key header is required",
        ),
        ({"x-api-key": "sk-ant-x"}, 400, "invalid_request_error", "anthropic-version: header is required"),
    ],
    ids=["no key", "an empty key", "no version"],
)
def test_anthropic_requests_need_a_key_and_a_version_like_the_real_api(fake, headers, status, kind, message):
    for response in (
        messages(fake, "fake?tokens=2&rate=0", headers=headers),
        httpx.get(fake.anthropic_base_url + "/v1/models", headers=headers, timeout=10),
    ):
        assert response.status_code == status
        body = response.json()
        assert body["type"] == "error" and body["error"] == {"type": kind, "message": message}
        assert body["request_id"].startswith("req_")
    assert all(r.scenario is None for r in fake.requests)  # nothing was streamed
    assert messages(fake, "fake?tokens=2&rate=0").status_code == 200  # with both: fine


def test_an_openai_model_listing_needs_no_anthropic_headers(fake):
    assert httpx.get(fake.openai_base_url + "/models", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [
        ({"messages": HI}, "you must provide a model parameter", None, None),
        (
            {"model": "fake"},
            "Missing required parameter: 'messages'.",
            "messages",
            "missing_required_parameter",
        ),
        ({"model": "fake", "messages": []}, "Invalid 'messages': empty array.", "messages", "empty_array"),
        (
            {"model": "fake", "messages": "hi"},
            "expected an array, but got a string",
            "messages",
            "invalid_type",
        ),
        (
            {"model": "fake", "messages": [{"content": "hi"}]},
            "Invalid value for 'messages[0].role'",
            "messages[0].role",
            "invalid_value",
        ),
    ],
    ids=["no model", "no messages", "empty messages", "messages not a list", "a message without a role"],
)
def test_openai_requests_need_model_and_messages(fake, body, message, param, code):
    response = httpx.post(
        fake.openai_base_url + "/chat/completions", json={"stream": True, **body}, timeout=10
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"messages": None}, "messages: Field required"),
        ({"model": None}, "model: Field required"),
        ({"max_tokens": "100"}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages": [{"role": "system", "content": "be terse"}, *HI]}, 'Unexpected role "system"'),
    ],
    ids=["no max_tokens", "no messages", "no model", "max_tokens text", "max_tokens 0", "no turns", "system"],
)
def test_anthropic_requests_need_model_messages_and_max_tokens(fake, change, message):
    body = {"model": "fake?tokens=2&rate=0", "stream": True, "max_tokens": 100, "messages": HI, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = httpx.post(
        fake.anthropic_base_url + "/v1/messages", json=body, headers=ANTHROPIC_HEADERS, timeout=10
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("fake?usage=false", "the Anthropic API always reports usage"),
        ("fake?fault=empty", "the Anthropic API never sends it"),
        ("fake?fault=done_cut", "the Anthropic API never sends it"),
        ("fake?finish_reason=content_filter", "never sends stop_reason 'content_filter'"),
    ],
)
def test_the_anthropic_route_refuses_modes_the_real_api_never_produces(fake, model, words):
    response = messages(fake, model)

    assert response.status_code == 400
    assert words in response.json()["error"]["message"]
    assert messages(fake, "fake?tokens=1&rate=0&finish_reason=refusal").status_code == 200


# -- what real servers do


def test_an_empty_event_stream(fake):
    response = chat(fake, "fake?fault=empty")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""
    assert fake.wait_for_requests(1)[0].wait_completed(2)


def test_done_without_a_finish_reason_then_a_cut_body(fake):
    sock = raw_stream_request(fake, "fake?tokens=9&rate=0&fault=done_cut&after=3")
    data = read_to_close(sock)
    sock.close()

    head, _, body = data.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"chunked" in head.lower()
    assert b'"w2 "' in body and b'"w3 "' not in body
    assert body.rstrip().endswith(b"data: [DONE]")  # and then no end of the chunked body
    assert not body.endswith(b"0\r\n\r\n")
    assert b'"finish_reason":"' not in body and b'"usage"' not in body
    with pytest.raises(httpx.RemoteProtocolError):
        chat(fake, "fake?tokens=2&rate=0&fault=done_cut")


def test_no_usage_chunk_even_when_asked_for(fake):
    response = chat(fake, "fake?tokens=2&rate=0&usage=false", stream_options={"include_usage": True})
    chunks = [json.loads(d) for d in sse_data(response)[:-1]]

    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all("usage" not in c for c in chunks)


def test_path_shaped_model_ids_are_listed_and_answered():
    ids = [("/srv/models/x.gguf", "x.gguf"), ("org/name", "org/name"), ("llama3:8b", "llama3:8b")]
    with FakeUpstream(models=ids, default=Scenario(tokens=2, rate=0)) as fake:
        listing = httpx.get(fake.openai_base_url + "/models", timeout=10).json()
        response = chat(fake, "/srv/models/x.gguf")

    assert [m["id"] for m in listing["data"]] == ["/srv/models/x.gguf", "org/name", "llama3:8b"]
    chunks = [json.loads(d) for d in sse_data(response)[:-1]]
    assert {c["model"] for c in chunks} == {"/srv/models/x.gguf"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "w0 w1 "


@pytest.mark.parametrize("other", ["a chat", "a model listing"])
def test_a_single_stream_server_ends_a_running_stream_when_another_request_arrives(other):
    with FakeUpstream(single_stream=True) as fake:
        sock = raw_stream_request(fake, "fake?tokens=100&rate=20")
        read_until(sock, b'"w1 "')
        if other == "a chat":
            second = chat(fake, "fake?tokens=2&rate=0")
            assert sse_data(second)[-1] == "[DONE]"  # the newcomer is answered in full
        else:
            assert httpx.get(fake.openai_base_url + "/models", timeout=10).status_code == 200
        rest = read_to_close(sock)
        sock.close()
        first = fake.requests[0]

    assert first.interrupted and not first.completed and first.disconnected_at is None
    assert rest.rstrip().endswith(b"data: [DONE]") and not rest.endswith(b"0\r\n\r\n")
    assert len(first.token_times) < 100
    assert not fake.requests[1].interrupted


def test_streams_side_by_side_are_not_interrupted_by_default(fake):
    sock = raw_stream_request(fake, "fake?tokens=4&rate=20")
    read_until(sock, b'"w0 "')
    assert chat(fake, "fake?tokens=1&rate=0").status_code == 200
    rest = read_until(sock, b"0\r\n\r\n")
    sock.close()

    assert b'"finish_reason":"stop"' in rest and not fake.requests[0].interrupted


def test_keep_alive_connection_serves_several_requests(fake):
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            response = client.post(
                fake.openai_base_url + "/chat/completions",
                json={"model": "fake?tokens=2&rate=0", "stream": True, "messages": HI},
            )
            assert response.status_code == 200 and sse_data(response)[-1] == "[DONE]"
            assert response.headers.get("connection") != "close"
    assert len(fake.wait_for_requests(3)) == 3


# -- disconnects


# -- whole answers, and servers that answer a stream request with JSON


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_whole_openai_answer_carries_its_reasoning_in_the_message(fake, field):
    whole = chat(fake, f"fake?tokens=2&rate=0&reasoning={field}&thoughts=3", stream=False)

    assert whole.headers["content-type"] == "application/json"
    message = whole.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "w0 w1 ", field: "t0 t1 t2 "}
    assert whole.json()["usage"]["completion_tokens"] == 2 + 3
    assert fake.wait_for_requests(1)[0].reasoning_sent == "t0 t1 t2 "


def test_a_stream_request_with_the_json_fault_gets_the_whole_answer(fake):
    response = chat(fake, "fake?tokens=3&rate=0&fault=json", stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "w0 w1 w2 "
    anthropic = messages(fake, "fake?tokens=2&rate=0&fault=json")
    assert anthropic.headers["content-type"] == "application/json"
    assert anthropic.json()["content"] == [{"type": "text", "text": "w0 w1 "}]


@pytest.mark.parametrize("stream", [True, False])
def test_the_json_error_fault_answers_200_with_an_error_body(fake, stream):
    response = chat(fake, "fake?fault=json_error", stream=stream)

    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"] == "the fake upstream injected an error"
    anthropic = messages(fake, "fake?fault=json_error", stream=stream)
    assert anthropic.status_code == 200
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"


def test_a_whole_answer_is_pending_until_ttft_and_a_client_leaving_is_noticed(fake):
    sock = raw_stream_request(fake, "fake?tokens=2&ttft=30", stream=False)
    record = fake.wait_for_requests(1)[0]

    assert not record.wait_disconnected(0.3)  # waiting: nothing sent, nothing noticed
    sock.close()
    assert record.wait_disconnected(2)
    assert not record.completed and record.text_sent == ""


def test_a_stalled_whole_answer_sends_its_head_and_never_its_body(fake):
    sock = raw_stream_request(fake, "fake?tokens=2&fault=stall", stream=False)
    head = read_until(sock, b"\r\n\r\n")
    record = fake.wait_for_requests(1)[0]

    assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head
    sock.close()
    assert record.wait_disconnected(2)
    assert not record.completed


def test_disconnect_noticed_while_stalled(fake):
    sock = raw_stream_request(fake, "fake?tokens=5&rate=0&fault=stall&after=1")
    read_until(sock, b'"w0 "')
    record = fake.wait_for_requests(1)[0]

    assert not record.wait_disconnected(0.3)  # still connected: not noticed
    sock.close()
    assert record.wait_disconnected(2)
    assert record.disconnected_at is not None and not record.completed
    assert record.text_sent == "w0 "


def test_disconnect_noticed_between_slow_tokens(fake):
    sock = raw_stream_request(fake, "fake?tokens=5&rate=0.5")  # two seconds between tokens
    read_until(sock, b'"w0 "')
    sock.close()
    record = fake.wait_for_requests(1)[0]

    assert record.wait_disconnected(1.5)
    time.sleep(2.5)
    assert len(record.token_times) == 1  # nothing written after the client left


def test_reset_fault_aborts_the_connection(fake):
    sock = raw_stream_request(fake, "fake?tokens=5&rate=0&fault=reset&after=2")
    data = b""
    with pytest.raises(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()

    assert b'"w1 "' in data and b'"w2 "' not in data


def test_stop_closes_open_streams():
    fake = FakeUpstream().start()
    sock = raw_stream_request(fake, "fake?fault=stall")
    read_until(sock, b"assistant")
    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 5
    assert fake.requests[0].disconnected_at is None  # the server hung up, not the client
    sock.settimeout(5)
    try:
        rest = sock.recv(65536)
    except ConnectionResetError:
        rest = b""
    assert rest == b""  # closed, not stalled
    sock.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(fake.url + "/v1/models", timeout=2)


async def test_hundreds_of_concurrent_streams(fake):
    n = 300
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> str:
            body = {"model": "fake?tokens=10&rate=20", "stream": True, "messages": HI}
            async with client.stream("POST", fake.openai_base_url + "/chat/completions", json=body) as r:
                r.raise_for_status()
                return "".join([chunk async for chunk in r.aiter_text()])

        started = time.monotonic()
        bodies = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.monotonic() - started

    assert all(b.rstrip().endswith("data: [DONE]") and '"w9 "' in b for b in bodies)
    assert elapsed < 20  # each stream takes ~0.45 s; they must run side by side
    records = fake.wait_for_requests(n)
    assert all([await r.wait_completed_async(2) for r in records])


# -- the command line


def test_module_does_not_need_django():
    code = "import sys, conversations.testing.fakeupstream; assert 'django' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


def test_cli_serves_until_interrupted():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    command = [
        sys.executable,
        "-m",
        "conversations.testing.fakeupstream",
        "--port",
        "0",
        "--tokens",
        "3",
        "--rate",
        "0",
    ]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            first_line = proc.stdout.readline()
            assert first_line.startswith("fake upstream listening on http://127.0.0.1:"), first_line
            url = first_line.split()[-1]
            response = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "fake", "stream": True, "messages": HI},
                timeout=10,
            )
            chunks = [json.loads(d) for d in sse_data(response)[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            assert text == "w0 w1 w2 "
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_management_command_accepts_the_same_options():
    from conversations.management.commands.fakeupstream import Command

    options = (
        Command()
        .create_parser("manage.py", "fakeupstream")
        .parse_args(
            [
                *("--port", "0", "--tokens", "4", "--fault", "drip", "--usage", "no", "--retry-after", "2"),
                *("--model-id", "/srv/models/x.gguf", "--model-id", "org/name", "--single-stream"),
            ]
        )
    )
    assert options.model_ids == ["/srv/models/x.gguf", "org/name"] and options.single_stream is True

    assert (options.port, options.tokens, options.fault, options.usage, options.retry_after) == (
        0,
        4,
        "drip",
        False,
        2.0,
    )
    assert options.rate == Scenario().rate


def test_the_sse_fault_streams_to_a_request_that_does_not_ask_to(fake):
    response = chat(fake, "fake?tokens=2&rate=0&fault=sse", stream=False)

    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_data(response)[-1] == "[DONE]"
    anthropic = messages(fake, "fake?tokens=2&rate=0&fault=sse", stream=False)
    assert anthropic.headers["content-type"].startswith("text/event-stream")
