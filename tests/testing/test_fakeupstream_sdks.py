"""The official ``openai`` and ``anthropic`` SDKs judge the fake upstream.

Every mode the fake offers for an API that the real API (or a real server
speaking it) can produce is streamed with that SDK's own streaming helpers, and
must parse: text, finish/stop reason, usage. Errors must come out as the SDK's
own error classes, with the message the fake sent. A mode an SDK cannot parse is
one the real API never produces, and the fake must not offer it.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from conversations.testing.fakeupstream import HOSTILE_REPLY, MARKDOWN_REPLY, MARKDOWN_TOKENS, FakeUpstream

OPENAI_KEY = "sk-test-not-secret"
ANTHROPIC_KEY = "sk-ant-test-not-secret"
HI = [{"role": "user", "content": "Say hello to the nice people"}]
PROMPT_WORDS = 6


def words(n: int) -> str:
    return "".join(f"w{i} " for i in range(n))


# --- OpenAI ---------------------------------------------------------------------


def openai_client(fake) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key=OPENAI_KEY, max_retries=0, timeout=10)


def openai_stream(fake, model: str, **extra):
    """Stream with the SDK: (text, finish reason of the last choice seen, usage, chunks)."""
    # Typed loosely: the SDK's overloads cannot tell what ``extra`` holds.
    create: Any = openai_client(fake).chat.completions.create
    stream = create(model=model, messages=HI, stream=True, stream_options={"include_usage": True}, **extra)
    text, finish, usage, chunks = "", None, None, []
    for chunk in stream:
        chunks.append(chunk)
        assert chunk.object == "chat.completion.chunk" and chunk.model == model
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    return text, finish, usage, chunks


@pytest.mark.parametrize(
    ("model", "extra", "text", "finish", "usage"),
    [
        ("fake?tokens=7&rate=0", {}, words(7), "stop", (PROMPT_WORDS, 7)),
        (
            f"fake?text=markdown&tokens={len(MARKDOWN_TOKENS)}&rate=0",
            {},
            MARKDOWN_REPLY,
            "stop",
            (PROMPT_WORDS, len(MARKDOWN_TOKENS)),
        ),
        ("fake?tokens=10&rate=0", {"max_tokens": 4}, words(4), "length", (PROMPT_WORDS, 4)),
        ("fake?tokens=10&rate=0", {"max_completion_tokens": 3}, words(3), "length", (PROMPT_WORDS, 3)),
        ("fake?tokens=2&rate=0&finish_reason=content_filter", {}, words(2), "content_filter", (6, 2)),
        ("fake?tokens=3&rate=0&ttft=0.05&rate=200", {}, words(3), "stop", (PROMPT_WORDS, 3)),
        # llama-cpp-python's server: no usage chunk although include_usage asks for one.
        ("fake?tokens=3&rate=0&usage=false", {}, words(3), "stop", None),
        ("/srv/models/x.gguf?tokens=2&rate=0", {}, words(2), "stop", (PROMPT_WORDS, 2)),
    ],
    ids=[
        "words",
        "markdown",
        "max_tokens",
        "max_completion_tokens",
        "content_filter",
        "paced",
        "no usage",
        "path-shaped model",
    ],
)
def test_openai_streams_parse_with_the_sdk(fake, model, extra, text, finish, usage):
    got_text, got_finish, got_usage, _ = openai_stream(fake, model, **extra)

    assert (got_text, got_finish) == (text, finish)
    if usage is None:
        assert got_usage is None
    else:
        assert (got_usage.prompt_tokens, got_usage.completion_tokens) == usage
        assert got_usage.total_tokens == sum(usage)


def test_openai_hostile_text_arrives_as_sent(fake):
    text, finish, _, _ = openai_stream(fake, f"fake?text=hostile&tokens={len(HOSTILE_REPLY.split())}&rate=0")

    assert text == HOSTILE_REPLY and finish == "stop"


def test_openai_an_empty_event_stream_parses_as_no_chunks(fake):
    text, finish, usage, chunks = openai_stream(fake, "fake?fault=empty")

    assert (text, finish, usage, chunks) == ("", None, None, [])


@pytest.mark.parametrize("after", [0, 3])
def test_openai_done_without_a_finish_reason_then_a_cut_body_parses_up_to_done(fake, after):
    text, finish, usage, _ = openai_stream(fake, f"fake?tokens=5&rate=0&fault=done_cut&after={after}")

    assert (text, finish, usage) == (words(after or 5), None, None)


def test_openai_a_stream_a_single_stream_server_interrupts_parses_up_to_done():
    with FakeUpstream(single_stream=True) as fake:
        client = openai_client(fake)
        stream = client.chat.completions.create(model="fake?tokens=100&rate=20", messages=HI, stream=True)
        chunks = iter(stream)
        first = next(chunks)
        assert first.choices[0].delta.role == "assistant"
        assert next(chunks).choices[0].delta.content == "w0 "
        listed = [m.id for m in client.models.list()]  # another request: the stream ends
        rest = list(chunks)

    assert listed == ["fake", "fake?text=markdown&tokens=80&rate=40", "fake-vision"]
    assert fake.requests[0].interrupted
    assert all(c.choices[0].finish_reason is None for c in rest)
    assert len(rest) < 99


def test_openai_model_listing_with_path_shaped_ids_parses():
    ids = [("/srv/models/x.gguf", "x"), ("org/name", "org/name"), ("llama3:8b", "llama3:8b")]
    with FakeUpstream(models=ids) as fake:
        listed = list(openai_client(fake).models.list())

    assert [m.id for m in listed] == ["/srv/models/x.gguf", "org/name", "llama3:8b"]
    assert {m.object for m in listed} == {"model"}


def test_openai_a_whole_reply_parses(fake):
    reply = openai_client(fake).chat.completions.create(model="fake?tokens=4&rate=0", messages=HI)

    assert reply.choices[0].message.content == words(4) and reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (PROMPT_WORDS, 4)


def test_openai_an_error_event_in_the_stream_is_the_sdks_api_error(fake):
    with pytest.raises(openai.APIError, match="the fake upstream injected an error"):
        openai_stream(fake, "fake?tokens=5&rate=0&fault=error_event&after=2")


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("fake?status=429&retry_after=3", openai.RateLimitError, 429),
        ("fake?status=500", openai.InternalServerError, 500),
        ("fake?status=401", openai.AuthenticationError, 401),
        ("fake?tokenz=1", openai.BadRequestError, 400),
    ],
)
def test_openai_error_statuses_are_the_sdks_errors(fake, model, error, status):
    with pytest.raises(error) as raised:
        openai_stream(fake, model)

    assert raised.value.status_code == status
    assert isinstance(raised.value.body, dict) and raised.value.body["message"]


def test_openai_a_request_without_messages_is_refused_like_the_real_api(fake):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(fake).chat.completions.create(model="fake", messages=[], stream=True)

    assert (raised.value.param, raised.value.code) == ("messages", "empty_array")


# --- Anthropic ------------------------------------------------------------------


def anthropic_client(fake, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.anthropic_base_url, max_retries=0, timeout=10, **{"api_key": ANTHROPIC_KEY, **options}
    )


def anthropic_stream(fake, model: str, max_tokens: int = 100, client=None):
    """Stream with the SDK's helper: (text streamed, the final message)."""
    client = client or anthropic_client(fake)
    with client.messages.stream(model=model, max_tokens=max_tokens, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return text, final


@pytest.mark.parametrize(
    ("model", "max_tokens", "text", "stop_reason"),
    [
        ("fake?tokens=7&rate=0", 100, words(7), "end_turn"),
        (f"fake?text=markdown&tokens={len(MARKDOWN_TOKENS)}&rate=0", 1000, MARKDOWN_REPLY, "end_turn"),
        ("fake?tokens=10&rate=0", 3, words(3), "max_tokens"),
        ("fake?tokens=2&rate=0&finish_reason=stop_sequence", 100, words(2), "stop_sequence"),
        ("fake?tokens=2&rate=0&finish_reason=refusal", 100, words(2), "refusal"),
        ("fake?tokens=3&ttft=0.05&rate=200", 100, words(3), "end_turn"),
    ],
    ids=["words", "markdown", "max_tokens", "stop_sequence", "refusal", "paced"],
)
def test_anthropic_streams_parse_with_the_sdks_stream_helper(fake, model, max_tokens, text, stop_reason):
    streamed, final = anthropic_stream(fake, model, max_tokens)

    assert streamed == text
    assert final.role == "assistant" and final.model == model
    assert [(block.type, block.text) for block in final.content] == [("text", text)]
    assert final.stop_reason == stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_WORDS, len(text.split()))


