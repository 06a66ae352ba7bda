"""A title made by the conversation's model appears in the sidebar without a
reload, in every tab of the user, as text (it is model output)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import FAST_MARKDOWN, PASSWORD, USERNAME, browser_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The title model answers "Here is some <b>bold</b> text." (and more lines),
# after a second: the first-line title shows until then.
TITLE_MODEL = "fake?text=hostile&tokens=8&rate=0&ttft=1"
MADE = "Here is some <b>bold</b> text"
QUESTION = "How do I reverse a list in Python without copying it?"
SHOTS = Path(tempfile.gettempdir()) / "chatsite-title-shots"


@pytest.fixture(scope="module")
def titled_server(fake_upstream):
    with browser_server(
        "chatsite-titles-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(["fake", FAST_MARKDOWN, TITLE_MODEL]),
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            "CHATSITE_AUTO_TITLES": "on",
            "CHATSITE_TITLE_MODEL": f"openai/{TITLE_MODEL}",
        },
    ) as daphne:
        yield daphne


def login(page, server) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    page.wait_for_selector("body[data-socket=open]", state="attached")


def sidebar_titles(page) -> list[str]:
    return page.locator("#conversation-list .conversation-title").all_text_contents()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}])
def test_a_made_title_appears_in_the_sidebar_and_header_of_every_tab_without_a_reload(
    browser, titled_server, viewport
):
    context = browser.new_context(viewport=viewport)
    problems: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    login(page, titled_server)
    # A second tab of the same user, open on the start page before the chat exists.
    other = context.new_page()
    other.goto(f"{titled_server.url}/")
    other.wait_for_selector("body[data-socket=open]", state="attached")
    before = sidebar_titles(other)

    page.fill("#prompt", QUESTION)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message[data-role=assistant][data-status=complete]", timeout=15_000)
    current = page.locator("#conversation-list .conversation-link.current .conversation-title")
    # The reply is done and the title not yet made: the first-line title shows.
    expect(current).to_have_text(QUESTION)
    # Then the model's title replaces it, with no reload: in the list, the header
    # and the tab's title; as text, the markup in it inert.
    expect(current).to_have_text(MADE, timeout=10_000)
    expect(page.locator("#conversation-title")).to_have_text(MADE)
    assert page.title() == f"{MADE} · chatsite"
    assert page.locator("#sidebar b, #conversation-title b").count() == 0
    menu = page.locator("#conversation-list .conversation-item").first.locator(".item-menu-button")
    assert menu.get_attribute("aria-label") == f"Actions for {MADE}"
    SHOTS.mkdir(exist_ok=True)
    if viewport["width"] < 600:
        page.click("#sidebar-toggle")
        expect(current).to_be_visible()
        # The drawer slides in: the picture is taken once it is in place.
        drawer = page.locator("#sidebar")
        for _ in range(100):
            box = drawer.bounding_box()
            if box is not None and box["x"] >= 0:
                break
            page.wait_for_timeout(20)
    page.screenshot(path=str(SHOTS / f"title-{viewport['width']}.png"))

    # The other tab lists the new conversation, with its made title.
    expect(other.locator("#conversation-list .conversation-title").first).to_have_text(MADE, timeout=10_000)
    assert sidebar_titles(other) == [MADE, *before]
    # A reload shows the same: it is stored.
    page.reload()
    expect(page.locator("#conversation-title")).to_have_text(MADE)
    if viewport["width"] >= 600:
        # A rename in one tab shows in the other at once too; the user's title stays.
        page.locator("#conversation-list .conversation-item").first.locator(".item-menu-button").click()
        page.click(".item-menu [data-action=rename]")
        page.fill(".rename-input", "Lists, reversed")
        page.press(".rename-input", "Enter")
        expect(other.locator("#conversation-list .conversation-title").first).to_have_text("Lists, reversed")
        expect(page.locator("#conversation-title")).to_have_text("Lists, reversed")
    assert problems == []
    context.close()
