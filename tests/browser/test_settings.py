"""The conversation settings dialog, in a real browser."""

from __future__ import annotations

import pytest

from .conftest import FAST_MARKDOWN, login
from .test_chat_page import LAST_REPLY, send

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_settings_are_saved_and_shape_the_next_reply(page, server, fake_upstream):
    settings_shape_the_next_reply(page, server, fake_upstream)


def settings_shape_the_next_reply(page, server, fake_upstream) -> None:
    """The settings dialog saves, the next request carries them; bad values are refused.

    Also run against the production stack (tests/browser/production/).
    """
    login(page, server)
    assert page.is_hidden("#settings-button")  # no conversation yet
    send(page, "first", FAST_MARKDOWN)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=15000)
    page.click("#settings-button")
    page.fill("#settings-system", "You are terse.")
    page.fill("#settings-temperature", "0.5")
    page.fill("#settings-max-tokens", "40")
    page.click("#settings-save")
    page.wait_for_selector("#settings-dialog", state="hidden")
    conversation = page.url.rstrip("/").rsplit("/", 1)[1]
    rows = server.query(
        "select system_prompt, temperature, max_tokens from conversations_conversation where id = ?",
        conversation.replace("-", ""),
    )
    assert rows == [("You are terse.", 0.5, 40)]

    before = len(fake_upstream.requests)
    send(page, "second", FAST_MARKDOWN)
    page.wait_for_selector(f"{LAST_REPLY}[data-status]:not([data-status=streaming])", timeout=15000)
    body = fake_upstream.requests[before].body
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["temperature"] == 0.5 and body["max_tokens"] == 40

    # A bad value is refused in the dialog and changes nothing.
    page.click("#settings-button")
    assert page.input_value("#settings-system") == "You are terse."
    page.fill("#settings-temperature", "7")
    page.click("#settings-save")
    page.wait_for_timeout(300)
    # The browser's own validation keeps the dialog open; nothing is sent.
    assert page.locator("#settings-temperature:invalid").count() == 1
    assert page.is_visible("#settings-dialog")
    assert server.query(
        "select temperature from conversations_conversation where id = ?", conversation.replace("-", "")
    ) == [(0.5,)]
    assert page.problems == []
