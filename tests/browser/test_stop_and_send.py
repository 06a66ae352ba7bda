"""Stop and send, in a real Chromium: while a reply streams the composer stays
usable; Enter (or the "Stop and send" button) stops the reply, saved exactly as
shown, and sends the new message in one step. Esc only stops."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from .conftest import FAST_MARKDOWN, SLOW_MARKDOWN, login
from .test_touch import PHONE, assert_reachable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPLIES = ".message[data-role=assistant]"
USERS = ".message[data-role=user]"


def poll(page, script: str, done, what: str, timeout: float = 15.0):
    """Evaluate ``script`` until ``done(value)`` (the page's CSP forbids
    Playwright's string wait_for_function)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script)
        if done(value):
            return value
        assert time.monotonic() < deadline, f"waited {timeout}s for {what} (last: {value!r})"
        page.wait_for_timeout(50)


def streaming_reply(page, *, chars: int = 60) -> None:
    """Send a long reply and wait until some of it is on the page."""
    page.select_option("#model", value=f"openai/{SLOW_MARKDOWN}")
    page.fill("#prompt", "Tell me a long story")
    page.press("#prompt", "Enter")
    page.wait_for_selector(f"{REPLIES}[data-status=streaming]")
    poll(
        page,
        f"() => (document.querySelector('{REPLIES}')?.chatsiteText || '').length",
        lambda n: n > chars,
        what=f"{chars} characters of the reply",
    )


def texts(page) -> list[tuple[str, str, str]]:
    """The conversation as shown: (role, status, text) of each message."""
    return page.eval_on_selector_all(
        ".message",
        "els => els.map(e => [e.dataset.role, e.dataset.status, e.chatsiteText || ''])",
    )


def saved_replies(server, page) -> list[tuple[str, str]]:
    """The replies of the page's conversation as the database has them, oldest first."""
    found = re.search(r"/c/([0-9a-f-]{36})/", page.url)
    assert found is not None, page.url
    conversation = found.group(1)
    return server.query(
        "select status, content from conversations_message where role='assistant' "
        "and conversation_id = ? order by created_at",
        uuid.UUID(conversation).hex,
    )


def test_enter_while_streaming_stops_the_reply_as_shown_and_sends_the_new_one(page, server, fake_upstream):
    login(page, server)
    before = len(fake_upstream.requests)
    streaming_reply(page)
    # The composer stays usable; empty, its button is Stop.
    assert page.is_editable("#prompt")
    assert page.is_visible("#stop") and page.is_hidden("#send")
    page.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
    page.type("#prompt", "Something short instead")
    assert page.is_visible("#send") and page.is_enabled("#send")
    assert page.inner_text("#send").strip() == "Stop and send"
    assert "Esc only stops" in page.inner_text("#composer-hint")
    page.screenshot(path="/tmp/stopsend-desktop-typing.png")
    page.press("#prompt", "Enter")
    assert page.input_value("#prompt") == ""

    page.wait_for_selector(f"{REPLIES} >> nth=0 >> xpath=self::*[@data-status='stopped']")
    assert page.inner_text(f"{REPLIES} >> nth=0 >> .badge").strip() == "Stopped"
    assert fake_upstream.requests[before].wait_disconnected(5), "the old reply's upstream stayed open"
    page.wait_for_selector(f"{REPLIES} >> nth=1 >> xpath=self::*[@data-status='complete']", timeout=15000)
    shown = texts(page)
    assert [(role, status) for role, status, _ in shown] == [
        ("user", "stored"),
        ("assistant", "stopped"),
        ("user", "stored"),
        ("assistant", "complete"),
    ]
    assert shown[2][2] == "Something short instead"
    seen = shown[1][2]
    assert seen
    # Saved exactly as shown.
    (old_status, old_content), (new_status, new_content) = saved_replies(server, page)
    assert (old_status, old_content) == ("stopped", seen)
    assert (new_status, new_content) == ("complete", shown[3][2])
    assert fake_upstream.requests[before].text_sent.startswith(seen)
    # Back to Send: no reply streams now.
    assert page.is_hidden("#stop") and page.inner_text("#send").strip() == "Send"
    page.screenshot(path="/tmp/stopsend-desktop-after.png")

    page.reload()
    page.wait_for_selector(f"{REPLIES} >> nth=1")
    assert texts(page) == shown
    assert page.inner_text(f"{REPLIES} >> nth=0 >> .badge").strip() == "Stopped"
    assert page.problems == []


def test_escape_only_stops_and_keeps_what_was_typed(page, server, fake_upstream):
    login(page, server)
    before = len(fake_upstream.requests)
    streaming_reply(page)
    page.type("#prompt", "not yet")
    page.keyboard.press("Escape")
    page.wait_for_selector(f"{REPLIES}[data-status=stopped]")
    assert fake_upstream.requests[before].wait_disconnected(5)
    assert page.input_value("#prompt") == "not yet"
    assert page.locator(USERS).count() == 1 and len(fake_upstream.requests) == before + 1
    # Nothing streams now: the button is a plain Send again, and Enter sends.
    page.wait_for_selector("#stop", state="hidden")
    assert page.inner_text("#send").strip() == "Send" and page.is_enabled("#send")
    page.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
    page.press("#prompt", "Enter")
    page.wait_for_selector(f"{REPLIES} >> nth=1 >> xpath=self::*[@data-status='complete']", timeout=15000)
    assert [s for _, s, _ in texts(page)] == ["stored", "stopped", "stored", "complete"]
    assert page.problems == []


@pytest.fixture
def phone(browser, server):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    yield page
    context.close()


def test_on_a_phone_stop_and_send_is_one_tap_away_with_the_keyboard_open(phone, server, fake_upstream):
    login(phone, server)
    before = len(fake_upstream.requests)
    streaming_reply(phone)
    assert_reachable(phone, "#stop")
    phone.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
    phone.tap("#prompt")
    phone.fill("#prompt", "Shorter, please, and in plain words")  # pasted: one input event
    # The on-screen keyboard takes the lower part of the screen: the page gets
    # what is left (the layout viewport shrinks, as on Android).
    phone.set_viewport_size({"width": 390, "height": 430})
    assert_reachable(phone, "#send")
    assert_reachable(phone, "#stop")
    assert phone.inner_text("#send").strip() == "Stop and send"
    # The message box keeps room to read what is typed: the Compare toggle gives way.
    box = phone.locator("#prompt").bounding_box()
    composer = phone.locator("#composer").bounding_box()
    assert box is not None and composer is not None
    assert box["width"] >= composer["width"] * 0.3, (box, composer)
    assert phone.locator("#compare-toggle").is_hidden()
    # Narrowed by the wider button, the box grew to show every line typed.
    hidden = phone.eval_on_selector("#prompt", "el => el.scrollHeight - el.clientHeight")
    assert hidden <= 0, f"{hidden}px of the message are hidden"
    phone.screenshot(path="/tmp/stopsend-phone-keyboard.png")
    phone.tap("#send")
    phone.wait_for_selector(f"{REPLIES} >> nth=0 >> xpath=self::*[@data-status='stopped']")
    assert fake_upstream.requests[before].wait_disconnected(5)
    phone.wait_for_selector(f"{REPLIES} >> nth=1 >> xpath=self::*[@data-status='complete']", timeout=15000)
    shown = texts(phone)
    assert [s for _, s, _ in shown] == ["stored", "stopped", "stored", "complete"]
    assert saved_replies(server, phone)[0] == ("stopped", shown[1][2])
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.screenshot(path="/tmp/stopsend-phone-after.png")
    assert phone.problems == []
