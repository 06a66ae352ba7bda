"""What a user sees, in a real headless Chromium against a real daphne."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import FAST_MARKDOWN, HOSTILE, SLOW_MARKDOWN, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"


def reply_text(page) -> str:
    return page.eval_on_selector(LAST_REPLY, "el => el.chatsiteText")


def wait_for_reply_length(page, chars: int, timeout: float = 15.0) -> None:
    # Polled from here: Playwright's wait_for_function evaluates strings, which
    # the page's CSP (rightly) forbids.
    deadline = time.monotonic() + timeout
    script = f"() => (document.querySelector('{LAST_REPLY}')?.chatsiteText || '').length"
    while page.evaluate(script) <= chars:
        assert time.monotonic() < deadline, f"the reply never reached {chars} characters"
        page.wait_for_timeout(50)


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=f"openai/{model}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_send_watch_it_stream_stop_reload_and_see_exactly_the_same_reply(page, server, fake_upstream):
    send_stream_stop_and_reload(page, server, fake_upstream)


def send_stream_stop_and_reload(page, server, fake_upstream) -> None:
    """Send, watch it stream, stop, reload: the same reply, saved as seen.

    Also run against the production stack (tests/browser/production/).
    """
    login(page, server)
    before = len(fake_upstream.requests)
    send(page, "Tell me about markdown", SLOW_MARKDOWN)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    # Streamed markdown renders as it arrives, sanitized and highlighted.
    wait_for_reply_length(page, 150)
    page.click("#stop")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    assert page.inner_text(f"{LAST_REPLY} .badge").strip() == "Stopped"
    assert page.is_hidden("#stop")
    seen_text = reply_text(page)
    seen_render = page.inner_text(f"{LAST_REPLY} .message-body")
    assert seen_text and seen_render.strip()

    record = fake_upstream.requests[before]
    assert record.wait_disconnected(5), "Stop did not close the upstream connection"
    ((content, status),) = server.query(
        "select content, status from conversations_message where role='assistant' "
        "order by created_at desc limit 1"
    )
    assert status == "stopped"
    assert content == seen_text
    assert record.text_sent.startswith(content) and len(record.text_sent) < 4000

    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    assert page.inner_text(f"{LAST_REPLY} .badge").strip() == "Stopped"
    assert reply_text(page) == seen_text
    assert page.inner_text(f"{LAST_REPLY} .message-body") == seen_render
    user_messages = page.locator(".message[data-role=user]")
    assert user_messages.count() == 1
    assert user_messages.first.locator(".message-body").inner_text().strip() == "Tell me about markdown"
    assert page.problems == []


def test_a_complete_reply_shows_rendered_markdown_highlighted_code_and_metrics(page, server):
    login(page, server)
    send(page, "Show me some code", FAST_MARKDOWN)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=15000)
    body = f"{LAST_REPLY} .message-body"
    assert page.locator(f"{body} pre code").count() >= 1
    assert page.locator(f"{body} pre code .hljs-keyword, {body} pre code.hljs").count() >= 1
    assert page.locator(f"{body} strong").count() >= 1
    assert page.locator(f"{LAST_REPLY} .badge").is_hidden()
    metrics = page.inner_text(f"{LAST_REPLY} .metrics")
    assert "tok" in metrics and "ms" in metrics
    # The conversation appears in the sidebar, linked by its stable URL.
    path = re.search(r"/c/[0-9a-f-]{36}/", page.url).group(0)
    assert page.locator(f"#conversation-list a[href='{path}']").count() == 1
    assert page.problems == []


def test_enter_sends_and_shift_enter_makes_a_new_line(page, server):
    login(page, server)
    page.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
    page.fill("#prompt", "first line")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "second line")
    assert page.input_value("#prompt") == "first line\nsecond line"
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message[data-role=user]")
    assert page.input_value("#prompt") == ""
    assert "second line" in page.inner_text(".message[data-role=user]")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=15000)


def test_escape_stops_a_streaming_reply(page, server, fake_upstream):
    login(page, server)
    before = len(fake_upstream.requests)
    send(page, "Go on and on", SLOW_MARKDOWN)
    wait_for_reply_length(page, 20)
    assert page.is_disabled("#send") and page.is_visible("#stop")
    page.keyboard.press("Escape")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    assert page.inner_text(f"{LAST_REPLY} .badge").strip() == "Stopped"
    assert fake_upstream.requests[before].wait_disconnected(5), "Escape did not close the upstream connection"
    # The composer is back: no Stop button, and Send takes the next message.
    page.wait_for_selector("#stop", state="hidden")
    page.wait_for_selector("#send:enabled")


def test_logged_out_visitor_is_sent_to_login(page, server):
    page.goto(f"{server.url}/")
    assert "/accounts/login/" in page.url
    assert page.locator("#id_username").count() == 1


def _assert_inert(page, body: str) -> None:
    for tag in ("script", "iframe", "svg", "style", "form", "input", "object", "embed"):
        assert page.locator(f"{body} {tag}").count() == 0, tag
    assert page.locator(f"{body} [onerror], {body} [onload], {body} [onclick], {body} [style]").count() == 0
    assert page.locator(f"{body} a[href^='javascript']").count() == 0
    for src in page.eval_on_selector_all(f"{body} img", "els => els.map(e => e.getAttribute('src'))"):
        assert src.startswith("data:") or src.startswith("/"), src


def test_hostile_model_output_renders_inert_live_and_from_history(page, server):
    foreign: list[str] = []
    page.on(
        "request",
        lambda r: r.url.startswith(server.url) or r.url.startswith("data:") or foreign.append(r.url),
    )
    login(page, server)
    send(page, "Say something nasty", HOSTILE)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=15000)
    body = f"{LAST_REPLY} .message-body"
    assert "The end." in page.inner_text(body)
    # Raw HTML from the model is shown as text, never parsed into elements.
    assert '<script>alert("script")</script>' in page.inner_text(body)
    _assert_inert(page, body)
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    _assert_inert(page, body)
    page.wait_for_timeout(300)
    assert foreign == []
    assert page.problems == []


def test_pages_carry_a_strict_content_security_policy(page, server):
    response = page.goto(f"{server.url}/accounts/login/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "img-src 'self' data:" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_a_new_conversation_is_titled_on_the_page_as_the_server_titles_it(page, server):
    """The page names a new conversation the moment it is stored, before any
    reload; the name must be the server's (one rule: ``title_auto``), not a
    guess that changes on the next visit."""
    login(page, server)
    text = "  Plan the trip\n\nto   Lisbon: flights, a hotel near the river, three museums and 🍷 tasting"
    send(page, text, FAST_MARKDOWN)
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    shown = page.inner_text("#conversation-title")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=15000)
    page.reload()
    stored = page.inner_text("#conversation-title")
    assert shown == stored
    assert stored.startswith("Plan the trip to Lisbon:") and stored.endswith("…")
    assert page.problems == []
