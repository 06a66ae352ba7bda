"""A model that cannot stream, in a real browser: its reply appears whole once
the server answers, Stop works while the answer is pending (and closes the
upstream connection), on a desktop and on a phone (against the fake upstream)."""

from __future__ import annotations

import pytest

from .conftest import browser_server, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"
# A markdown answer the server takes about a second to give, all at once.
WHOLE = "batch?text=markdown&tokens=40&rate=0&ttft=1"
# One that never comes in time: Stop is the only way out.
PENDING = "batch?tokens=5&ttft=60"
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}


@pytest.fixture(scope="module")
def whole_server(fake_upstream):
    with browser_server(
        "chatsite-nonstream-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(["fake", WHOLE, PENDING]),
            "CHATSITE_NON_STREAMING_MODELS": "openai/batch*",
            "CHATSITE_DEFAULT_MODEL": f"openai/{WHOLE}",
        },
    ) as daphne:
        yield daphne


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=f"openai/{model}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def completion_request(fake):
    """The first chat completion request the fake got (model listings aside)."""
    n = 1
    while True:
        records = fake.wait_for_requests(n)
        found = [r for r in records if r.path == "/v1/chat/completions"]
        if found:
            return found[0]
        n = len(records) + 1


def test_a_non_streaming_models_reply_appears_whole_with_its_metrics(browser, whole_server, fake_upstream):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    try:
        fake_upstream.reset()
        login(page, whole_server)
        send(page, "Tell me everything at once", WHOLE)
        record = completion_request(fake_upstream)
        assert record.body["stream"] is False
        # While the server thinks, the reply waits with Stop at hand and no text.
        page.wait_for_selector("#stop", state="visible")
        assert page.eval_on_selector(LAST_REPLY, "el => el.dataset.status") == "streaming"
        page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=10_000)
        body = page.inner_text(f"{LAST_REPLY} .message-body")
        assert "A fake reply" in body and "canned answer" in body
        assert page.eval_on_selector(f"{LAST_REPLY} pre code", "el => el.textContent").startswith("def greet")
        metrics = page.inner_text(f"{LAST_REPLY} .metrics")
        assert "tok/s" not in metrics  # a whole answer has no pace to show
        page.wait_for_selector("#stop", state="hidden")
        page.screenshot(path="/tmp/nonstream-desktop.png")
        assert problems == []
    finally:
        context.close()


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_stop_while_the_whole_answer_is_pending_stops_it(browser, whole_server, fake_upstream, device):
    context = browser.new_context(
        **(PHONE if device == "phone" else {"viewport": {"width": 1280, "height": 800}})
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    try:
        fake_upstream.reset()
        login(page, whole_server)
        send(page, "Take your time", PENDING)
        record = completion_request(fake_upstream)
        page.wait_for_selector("#stop", state="visible")
        page.screenshot(path=f"/tmp/nonstream-pending-{device}.png")
        if device == "phone":
            page.tap("#stop")
        else:
            page.click("#stop")
        page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
        assert page.inner_text(f"{LAST_REPLY} .badge").strip() == "Stopped"
        assert record.wait_disconnected(5), "Stop did not close the upstream connection"
        assert not record.completed
        page.wait_for_selector("#stop", state="hidden")
        page.screenshot(path=f"/tmp/nonstream-stopped-{device}.png")
        # Reloaded, the saved reply is the same: stopped, with nothing in it.
        page.reload()
        page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
        assert page.inner_text(f"{LAST_REPLY} .message-body").strip() == ""
        assert problems == []
    finally:
        context.close()
