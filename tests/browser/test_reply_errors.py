"""A failed reply on the page: the server's words, the kind on hover, and
Continue only where there is text to go on from."""

from __future__ import annotations

import pytest

from .conftest import login
from .test_history import LAST_REPLY, api_messages, conversation_id, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def send_to(page, text: str, model: str) -> None:
    """Send with a model of the fake that the picker does not list (a fault scenario)."""
    page.eval_on_selector(
        "#model",
        """(select, value) => { const o = document.createElement('option'); o.value = value;
                                o.textContent = value; select.append(o); select.value = value; }""",
        f"openai/{model}",
    )
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def shown(page) -> dict:
    return page.eval_on_selector(
        LAST_REPLY,
        """el => ({
          badge: el.querySelector('.badge').textContent,
          tooltip: el.querySelector('.badge').title,
          kind: el.querySelector('.badge').dataset.errorKind,
          error: el.querySelector('.message-error').textContent,
          continueShown: !el.querySelector('.continue-reply').hidden,
          regenerateShown: !el.querySelector('.regenerate-reply').hidden,
        })""",
    )


def test_a_failed_reply_shows_the_servers_words_and_continue_only_with_text(page, server):
    login(page, server)
    send_to(page, "Fail before a word", "fake?fault=error_event&after=0")
    wait_status(page, "error")
    live = shown(page)
    stored = api_messages(page, conversation_id(page))[-1]
    assert stored["error_kind"] == "upstream_error" and stored["content"] == ""
    assert live["error"] == stored["error"] and "reported an error" in live["error"]
    assert live["badge"] == "Model error" and "upstream_error" not in live["badge"]
    assert live["kind"] == "upstream_error" and "upstream_error" in live["tooltip"]
    assert live["continueShown"] is False and live["regenerateShown"] is True

    # The same after a reload, from the stored reply.
    page.reload()
    wait_status(page, "error")
    assert shown(page) == live

    send_to(page, "Fail after a few words", "fake?tokens=10&rate=0&fault=error_event&after=3")
    page.wait_for_selector(".message[data-role=assistant]:nth-of-type(4)[data-status=error]")
    cut = shown(page)
    assert cut["continueShown"] is True and cut["badge"] == "Model error"
    assert "press Continue" in cut["error"]
    assert page.problems == []
