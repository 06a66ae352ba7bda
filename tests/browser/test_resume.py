"""Resumable replies in a real browser: every token exactly once.

A reload, a second tab, a network blip and a server restart, each in the middle
of a streaming reply, in headless Chromium against real daphne processes. Each
test checks what the user sees (``chatsiteText``, the status badge) against the
text the fake upstream actually sent and the text saved in the database, and
also reassembles the reply from the frames on the wire, so that a duplicate or
a gap is caught even where the page would paper over it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.processes import Daphne

from .conftest import PASSWORD, USERNAME, browser_server, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# ~730 characters in ~4 s: long enough to interrupt, short enough to wait for.
STREAM = "fake?text=markdown&tokens=120&rate=30"
# ~2400 characters in ~16 s: still running whenever a test stops or kills it.
LONG = "fake?text=markdown&tokens=400&rate=25"
FAST = "fake?text=markdown&tokens=30&rate=200"
LAST_REPLY = ".message[data-role=assistant]:last-of-type"


def _env(fake_upstream, checkpoint_interval: float = 0.5) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake_upstream.openai_base_url,
        "OPENAI_API_KEY": "sk-browser-test-not-secret",
        "OPENAI_MODELS": ",".join([STREAM, LONG, FAST]),
        "CHATSITE_DEFAULT_MODEL": f"openai/{FAST}",
        "CHATSITE_CHECKPOINT_INTERVAL": str(checkpoint_interval),
    }


@pytest.fixture(scope="module")
def resume_server(fake_upstream):
    with browser_server("chatsite-resume-", _env(fake_upstream)) as daphne:
        yield daphne


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()


# --- the wire ------------------------------------------------------------------


class Wire:
    """Every frame of every WebSocket a page opens, in order, per socket."""

    def __init__(self, page) -> None:
        self.sockets: list[list[tuple[str, dict]]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws) -> None:
        frames: list[tuple[str, dict]] = []
        self.sockets.append(frames)
        ws.on("framesent", lambda payload: frames.append(("sent", _decode(payload))))
        ws.on("framereceived", lambda payload: frames.append(("recv", _decode(payload))))

    def reassemble(self, reply: str, *, first_socket: int = 0, base_text: str = "", base_seq: int = 0) -> str:
        """The reply's text as the server sent it, socket after socket.

        Each socket's stream for the reply starts with ``reply_started``, whose
        ``after_seq`` must be the one the page asked for and a seq the page
        already had; the deltas after it must have rising seqs. Text the page
        had past ``after_seq`` (frames that arrived on a socket it was closing)
        is dropped there, as the page does. Any text the server sent twice or
        never is then visible in the result.
        """
        text = base_text
        offsets = {0: 0, base_seq: len(base_text)}
        for frames in self.sockets[first_socket:]:
            current = None
            asked = None
            for direction, f in frames:
                kind = f.get("type")
                if direction == "sent":
                    if kind == "subscribe":
                        asked = f["after_seq"]
                    elif kind == "send":
                        asked = 0
                    continue
                if f.get("reply") != reply:
                    continue
                if kind == "reply_started":
                    after = f["after_seq"]
                    assert asked is not None, f"reply_started nobody asked for: {f}"
                    assert after == asked, f"asked to resume after seq {asked}, got after_seq {after}"
                    assert after in offsets, f"resumed after seq {after}, which this page never had"
                    text = text[: offsets[after]]
                    offsets = {s: o for s, o in offsets.items() if s <= after}
                    current = after
                elif kind == "delta":
                    assert current is not None, f"a delta before reply_started: {f}"
                    assert f["seq"] > current, f"seq went from {current} to {f['seq']}"
                    text += f["text"]
                    current = f["seq"]
                    offsets[current] = len(text)
        return text

    def started_after(self, reply: str) -> list[int]:
        """``after_seq`` of every reply_started for the reply, in order."""
        return [
            f["after_seq"]
            for frames in self.sockets
            for direction, f in frames
            if direction == "recv" and f.get("type") == "reply_started" and f.get("reply") == reply
        ]


def _decode(payload) -> dict:
    if isinstance(payload, bytes):
        payload = payload.decode()
    try:
        frame = json.loads(payload)
    except ValueError:
        return {"type": "?", "raw": payload}
    return frame if isinstance(frame, dict) else {"type": "?", "raw": payload}


# --- pages -----------------------------------------------------------------------


def open_page(context):
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on(
        "console", lambda msg: msg.type == "error" and page.problems.append(f"console: {_console_text(msg)}")
    )
    page.on("dialog", lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.wire = Wire(page)
    # Every /api/ request's outcome, in order: (url, HTTP status or network error).
    page.api = []
    page.on("response", lambda r: "/api/" in r.url and page.api.append((r.url, r.status)))
    page.on("requestfailed", lambda r: "/api/" in r.url and page.api.append((r.url, r.failure)))
    return page


def _console_text(msg) -> str:
    # Chromium's "Failed to load resource: net::…" does not name the resource;
    # it is the message's location, added here so that a test can allow one URL.
    if msg.text.startswith("Failed to load resource"):
        return f"{msg.text} [{msg.location.get('url', '')}]"
    return msg.text


def reply_selector(reply: str) -> str:
    return f'.message[data-role=assistant][data-id="{reply}"]'


def text_of(page, reply: str) -> str:
    return page.eval_on_selector(reply_selector(reply), "el => el.chatsiteText")


def wait_for_text(page, reply: str, chars: int, timeout: float = 10.0) -> None:
    # Polled from here: Playwright's wait_for_function evaluates strings,
    # which the page's CSP forbids.
    deadline = time.monotonic() + timeout
    script = "(sel) => (document.querySelector(sel)?.chatsiteText || '').length"
    while page.evaluate(script, reply_selector(reply)) <= chars:
        assert time.monotonic() < deadline, f"the reply never reached {chars} characters"
        page.wait_for_timeout(30)


def wait_for_status(page, reply: str, status: str, timeout: float = 12.0) -> None:
    page.wait_for_selector(f"{reply_selector(reply)}[data-status={status}]", timeout=timeout * 1000)


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=f"openai/{model}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def start_reply(page, server, fake_upstream, model: str, text: str = "Tell me about markdown"):
    """Send a message; returns (conversation id, reply id, the upstream request record)."""
    before = len(fake_upstream.requests)
    send(page, text, model)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    found = re.search(r"/c/([0-9a-f-]{36})/", page.url)
    assert found, page.url
    conversation = found.group(1)
    reply = page.get_attribute(LAST_REPLY, "data-id")
    assert reply
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in fake_upstream.requests[before:] if (r.body or {}).get("model") == model]
        if records:
            break
        assert time.monotonic() < deadline, "the upstream never saw the request"
        time.sleep(0.02)
    assert len(records) == 1, "one message must make one upstream request"
    return conversation, reply, records[0]


def saved(server, reply: str) -> tuple[str, str, int]:
    rows = server.query(
        "select content, status, last_seq from conversations_message where id = ? and role = 'assistant'",
        reply.replace("-", ""),
    )
    assert len(rows) == 1, rows
    return rows[0]


def page_data_reply(page, reply: str) -> tuple[str, int]:
    """The reply's content and last_seq as the page's HTML carried them."""
    data = page.evaluate("() => JSON.parse(document.getElementById('page-data').textContent)")
    (m,) = [m for m in data["messages"] if m["id"] == reply]
    return m["content"], m["last_seq"]


def assert_no_problems(page, allow: tuple[str, ...] = ()) -> None:
    problems = [p for p in page.problems if not any(a in p for a in allow)]
    assert problems == []


def models_poll_cut_off(page, server) -> tuple[str, ...]:
    """The console errors of a model-list request the server's end cut off, which
    a test that stops the server allows, after checking the page asked again.

    On a fresh server the page comes before the first listing of the providers
    has ended, so the model picker asks ``/api/models/`` again a second later
    (and each second until it has), which is about when these tests stop the
    server. Between the signal and the process's exit (some 20 ms, while the
    last frames go out) the socket is open and the page cannot know: its
    request is reset, or, sent after the exit but before the page has seen the
    socket close, refused. Chromium logs that whatever the page does; the page
    itself shows nothing, and asks again once the socket is back.
    """
    url = f"{server.url}/api/models/"
    asked = [outcome for u, outcome in page.api if u == url]
    if any(outcome != 200 for outcome in asked):
        assert asked[-1] == 200, f"the page did not ask for the models again: {asked}"
    return tuple(
        f"Failed to load resource: net::{error} [{url}]"
        for error in ("ERR_CONNECTION_RESET", "ERR_CONNECTION_REFUSED")
    )


# --- the tests -------------------------------------------------------------------


def test_reload_mid_stream_continues_with_every_token_exactly_once(context, resume_server, fake_upstream):
    reload_mid_stream(context, resume_server, fake_upstream)


def reload_mid_stream(context, resume_server, fake_upstream) -> None:
    """Reload in the middle of a reply: it goes on, every token exactly once.

    Also run against the production stack (tests/browser/production/).
    """
    page = open_page(context)
    login(page, resume_server)
    conversation, reply, record = start_reply(page, resume_server, fake_upstream, STREAM)
    wait_for_text(page, reply, 120)

    sockets_before = len(page.wire.sockets)
    page.reload()
    # The reloaded page shows the reply still streaming and keeps it growing.
    wait_for_status(page, reply, "streaming", timeout=5)
    assert page.url.endswith(f"/c/{conversation}/")
    base_text, base_seq = page_data_reply(page, reply)
    assert record.text_sent.startswith(base_text)
    shown = len(text_of(page, reply))
    wait_for_text(page, reply, shown + 50)
    assert page.is_visible("#stop")

    wait_for_status(page, reply, "complete")
    assert record.wait_completed(5)
    sent = record.text_sent
    content, status, last_seq = saved(resume_server, reply)
    assert status == "complete"
    assert content == sent
    assert text_of(page, reply) == sent
    # On the wire: the reloaded page asked for what came after its HTML, and the
    # server sent exactly that.
    assert page.wire.started_after(reply)[-1] == base_seq
    resumed = page.wire.reassemble(reply, first_socket=sockets_before, base_text=base_text, base_seq=base_seq)
    assert resumed == sent
    assert page.locator(reply_selector(reply)).count() == 1
    assert page.locator(".message[data-role=user]").count() == 1
    assert page.is_hidden("#stop")
    assert_no_problems(page)


def test_a_second_tab_follows_the_same_live_reply(context, resume_server, fake_upstream):
    second_tab_follows(context, resume_server, fake_upstream)


def second_tab_follows(context, resume_server, fake_upstream, *, open_second=None) -> None:
    """A second tab opened mid-reply follows it live to the same end.

    Also run against the production stack (tests/browser/production/), whose
    ``open_second(context, url)`` opens the second tab on the other process.
    """
    tab_a = open_page(context)
    login(tab_a, resume_server)
    conversation, reply, record = start_reply(tab_a, resume_server, fake_upstream, STREAM)
    wait_for_text(tab_a, reply, 100)

    if open_second is None:
        tab_b = open_page(context)
        tab_b.goto(f"{resume_server.url}/c/{conversation}/")
    else:
        tab_b = open_second(context, f"{resume_server.url}/c/{conversation}/")
    wait_for_status(tab_b, reply, "streaming", timeout=5)
    base_text, base_seq = page_data_reply(tab_b, reply)
    shown = len(text_of(tab_b, reply))
    wait_for_text(tab_b, reply, shown + 50)  # live deltas reach tab B
    assert tab_b.is_visible("#stop")

    wait_for_status(tab_a, reply, "complete")
    wait_for_status(tab_b, reply, "complete")
    assert record.wait_completed(5)
    sent = record.text_sent
    content, status, _ = saved(resume_server, reply)
    assert status == "complete"
    assert content == sent
    assert text_of(tab_a, reply) == sent
    assert text_of(tab_b, reply) == sent
    assert tab_a.inner_text(f"{reply_selector(reply)} .message-body") == tab_b.inner_text(
        f"{reply_selector(reply)} .message-body"
    )
    assert tab_a.wire.reassemble(reply) == sent
    assert tab_b.wire.reassemble(reply, base_text=base_text, base_seq=base_seq) == sent
    for tab in (tab_a, tab_b):
        assert tab.locator(reply_selector(reply)).count() == 1
        assert tab.locator(".message[data-role=user]").count() == 1
        assert_no_problems(tab)


def test_stop_from_the_other_tab_stops_it_in_both(context, resume_server, fake_upstream):
    stop_from_the_other_tab(context, resume_server, fake_upstream)


def stop_from_the_other_tab(context, resume_server, fake_upstream, *, open_second=None) -> None:
    """Stop pressed in a second tab: the upstream closes, both tabs show the saved text.

    Also run against the production stack (tests/browser/production/), whose
    ``open_second(context, url)`` opens the second tab on the other process.
    """
    tab_a = open_page(context)
    login(tab_a, resume_server)
    conversation, reply, record = start_reply(tab_a, resume_server, fake_upstream, LONG)
    wait_for_text(tab_a, reply, 100)

    if open_second is None:
        tab_b = open_page(context)
        tab_b.goto(f"{resume_server.url}/c/{conversation}/")
    else:
        tab_b = open_second(context, f"{resume_server.url}/c/{conversation}/")
    wait_for_status(tab_b, reply, "streaming", timeout=5)
    shown = len(text_of(tab_b, reply))
    wait_for_text(tab_b, reply, shown + 30)
    tab_b.click("#stop")

    wait_for_status(tab_b, reply, "stopped", timeout=5)
    wait_for_status(tab_a, reply, "stopped", timeout=5)
    assert record.wait_disconnected(5), "Stop did not close the upstream connection"
    content, status, _ = saved(resume_server, reply)
    assert status == "stopped"
    assert content and record.text_sent.startswith(content)
    assert len(content) < 2000, "the reply was not stopped early"
    for tab in (tab_a, tab_b):
        assert text_of(tab, reply) == content
        assert tab.inner_text(f"{reply_selector(reply)} .badge").strip() == "Stopped"
        assert tab.is_hidden("#stop")
        assert tab.is_enabled("#send")
        assert_no_problems(tab)


def test_a_network_blip_reconnects_and_resumes_without_gap_or_repeat(context, resume_server, fake_upstream):
    page = open_page(context)
    login(page, resume_server)
    conversation, reply, record = start_reply(page, resume_server, fake_upstream, STREAM)
    wait_for_text(page, reply, 100)
    assert page.is_hidden("#reconnecting")

    page.evaluate("() => window.chatsite.socket.ws.close()")
    page.wait_for_selector("#reconnecting", state="visible", timeout=2000)
    assert page.get_attribute("body", "data-socket") != "open"
    # Reconnects by itself (no reload, no click) and the banner goes away.
    page.wait_for_selector("body[data-socket=open]", state="attached", timeout=5000)
    page.wait_for_selector("#reconnecting", state="hidden", timeout=2000)
    assert len(page.wire.sockets) == 2
    resumed_after = page.wire.started_after(reply)
    assert len(resumed_after) == 2 and resumed_after[1] > 0, resumed_after

    wait_for_status(page, reply, "complete")
    assert record.wait_completed(5)
    sent = record.text_sent
    content, status, _ = saved(resume_server, reply)
    assert status == "complete"
    assert content == sent
    assert text_of(page, reply) == sent
    assert page.wire.reassemble(reply) == sent
    assert page.locator(reply_selector(reply)).count() == 1
    assert_no_problems(page)


@pytest.fixture
def restartable(fake_upstream):
    """A daphne of its own (this test kills it); returns a factory for its successors."""
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-restart-"))
    servers: list[Daphne] = []

    def start(port: int | None = None) -> Daphne:
        # Checkpoints far apart, so that a kill lands between two of them.
        daphne = Daphne(data_dir, _env(fake_upstream, checkpoint_interval=2.0), port=port)
        servers.append(daphne)
        return daphne.start()

    try:
        yield start
    finally:
        for daphne in servers:
            daphne.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_server_restart_mid_reply_interrupts_it_and_the_page_reconnects(context, restartable, fake_upstream):
    first = restartable()
    first.create_user(USERNAME, PASSWORD)
    page = open_page(context)
    login(page, first)
    conversation, reply, record = start_reply(page, first, fake_upstream, LONG)
    wait_for_text(page, reply, 100)

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(15) == 0, first.log.read_text()[-3000:]
    # The server said so before it went: the page shows the interrupted reply.
    wait_for_status(page, reply, "interrupted", timeout=5)
    assert page.inner_text(f"{reply_selector(reply)} .badge").strip() == "Interrupted"
    content, status, last_seq = saved(first, reply)
    assert status == "interrupted"
    assert content and record.text_sent.startswith(content)
    assert len(content) < 2000, "the reply was not interrupted mid-stream"
    assert text_of(page, reply) == content
    page.wait_for_selector("#reconnecting", state="visible", timeout=3000)
    assert page.is_hidden("#stop")

    second = restartable(port=first.port)
    assert second.url == first.url
    page.wait_for_selector("body[data-socket=open]", state="attached", timeout=15000)
    page.wait_for_selector("#reconnecting", state="hidden", timeout=2000)
    # Reconnecting changes nothing about the interrupted reply.
    assert page.get_attribute(reply_selector(reply), "data-status") == "interrupted"
    assert text_of(page, reply) == content

    send(page, "Still there?", FAST)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=10000)
    new_reply = page.get_attribute(LAST_REPLY, "data-id")
    assert new_reply and new_reply != reply
    new_content, new_status, _ = saved(second, new_reply)
    assert new_status == "complete"
    assert text_of(page, new_reply) == new_content and new_content
    assert page.locator(".message[data-role=user]").count() == 2
    assert page.url.endswith(f"/c/{conversation}/")
    assert page.is_hidden("#composer-error")
    # While the server was down, the browser logged its failed connection attempts.
    assert_no_problems(page, allow=("WebSocket connection to", *models_poll_cut_off(page, first)))


def test_a_reply_that_ends_while_the_page_is_offline_is_shown_in_full(context, resume_server, fake_upstream):
    page = open_page(context)
    login(page, resume_server)
    conversation, reply, record = start_reply(page, resume_server, fake_upstream, STREAM)
    wait_for_text(page, reply, 100)

    # The network goes away: the open socket goes silent without closing. The
    # page must notice, say so, and try again.
    context.set_offline(True)
    page.wait_for_selector("#reconnecting", state="visible", timeout=2000)
    # Text that arrived just before is drawn at the next animation frame: let it land.
    page.wait_for_timeout(200)
    seen = text_of(page, reply)
    assert record.wait_completed(10)
    deadline = time.monotonic() + 5
    while saved(resume_server, reply)[1] != "complete":
        assert time.monotonic() < deadline, "the reply was never saved as complete"
        time.sleep(0.05)
    page.wait_for_timeout(300)
    # Offline: the page could not learn anything in the meantime.
    assert page.get_attribute("body", "data-socket") != "open"
    assert page.get_attribute(reply_selector(reply), "data-status") == "streaming"
    assert text_of(page, reply) == seen

    context.set_offline(False)
    page.wait_for_selector("body[data-socket=open]", state="attached", timeout=8000)
    wait_for_status(page, reply, "complete", timeout=5)
    page.wait_for_selector("#reconnecting", state="hidden", timeout=2000)
    sent = record.text_sent
    content, _, _ = saved(resume_server, reply)
    assert content == sent
    deadline = time.monotonic() + 5
    while text_of(page, reply) != sent:  # the rest comes over HTTP
        assert time.monotonic() < deadline, "the page never showed the whole reply"
        page.wait_for_timeout(30)
    assert page.locator(reply_selector(reply)).count() == 1
    assert page.is_hidden("#stop")
    assert_no_problems(page, allow=("WebSocket connection to",))


def test_a_killed_server_leaves_the_saved_text_and_the_page_shows_exactly_that(
    context, restartable, fake_upstream
):
    first = restartable()
    first.create_user(USERNAME, PASSWORD)
    page = open_page(context)
    login(page, first)
    conversation, reply, record = start_reply(page, first, fake_upstream, LONG)
    wait_for_text(page, reply, 150)
    deadline = time.monotonic() + 5
    while saved(first, reply)[2] == 0:  # let a checkpoint save part of it
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    wait_for_text(page, reply, len(saved(first, reply)[0]) + 30)

    first.proc.kill()
    first.proc.wait(5)
    page.wait_for_selector("#reconnecting", state="visible", timeout=3000)
    seen = text_of(page, reply)
    checkpointed, status, _ = saved(first, reply)
    assert status == "streaming"
    assert len(seen) > len(checkpointed), "the page must have had text past the last checkpoint"

    second = restartable(port=first.port)
    page.wait_for_selector("body[data-socket=open]", state="attached", timeout=15000)
    try:
        wait_for_status(page, reply, "interrupted", timeout=5)
    except Exception as exc:
        raise AssertionError(
            f"the page never learnt the reply's end; saved: {saved(second, reply)[1:]}; "
            f"frames since the restart: {page.wire.sockets[-1]}\n{second.log.read_text()[-4000:]}"
        ) from exc
    assert page.inner_text(f"{reply_selector(reply)} .badge").strip() == "Interrupted"
    deadline = time.monotonic() + 5
    while saved(second, reply)[1] != "interrupted":  # the sweep at start marks it
        assert time.monotonic() < deadline, f"left as {saved(second, reply)[1]!r} after the restart"
        time.sleep(0.05)
    content, _, last_seq = saved(second, reply)
    assert content == checkpointed and last_seq > 0
    assert seen.startswith(content) and record.text_sent.startswith(content)
    # The page shows what is saved, not the text it had past the last checkpoint,
    # so a reload shows the same reply.
    assert text_of(page, reply) == content
    page.reload()
    wait_for_status(page, reply, "interrupted", timeout=5)
    assert text_of(page, reply) == content
    assert_no_problems(page, allow=("WebSocket connection to", *models_poll_cut_off(page, first)))


@pytest.fixture
def freezable(fake_upstream):
    """A daphne of its own, with a one-second heartbeat (this test freezes it with SIGSTOP)."""
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-freeze-"))
    daphne = Daphne(data_dir, {**_env(fake_upstream), "CHATSITE_HEARTBEAT": "1"})
    try:
        daphne.start()
        daphne.create_user(USERNAME, PASSWORD)
        yield daphne
    finally:
        if daphne.proc is not None and daphne.proc.poll() is None:
            daphne.proc.send_signal(signal.SIGCONT)
        daphne.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_connection_that_goes_silent_is_replaced_and_the_reply_resumes(context, freezable, fake_upstream):
    # A frozen server stands in for a half-open connection: the socket stays
    # "open" in the browser, but nothing comes through it and it never closes.
    page = open_page(context)
    login(page, freezable)
    conversation, reply, record = start_reply(page, freezable, fake_upstream, LONG)
    wait_for_text(page, reply, 100)
    assert page.is_hidden("#reconnecting")

    freezable.proc.send_signal(signal.SIGSTOP)
    try:
        # One second of silence, a ping, one more second without an answer: dropped.
        page.wait_for_selector("#reconnecting", state="visible", timeout=6000)
        pings = [f for frames in page.wire.sockets for d, f in frames if d == "sent" and f["type"] == "ping"]
        assert pings, "the page never pinged the silent connection"
    finally:
        freezable.proc.send_signal(signal.SIGCONT)
    page.wait_for_selector("body[data-socket=open]", state="attached", timeout=10000)
    page.wait_for_selector("#reconnecting", state="hidden", timeout=2000)
    assert len(page.wire.sockets) >= 2

    wait_for_status(page, reply, "complete", timeout=30)
    assert record.wait_completed(5)
    sent = record.text_sent
    content, status, _ = saved(freezable, reply)
    assert status == "complete"
    assert content == sent
    assert text_of(page, reply) == sent
    assert page.wire.reassemble(reply) == sent
    assert page.locator(reply_selector(reply)).count() == 1
    # A pong is the socket's business: the page never treats it as a message.
    assert_no_problems(page)
