"""The Usage dialog in a real Chromium: a conversation's menu shows its replies,
tokens, what a stopped reply used until its stop, and the estimated cost from
the server's prices; at a phone's size too."""

from __future__ import annotations

import json

import pytest

from .conftest import FAST_MARKDOWN, SLOW_MARKDOWN, USERNAME, browser_server, login
from .test_history import LAST_REPLY, conversation_id, item, open_menu, poll, send, wait_status
from .test_touch import PHONE, assert_reachable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRICES = {"openai/fake*": {"input": "1.50", "output": "6"}}


@pytest.fixture(scope="module")
def priced_server(fake_upstream):
    with browser_server(
        "chatsite-usage-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(["fake", SLOW_MARKDOWN, FAST_MARKDOWN]),
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            "CHATSITE_MODEL_PRICES": json.dumps(PRICES),
        },
    ) as daphne:
        yield daphne


@pytest.fixture
def usage_page(browser, priced_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    yield page
    context.close()


def a_complete_and_a_stopped_reply(page) -> str:
    send(page, "Say something short", FAST_MARKDOWN)
    wait_status(page, "complete")
    send(page, "Now tell me a long story", SLOW_MARKDOWN)
    poll(
        page,
        f"() => (document.querySelector('{LAST_REPLY}')?.chatsiteText || '').length",
        lambda n: n > 60,
        what="some text",
    )
    page.click("#stop")
    wait_status(page, "stopped")
    return conversation_id(page)


def totals(server, conv: str) -> tuple[int, int, int, int]:
    """(replies, completion tokens, stopped replies, their completion tokens), from the database."""
    rows = server.query(
        "select status, completion_tokens from conversations_message"
        " where conversation_id = ? and role = 'assistant'",
        conv.replace("-", ""),
    )
    stopped = [c for s, c in rows if s == "stopped"]
    return len(rows), sum(c for _, c in rows), len(stopped), sum(stopped)


def dialog_terms(page) -> dict[str, str]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#usage-totals dt')].map(
               (dt) => [dt.textContent, dt.nextElementSibling.textContent]))"""
    )


def test_the_usage_dialog_shows_the_conversations_totals_and_what_the_stop_saved(usage_page, priced_server):
    page = usage_page
    login(page, priced_server)
    conv = a_complete_and_a_stopped_reply(page)
    replies, completion, stopped, stopped_completion = totals(priced_server, conv)
    assert (replies, stopped) == (
        2,
        1,
    ) and 0 < stopped_completion < 400  # the slow reply had 400 tokens to give

    open_menu(page, conv)
    page.click(f"{item(page, conv)} .item-menu [data-action=usage]")
    page.wait_for_selector("#usage-dialog[open] #usage-totals:not([hidden])")
    terms = dialog_terms(page)
    assert terms["Replies"] == "2 replies (1 complete, 1 stopped)"
    assert terms["Completion tokens"] == f"{completion:,}"
    assert terms["Stopped replies"] == "1"
    assert terms["Their tokens until the stop"].endswith(f"· {stopped_completion:,} completion")
    api = page.evaluate("async (id) => (await (await fetch(`/api/conversations/${id}/usage/`)).json())", conv)
    assert terms["Estimated cost"] == f"≈ {api['cost']}" and api["cost"] != "0.000000"
    assert terms["Their cost until the stop"] == f"≈ {api['stopped']['cost']}"
    assert "estimates" in page.inner_text("#usage-notes")
    # The reply's own metrics line shows the stopped reply's tokens too.
    assert f"{stopped_completion} token" in page.inner_text(f"{LAST_REPLY} .metrics")
    page.screenshot(path="/tmp/usage-dialog.png")
    page.click("#usage-dialog button[value=close]")
    page.wait_for_selector("#usage-dialog", state="hidden")
    assert page.problems == []


def test_on_a_phone_the_usage_dialog_opens_from_the_drawer_and_fits(browser, priced_server):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    login(page, priced_server)
    send(page, "Usage from a phone", FAST_MARKDOWN)
    wait_status(page, "complete")
    conv = conversation_id(page)
    page.tap("#sidebar-toggle")
    page.wait_for_selector("body.sidebar-open")
    poll(page, "() => document.getElementById('sidebar').getBoundingClientRect().left", lambda x: x >= 0)
    page.tap(f"{item(page, conv)} .item-menu-button")
    page.wait_for_selector(f"{item(page, conv)} .item-menu")
    page.tap(f"{item(page, conv)} .item-menu [data-action=usage]")
    page.wait_for_selector("#usage-dialog[open] #usage-totals:not([hidden])")
    assert dialog_terms(page)["Replies"] == "1 reply"
    width = page.eval_on_selector("#usage-dialog", "el => el.getBoundingClientRect().right")
    assert width <= 390
    assert_reachable(page, "#usage-dialog button[value=close]")
    page.screenshot(path="/tmp/usage-dialog-phone.png")
    page.tap("#usage-dialog button[value=close]")
    page.wait_for_selector("#usage-dialog", state="hidden")
    assert problems == []
    context.close()


def test_staff_read_usage_per_user_and_model_in_the_admin(usage_page, priced_server):
    page = usage_page
    priced_server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.filter(username='{USERNAME}').update(is_staff=True, is_superuser=True)",
    )
    missing: list[str] = []
    page.on("response", lambda r: r.status >= 400 and missing.append(f"{r.status} {r.url}"))
    login(page, priced_server)
    send(page, "Count me in the admin", FAST_MARKDOWN)
    wait_status(page, "complete")
    page.goto(f"{priced_server.url}/admin/")
    page.click("#chatsite-usage a")
    page.wait_for_selector("#usage-table")
    page.click("#usage-range a >> text=Today")
    page.wait_for_selector("#usage-table tbody tr")
    rows = page.eval_on_selector_all(
        "#usage-table tbody tr", "rows => rows.map((r) => [...r.cells].map((c) => c.textContent.trim()))"
    )
    mine = [r for r in rows if r[0] == USERNAME and r[1] == f"openai/{FAST_MARKDOWN}"]
    assert mine and int(mine[0][2]) >= 1
    assert mine[0][-2].startswith("0.")  # an estimated cost, from the server's prices
    page.screenshot(path="/tmp/usage-admin.png", full_page=True)
    assert missing == [] and page.problems == []