def test_anthropic_hostile_text_arrives_as_sent(fake):
    streamed, final = anthropic_stream(fake, f"fake?text=hostile&tokens={len(HOSTILE_REPLY.split())}&rate=0")

    assert streamed == final.content[0].text == HOSTILE_REPLY


def test_anthropic_a_whole_reply_parses(fake):
    reply = anthropic_client(fake).messages.create(model="fake?tokens=4&rate=0", max_tokens=2, messages=HI)

    assert reply.content[0].text == words(2) and reply.stop_reason == "max_tokens"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (PROMPT_WORDS, 2)


def test_anthropic_model_listing_parses(fake):
    listed = list(anthropic_client(fake).models.list())

    assert [(m.id, m.display_name) for m in listed] == [
        ("fake", "Fake (plain words)"),
        ("fake?text=markdown&tokens=80&rate=40", "Fake (markdown)"),
        ("fake-vision", "Fake (vision)"),
    ]


def test_anthropic_an_error_event_in_the_stream_is_the_sdks_status_error(fake):
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        anthropic_stream(fake, "fake?tokens=5&rate=0&fault=error_event&after=2")


@pytest.mark.parametrize(
    ("model", "error", "status", "kind"),
    [
        ("fake?status=429&retry_after=2", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("fake?status=529", anthropic.APIStatusError, 529, "overloaded_error"),
        ("fake?status=500", anthropic.InternalServerError, 500, "api_error"),
        ("fake?usage=false", anthropic.BadRequestError, 400, "invalid_request_error"),
    ],
)
def test_anthropic_error_statuses_are_the_sdks_errors(fake, model, error, status, kind):
    with pytest.raises(error) as raised:
        anthropic_stream(fake, model)

    assert raised.value.status_code == status
    assert raised.value.body["error"]["type"] == kind
    assert raised.value.request_id and raised.value.request_id.startswith("req_")


def test_anthropic_without_a_key_or_version_the_sdk_sees_the_real_apis_errors(fake):
    no_key = anthropic_client(fake, api_key=None, default_headers={"Authorization": anthropic.Omit()})
    with pytest.raises(anthropic.AuthenticationError, match="x-api-key header is required"):
        anthropic_stream(fake, "fake", client=no_key)
    no_version = anthropic_client(fake, default_headers={"anthropic-version": anthropic.Omit()})
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version: header is required"):
        anthropic_stream(fake, "fake", client=no_version)


# --- Reasoning --------------------------------------------------------------------


THOUGHTS = "".join(f"t{i} " for i in range(4))


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_the_openai_sdk_reads_reasoning_fields_of_the_fake(fake, field):
    text, finish, usage, chunks = openai_stream(fake, f"fake?tokens=3&rate=0&reasoning={field}&thoughts=4")
    assert text == words(3) and finish == "stop"
    # The SDK keeps fields it does not model as extra attributes of the delta.
    thoughts = "".join(getattr(c.choices[0].delta, field, None) or "" for c in chunks if c.choices)
    assert thoughts == THOUGHTS
    assert usage.completion_tokens == 3 + 4


def test_the_openai_sdk_reads_inline_think_as_content(fake):
    text, _, _, _ = openai_stream(fake, "fake?tokens=3&rate=0&reasoning=think&thoughts=4")
    assert text == f"<think>{THOUGHTS}</think>\n\n{words(3)}"


@pytest.mark.parametrize("redacted", [False, True])
def test_the_anthropic_sdk_reads_the_fakes_thinking_blocks(fake, redacted):
    model = f"fake?tokens=3&rate=0&reasoning={'redacted' if redacted else 'thinking'}&thoughts=4"
    client = anthropic_client(fake)
    thinking: dict = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(model=model, max_tokens=2000, messages=HI, thinking=thinking) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == words(3)
    kinds = [block.type for block in final.content]
    assert kinds == ["redacted_thinking" if redacted else "thinking", "text"]
    if not redacted:
        assert final.content[0].thinking == THOUGHTS and final.content[0].signature
    assert final.usage.output_tokens == 3 + (0 if redacted else 4)


# --- Whole answers (stream: false) ----------------------------------------------


@pytest.mark.parametrize(
    ("model", "extra", "text", "finish", "usage"),
    [
        ("fake?tokens=7&rate=0", {}, words(7), "stop", (PROMPT_WORDS, 7)),
        ("fake?tokens=10&rate=0", {"max_tokens": 4}, words(4), "length", (PROMPT_WORDS, 4)),
        ("fake?tokens=3&rate=0&usage=false", {}, words(3), "stop", None),
        ("fake?tokens=3&rate=0&reasoning=reasoning_content&thoughts=4", {}, words(3), "stop", (6, 7)),
    ],
    ids=["words", "max_tokens", "no usage", "reasoning_content"],
)
def test_openai_whole_answers_parse_with_the_sdk(fake, model, extra, text, finish, usage):
    create: Any = openai_client(fake).chat.completions.create
    completion = create(model=model, messages=HI, stream=False, **extra)

    assert completion.object == "chat.completion" and completion.model == model
    assert completion.id.startswith("chatcmpl-") and isinstance(completion.created, int)
    choice = completion.choices[0]
    assert (choice.index, choice.message.role, choice.message.content) == (0, "assistant", text)
    assert choice.finish_reason == finish
    if "reasoning" in model:
        assert getattr(choice.message, "reasoning_content", None) == THOUGHTS
    if usage is None:
        assert completion.usage is None
    else:
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == usage
        assert completion.usage.total_tokens == sum(usage)


def test_openai_a_whole_answer_with_inline_think_is_content(fake):
    completion = openai_client(fake).chat.completions.create(
        model="fake?tokens=3&rate=0&reasoning=think&thoughts=4", messages=HI, stream=False
    )

    assert completion.choices[0].message.content == f"<think>{THOUGHTS}</think>\n\n{words(3)}"


def test_openai_the_sdk_cannot_ask_for_stream_options_without_streaming(fake):
    create: Any = openai_client(fake).chat.completions.create
    with pytest.raises(openai.BadRequestError, match="'stream_options' parameter is only allowed") as raised:
        create(model="fake", messages=HI, stream=False, stream_options={"include_usage": True})

    assert raised.value.param == "stream_options"


@pytest.mark.parametrize("reasoning", ["", "thinking", "redacted"])
def test_anthropic_whole_answers_with_thinking_parse_with_the_sdk(fake, reasoning):
    model = f"fake?tokens=3&rate=0&thoughts=4{'&reasoning=' + reasoning if reasoning else ''}"
    thinking: Any = {"type": "enabled", "budget_tokens": 1024} if reasoning else anthropic.NOT_GIVEN
    reply = anthropic_client(fake).messages.create(
        model=model, max_tokens=2000, messages=HI, thinking=thinking
    )

    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    kinds = [block.type for block in reply.content]
    assert kinds == (
        [] if not reasoning else ["redacted_thinking" if reasoning == "redacted" else "thinking"]
    ) + ["text"]
    assert reply.content[-1].text == words(3) and reply.stop_reason == "end_turn"
    if reasoning == "thinking":
        assert reply.content[0].thinking == THOUGHTS and reply.content[0].signature
    if reasoning == "redacted":
        assert reply.content[0].data
    assert reply.usage.output_tokens == 3 + (4 if reasoning == "thinking" else 0)


# --- OpenAI moderation ----------------------------------------------------------------


@pytest.fixture
def flagging(fake):
    fake.flag_words = {"badword": "violence"}
    yield fake
    fake.flag_words = {}
    fake.moderation_status = 200


def test_the_openai_sdk_reads_the_fakes_moderation_results(flagging):
    client = openai_client(flagging)
    flagged = client.moderations.create(input="a BadWord here", model="omni-moderation-latest")
    assert flagged.id.startswith("modr-") and flagged.model == "omni-moderation-latest"
    result = flagged.results[0]
    assert result.flagged is True
    assert result.categories.violence is True and result.categories.harassment is False
    assert result.category_scores.violence > 0.5
    clear = client.moderations.create(input=["fine words", "badwords are another word"])
    assert [r.flagged for r in clear.results] == [False, False]


def test_the_fakes_moderation_errors_are_the_sdks_errors(flagging):
    flagging.moderation_status = 500
    with pytest.raises(openai.InternalServerError):
        openai_client(flagging).moderations.create(input="hello")
    flagging.moderation_status = 200
    with pytest.raises(openai.BadRequestError):
        openai_client(flagging).moderations.create(input=[])
