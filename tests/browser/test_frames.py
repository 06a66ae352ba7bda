"""The page checks every frame it receives against the server's declarations
(static/chat/frames.js): what does not match is dropped and logged, and the
page goes on as if it had never come."""

from __future__ import annotations

import copy
import json
import re
import uuid

import pytest

from conversations.realtime import protocol

from .conftest import FAST_MARKDOWN, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"
WARNING = "dropped a server frame that does not match its declaration"


def malformed(reply: str, conversation: str) -> list[list[object]]:
    """What to slip in behind each reply's ``reply_started``, one list per reply.
    Each frame would change the page if it took it."""
    early_end = {
        "type": "reply_finished",
        "conversation": conversation,
        "reply": reply,
        "status": "finished",  # not a declared status
        "error_kind": None,
        "error": None,
        "last_seq": 1,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "counted": False},
        "metrics": {"ttft_ms": None, "tokens_per_s": None, "total_ms": None},
        "omitted_messages": 0,
        "context_tokens": None,
    }
    return [
        [
            # Taken, it would be the reply's first text, and the real first delta a repeat.
            {"type": "delta", "reply": reply, "seq": 1, "text": 12345},
            {"type": "delta", "reply": reply, "seq": "1", "text": "INJECTED"},  # not logged again
            {"type": "mystery", "reply": reply},
            ["not", "an", "object"],
        ],
        # Taken, it would end the reply before its first delta.
        [early_end],
    ]


def test_the_page_drops_frames_that_do_not_match_their_declaration_and_keeps_working(page, server):
    warnings: list[str] = []
    page.on(
        "console", lambda msg: msg.type == "warning" and WARNING in msg.text and warnings.append(msg.text)
    )
    started: list[str] = []

    def through(route) -> None:
        upstream = route.connect_to_server()
        route.on_message(upstream.send)

        def from_server(message) -> None:
            route.send(message)
            frame = json.loads(message)
            if frame["type"] == "reply_started" and frame["reply"] not in started:
                # Right behind the real reply_started, before any real delta.
                started.append(frame["reply"])
                for bad in malformed(frame["reply"], frame["conversation"])[len(started) - 1]:
                    route.send(json.dumps(bad))

        upstream.on_message(from_server)

    page.route_web_socket(re.compile(r"/ws/chat/$"), through)
    login(page, server)
    for prompt in ("first question", "second question"):
        page.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
        page.fill("#prompt", prompt)
        page.press("#prompt", "Enter")
        page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
        assert started, "no reply started"
        ((saved,),) = server.query(
            "select content from conversations_message where role='assistant' "
            "order by created_at desc limit 1"
        )
        shown = page.eval_on_selector(LAST_REPLY, "el => el.chatsiteText")
        assert shown == saved and not shown.startswith("12345") and "INJECTED" not in shown
    # One warning per frame type, however many of that type were dropped, saying what is wrong.
    problems = sorted(re.search(r"declaration \((.*?)\)", w).group(1) for w in warnings)
    assert problems == [
        "a frame is a JSON object",
        "delta.text is not string",
        'reply_finished.status "finished" is not an allowed value',
        'undeclared server frame type "mystery"',
    ]
    assert page.problems == []


def valid_frames() -> list[dict]:
    reply, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    built = [
        protocol.frame_ack(
            client_id="c-1",
            conversation=conversation,
            message=str(uuid.uuid4()),
            created=False,
            replies=[reply],
        ),
        protocol.frame_reply_started(
            conversation=conversation, reply=reply, model="openai/x", provider="openai", after_seq=4
        ),
        protocol.frame_delta(reply=reply, seq=5, text="x"),
        protocol.frame_reasoning_delta(reply=reply, seq=6, text="hmm", redacted=True),
        protocol.frame_error(code="reply_running", message="wait", ref=None),
        protocol.frame_pong(),
    ]
    for status, kind in (("complete", None), ("error", "timeout_idle"), ("interrupted", None)):
        end = protocol.ReplyEnd(
            conversation=conversation,
            reply=reply,
            status=status,
            error_kind=kind,
            error="words" if kind else None,
            last_seq=5,
            finish_reason=None,
            usage={"prompt_tokens": None, "completion_tokens": 5, "counted": True},
            metrics={"ttft_ms": 1.5, "tokens_per_s": None, "total_ms": 30},
            omitted_messages=1,
            context_tokens=None,
        )
        built.append(protocol.frame_reply_finished(end=end))
    return [json.loads(raw) for raw in built]


def broken_frames() -> list[object]:
    finished = next(f for f in valid_frames() if f["type"] == "reply_finished")

    def change(path: tuple[str, ...], value: object, *, drop: bool = False) -> dict:
        frame = copy.deepcopy(finished)
        target = frame
        for key in path[:-1]:
            target = target[key]
        if drop:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return frame

    return [
        change(("last_seq",), None, drop=True),
        change(("last_seq",), "5"),
        change(("last_seq",), True),
        change(("last_seq",), 5.5),
        change(("reply",), None),
        change(("status",), "done"),
        change(("error_kind",), "internal"),  # with status complete
        change(("status",), "error"),  # an error without its kind
        change(("usage", "counted"), None, drop=True),
        change(("usage", "counted"), 1),
        change(("metrics", "total_ms"), "fast"),
        change(("usage",), []),
        change(("usage",), None),
        {"type": "reasoning_delta", "reply": "r", "seq": 1, "text": "t"},  # no redacted
        {"type": "reasoning_delta", "reply": "r", "seq": 1, "text": "t", "redacted": "no"},
        {"type": "error", "code": "made_up", "message": "m", "ref": None},
        {"type": "mystery"},
        {"reply": "r"},
        ["delta"],
        "delta",
        None,
    ]


#: A field the declaration does not list: the server never sends one (the tests
#: check), but a server newer than an open page might, so the page takes it.
NEWER_FIELD = {"type": "pong", "since": "a later version"}


def server_accepts(frame: object) -> bool:
    try:
        protocol.check_server_frame(frame)
    except AssertionError:
        return False
    return True


def test_the_pages_validator_and_the_servers_check_agree_on_every_frame(page, server):
    login(page, server)
    valid, broken = valid_frames(), broken_frames()
    frames = [*valid, *broken, NEWER_FIELD]
    assert [server_accepts(f) for f in frames] == [True] * len(valid) + [False] * (len(broken) + 1)
    in_page = page.evaluate(
        """async (frames) => {
            const { serverFrameProblem } = await import('/static/chat/frames.js');
            return frames.map((frame) => serverFrameProblem(frame) === null);
        }""",
        frames,
    )
    assert in_page == [True] * len(valid) + [False] * len(broken) + [True], [
        (frame, ok) for frame, ok in zip(frames, in_page, strict=True)
    ]
