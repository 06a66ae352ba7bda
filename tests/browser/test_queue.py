"""A reply that waits for a busy model shows its place, live, and can be stopped
while it waits (a server with a capacity of one reply at a time)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import PASSWORD, USERNAME, browser_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = "fake?fault=drip&rate=20"  # streams until stopped
SHORT = "fake?tokens=12&rate=40"
LAST_REPLY = ".message[data-role=assistant]:last-of-type"
SHOTS = Path(tempfile.gettempdir())
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}


@pytest.fixture(scope="module")
def busy_server(fake_upstream):
    with browser_server(
        "chatsite-queue-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join([LONG, SHORT]),
            "OPENAI_CAPACITY": "1",
            "CHATSITE_DEFAULT_MODEL": f"openai/{LONG}",
            "CHATSITE_AUTO_TITLES": "off",
        },
    ) as daphne:
        yield daphne


def open_page(context, server):
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    return page


def login(page, server) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    page.wait_for_selector("body[data-socket=open]", state="attached")


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=f"openai/{model}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def stop(page, *, touch: bool) -> None:
    if touch:
        page.tap("#stop")
    else:
        page.click("#stop")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_a_waiting_reply_shows_its_place_then_streams_and_stop_works_while_it_waits(
    browser, busy_server, device
):
    touch = device == "phone"
    context = browser.new_context(**(PHONE if touch else {"viewport": {"width": 1280, "height": 800}}))
    try:
        streaming, waiting = open_page(context, busy_server), open_page(context, busy_server)
        login(streaming, busy_server)
        waiting.goto(f"{busy_server.url}/")
        waiting.wait_for_selector("body[data-socket=open]", state="attached")

        # One tab's reply takes the model; the other's waits, and says so.
        send(streaming, "Write a long story", LONG)
        streaming.wait_for_selector(f"{LAST_REPLY}[data-status=streaming] .message-body p")
        send(waiting, "A short answer, please", SHORT)
        place = waiting.locator(f"{LAST_REPLY} .queue-place")
        expect(place).to_have_text("Waiting for the model: 1 ahead")
        expect(place).to_have_attribute("aria-live", "polite")
        expect(waiting.locator("#stop")).to_be_visible()
        waiting.screenshot(path=str(SHOTS / f"queueing-waiting-{device}.png"))

        # Stop while it waits: it ends at once as stopped, with no text.
        stop(waiting, touch=touch)
        waiting.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
        expect(place).to_be_hidden()
        assert waiting.inner_text(f"{LAST_REPLY} .message-body").strip() == ""
        expect(waiting.locator("#stop")).to_be_hidden()
        # The streaming one was not touched.
        assert streaming.locator(f"{LAST_REPLY}[data-status=streaming]").count() == 1

        # Waiting again: when the model is free, the line goes and the reply streams.
        send(waiting, "Then another short answer", SHORT)
        expect(waiting.locator(f"{LAST_REPLY} .queue-place")).to_have_text("Waiting for the model: 1 ahead")
        # A reload while it waits re-attaches and shows the place again.
        waiting.reload()
        waiting.wait_for_selector("body[data-socket=open]", state="attached")
        expect(waiting.locator(f"{LAST_REPLY} .queue-place")).to_have_text("Waiting for the model: 1 ahead")
        stop(streaming, touch=touch)
        streaming.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
        waiting.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
        expect(waiting.locator(f"{LAST_REPLY} .queue-place")).to_be_hidden()
        assert waiting.inner_text(f"{LAST_REPLY} .message-body").strip().startswith("w0 w1")
        assert streaming.problems == [] and waiting.problems == []
    finally:
        context.close()
