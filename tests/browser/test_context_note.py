"""A reply that left earlier messages out of a window says so, live and after a reload."""

from __future__ import annotations

import pytest

from .conftest import FAST_MARKDOWN, browser_server, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"
WINDOW = 700


@pytest.fixture(scope="module")
def server(fake_upstream):
    with browser_server(
        "chatsite-browser-context-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": FAST_MARKDOWN,
            "CHATSITE_LOCAL_MODEL": "off",
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            "CHATSITE_CONTEXT_TOKENS": str(WINDOW),
        },
    ) as daphne:
        yield daphne


def test_a_reply_shows_how_many_earlier_messages_were_not_sent_and_why(page, server):
    login(page, server)
    notes = []
    for i in range(3):
        page.fill("#prompt", f"Question {i}: " + "tides and waves " * 30)
        page.press("#prompt", "Enter")
        page.wait_for_selector(
            f".message[data-role=assistant]:nth-of-type({2 * (i + 1)})[data-status=complete]", timeout=15000
        )
        note = page.locator(f"{LAST_REPLY} .context-note")
        notes.append(note.inner_text() if note.is_visible() else "")
    assert notes[0] == ""
    assert notes[-1].endswith(f"not sent to the model: they don't fit its {WINDOW}-token window")
    ((omitted,),) = server.query(
        "select omitted_messages from conversations_message where role='assistant' "
        "order by created_at desc limit 1"
    )
    assert omitted > 0 and notes[-1].startswith(f"{omitted} earlier message")
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    assert page.inner_text(f"{LAST_REPLY} .context-note") == notes[-1]
    assert page.problems == []
