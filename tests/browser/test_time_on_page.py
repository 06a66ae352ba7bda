"""Time on the page: messages and conversations say when they were written, in
words that follow the clock, with the exact time on hover; imported ones keep
their original times."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .conftest import FAST_MARKDOWN, login
from .test_history import LAST_REPLY, api_messages, conversation_id, item, poll, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "chatgpt" / "branches.json"
USER_TIME = ".message[data-role=user] time"


def iso_ms(epoch: float) -> str:
    """An epoch as the browser's Date.toISOString() writes it."""
    when = datetime.fromtimestamp(epoch, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def times(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector, "els => els.map(e => ({datetime: e.dateTime, title: e.title, text: e.textContent}))"
    )


def test_a_new_message_says_just_now_and_its_age_follows_the_clock(page, server):
    page.clock.install()
    login(page, server)
    send(page, "What time is it?", FAST_MARKDOWN)
    wait_status(page, "complete")
    (user,) = times(page, USER_TIME)
    assert user["text"] == "just now"
    # The exact moment, on hover.
    written = datetime.fromisoformat(user["datetime"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - written).total_seconds()) < 60
    assert str(written.astimezone().year) in user["title"] and user["title"] != user["text"]
    assert times(page, f"{LAST_REPLY} time")[0]["text"] == "just now"
    conv = conversation_id(page)
    assert times(page, f"{item(page, conv)} time")[0]["text"] == "just now"

    page.clock.fast_forward("05:00")
    poll(page, f"() => document.querySelector('{USER_TIME}').textContent", lambda t: t == "5 min ago")
    assert times(page, f"{item(page, conv)} time")[0]["text"] == "5 min ago"
    page.clock.fast_forward("24:00:00")
    poll(page, f"() => document.querySelector('{USER_TIME}').textContent", lambda t: t == "yesterday")

    # Reloaded, the times come from the server and say the same.
    stored = api_messages(page, conv)
    assert iso_ms(datetime.fromisoformat(stored[0]["created_at"]).timestamp())[:16] == user["datetime"][:16]
    assert page.problems == []


def test_an_imported_conversation_shows_its_original_times(page, server):
    conversations = json.loads(FIXTURE.read_text())
    original = conversations[0]
    login(page, server)
    page.click(".sidebar-tools summary")
    page.set_input_files("#import-file", str(FIXTURE))
    page.wait_for_selector("#import-status:has-text('Imported 2 conversations')")

    # Dated 2024, it is listed among the oldest: scroll the list until its page has come.
    item = f"#conversation-list li:has(a[title='{original['title']}'])"
    deadline = time.monotonic() + 15
    while not page.locator(item).count():
        assert time.monotonic() < deadline, "the imported conversation never appeared in the list"
        page.evaluate(
            "() => { const n = document.getElementById('conversation-nav'); n.scrollTop = n.scrollHeight; }"
        )
        page.wait_for_timeout(50)
    link = page.locator("#conversation-list .conversation-link", has_text=original["title"]).first
    (listed,) = times(page, f"{item} time")
    assert listed["datetime"] == iso_ms(original["update_time"])
    assert "2024" in listed["text"] and "2024" in listed["title"]  # a date, not "just now"

    link.click()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    shown = [t["datetime"] for t in times(page, ".message time")]
    users = [
        node["message"]["create_time"]
        for node in original["mapping"].values()
        if node["message"] and node["message"]["author"]["role"] == "user"
    ]
    # The branch on show ends with the newest user message; each shown user
    # message keeps the time ChatGPT recorded.
    user_times = [t["datetime"] for t in times(page, ".message[data-role=user] time")]
    assert user_times and set(user_times) <= {iso_ms(t) for t in users}
    assert len(shown) == page.locator(".message").count()
    assert page.problems == []
