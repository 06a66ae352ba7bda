"""Compare models side by side, in a real headless Chromium against a real daphne:
pick 2 to 4 models in the composer, watch the replies stream in columns, stop
one or all, continue with one, reload mid-stream, and the phone's tabs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import FAST_MARKDOWN, HOSTILE, MATH_STALLED, SLOW_MARKDOWN, browser_server, login
from .test_history import poll

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
COLUMN = ".compare .compare-column"


def pick(page, *models: str) -> None:
    page.click("#compare-toggle")
    page.wait_for_selector("#compare-picker:not([hidden])")
    for model in models:
        page.check(f'#compare-models input[value="openai/{model}"]')


def compare(page, text: str, *models: str, shot: str | None = None) -> None:
    pick(page, *models)
    if shot:
        page.screenshot(path=shot)
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_selector(COLUMN)


def columns(page) -> list[dict]:
    return page.eval_on_selector_all(
        COLUMN,
        """cols => cols.map(c => ({
            reply: c.dataset.reply,
            status: c.querySelector('.message').dataset.status,
            model: c.querySelector('.compare-model').textContent,
            text: c.querySelector('.message').chatsiteText,
            metrics: c.querySelector('.metrics').hidden ? '' : c.querySelector('.metrics').textContent,
        }))""",
    )


def wait_statuses(page, statuses: list[str], timeout: float = 30.0) -> list[dict]:
    poll(
        page,
        f"() => [...document.querySelectorAll('{COLUMN} .message')].map(m => m.dataset.status)",
        lambda v: v == statuses,
        timeout=timeout,
        what=f"columns {statuses}",
    )
    return columns(page)


def saved(server, reply: str) -> tuple[str, str]:
    ((content, status),) = server.query(
        f"select content, status from conversations_message where id = '{reply.replace('-', '')}'"
        f" or id = '{reply}'"
    )
    return content, status


def test_compare_two_models_streams_side_by_side_and_each_is_saved_as_seen(page, server):
    login(page, server)
    compare(page, "Compare these", FAST_MARKDOWN, HOSTILE, shot="/tmp/compare-picker.png")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    cols = wait_statuses(page, ["complete", "complete"])
    assert [c["model"] for c in cols] == [FAST_MARKDOWN, HOSTILE]
    for col in cols:
        assert col["text"] and col["metrics"], col
        assert saved(server, col["reply"]) == (col["text"], "complete")
    # Model text went through the sanitizer: the hostile reply's markup is inert.
    assert page.locator(f"{COLUMN} script, {COLUMN} iframe, {COLUMN} [onerror]").count() == 0
    # Side by side on a wide screen: the second column is right of the first.
    boxes = [page.locator(COLUMN).nth(i).bounding_box() for i in range(2)]
    assert boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1 and abs(boxes[1]["y"] - boxes[0]["y"]) < 2
    assert page.locator(".compare .compare-choose:visible").count() == 2
    page.screenshot(path="/tmp/compare-two.png")
    assert page.problems == []


def test_compare_three_stop_one_column_then_stop_all(page, server):
    login(page, server)
    compare(page, "Three at once", SLOW_MARKDOWN, FAST_MARKDOWN, MATH_STALLED)
    poll(page, f"() => document.querySelectorAll('{COLUMN}').length", lambda n: n == 3, what="3 columns")
    poll(
        page,
        f"() => (document.querySelector('{COLUMN} .message')?.chatsiteText || '').length",
        lambda n: n > 40,
        what="the first column streaming",
    )
    page.locator(COLUMN).nth(0).locator(".compare-stop").click()
    poll(
        page,
        f"() => document.querySelector('{COLUMN} .message').dataset.status",
        lambda s: s == "stopped",
        what="column 1 stopped",
    )
    assert columns(page)[2]["status"] == "streaming"
    first = page.locator(COLUMN).nth(0)
    assert first.locator(".compare-status").inner_text() == "Stopped"
    assert first.locator(".compare-stop").is_hidden()
    page.screenshot(path="/tmp/compare-three.png")
    page.keyboard.press("Escape")  # Esc stops all
    cols = wait_statuses(page, ["stopped", "complete", "stopped"])
    for col in cols:
        assert saved(server, col["reply"]) == (col["text"], col["status"])
    assert page.is_hidden("#stop")
    assert page.problems == []


def test_continue_with_column_two_then_send_continues_from_its_reply(page, server):
    login(page, server)
    compare(page, "Pick one", FAST_MARKDOWN, HOSTILE)
    cols = wait_statuses(page, ["complete", "complete"])
    page.locator(COLUMN).nth(1).locator(".compare-choose").click()
    poll(
        page,
        f"() => document.querySelectorAll('{COLUMN} .compare-choose')[1].getAttribute('aria-pressed')",
        lambda v: v == "true",
        what="column 2 chosen",
    )
    page.click("#compare-toggle")
    page.click("#compare-clear")
    page.select_option("#model", value=f"openai/{FAST_MARKDOWN}")
    page.fill("#prompt", "And then?")
    page.press("#prompt", "Enter")
    poll(page, "() => document.querySelectorAll('.compare').length", lambda n: n == 0, what="columns settle")
    page.wait_for_selector(".message[data-role=assistant]:last-of-type[data-status=complete]")
    ((parent,),) = server.query(
        "select parent_id from conversations_message where role='user' order by created_at desc limit 1"
    )
    assert str(parent).replace("-", "") == cols[1]["reply"].replace("-", "")
    # The chosen reply is shown, with its versions: 2/2.
    assert page.locator(".message[data-role=assistant] .version-label").first.inner_text() == "2/2"
    assert page.problems == []


def test_reload_mid_compare_reattaches_every_column_each_piece_once(page, server):
    login(page, server)
    compare(page, "Reload me", SLOW_MARKDOWN, MATH_STALLED)
    poll(
        page,
        f"() => [...document.querySelectorAll('{COLUMN} .message')].map(m => m.chatsiteText.length)",
        lambda v: len(v) == 2 and min(v) > 20,
        what="both columns streaming",
    )
    page.reload()
    page.wait_for_selector(f"{COLUMN} .message[data-status=streaming]")
    poll(page, f"() => document.querySelectorAll('{COLUMN}').length", lambda n: n == 2, what="2 columns")
    page.keyboard.press("Escape")
    cols = wait_statuses(page, ["stopped", "stopped"])
    for col in cols:
        content, status = saved(server, col["reply"])
        assert (content, status) == (col["text"], "stopped")  # nothing twice, nothing missing
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


def test_on_a_phone_the_columns_are_tabs_each_with_its_status(phone, server):
    page = phone
    login(page, server)
    compare(page, "On the go", FAST_MARKDOWN, HOSTILE, shot="/tmp/compare-phone-picker.png")
    wait_statuses(page, ["complete", "complete"])
    tabs = page.locator(".compare [role=tab]")
    assert tabs.count() == 2
    assert page.locator(".compare [role=tablist]").is_visible()
    assert page.locator(COLUMN).nth(0).is_visible() and not page.locator(COLUMN).nth(1).is_visible()
    assert "Done" in tabs.nth(1).inner_text()
    page.locator(".compare").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/compare-phone-tabs.png")
    tabs.nth(1).tap()
    assert page.locator(COLUMN).nth(1).is_visible() and not page.locator(COLUMN).nth(0).is_visible()
    assert tabs.nth(1).get_attribute("aria-selected") == "true"
    page.screenshot(path="/tmp/compare-phone.png")
    assert page.problems == []


def test_side_by_side_each_column_scrolls_in_its_own_box_following_its_stream_until_scrolled_up(page, server):
    login(page, server)
    compare(page, "A long one and a short one", SLOW_MARKDOWN, FAST_MARKDOWN)
    wait_statuses(page, ["streaming", "complete"])
    slow = f"document.querySelector('{COLUMN} .message')"
    # The long reply outgrows its box, and the box follows it to its end.
    poll(
        page,
        f"() => {slow}.scrollHeight - {slow}.clientHeight",
        lambda v: v > 200,
        timeout=30,
        what="overflow",
    )
    gap = f"() => {slow}.scrollHeight - {slow}.scrollTop - {slow}.clientHeight"
    poll(page, gap, lambda v: v < 24, what="the box at its end")
    viewport = page.viewport_size
    assert viewport is not None
    for i in range(2):  # both columns whole in view, heads (Stop, status) included
        box = page.locator(COLUMN).nth(i).bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], box
        assert box["height"] <= 0.65 * viewport["height"] + 1
    page.screenshot(path="/tmp/compare-own-boxes.png")
    # Scrolled up by the reader, the box stays where they put it while the text grows.
    page.locator(COLUMN).nth(0).locator(".message").hover()
    page.mouse.wheel(0, -400)
    poll(page, f"() => {slow}.dataset.follow", lambda v: v == "off", what="following off")
    top = page.evaluate(f"() => {slow}.scrollTop")
    length = page.evaluate(f"() => {slow}.chatsiteText.length")
    poll(page, f"() => {slow}.chatsiteText.length", lambda n: n > length + 40, what="more text")
    assert page.evaluate(f"() => {slow}.scrollTop") == top
    page.keyboard.press("Escape")
    cols = wait_statuses(page, ["stopped", "complete"])
    assert saved(server, cols[0]["reply"]) == (cols[0]["text"], "stopped")
    assert page.problems == []


def test_a_second_tab_shows_every_column_of_a_streaming_compare_even_one_that_ended(page, server):
    login(page, server)
    compare(page, "Two tabs", SLOW_MARKDOWN, FAST_MARKDOWN)
    wait_statuses(page, ["streaming", "complete"])
    url = page.url
    other = page.context.new_page()
    other.problems = []
    other.on("pageerror", lambda exc: other.problems.append(f"pageerror: {exc}"))
    other.goto(url)
    poll(other, f"() => document.querySelectorAll('{COLUMN}').length", lambda n: n == 2, what="2 columns")
    ended = wait_statuses(other, ["streaming", "complete"])[1]
    assert ended["text"] == saved(server, ended["reply"])[0] != ""
    other.click(".compare .compare-stop-all")  # the second tab stops the compare for both
    for tab in (page, other):
        cols = wait_statuses(tab, ["stopped", "complete"])
        assert saved(server, cols[0]["reply"]) == (cols[0]["text"], "stopped")
    assert page.problems == [] and other.problems == []


def test_with_a_single_model_there_is_no_compare_toggle(page, server):
    # The embedded defaults: the bundled offline model and nothing else.
    with browser_server("chatsite-one-model-", {"CHATSITE_LOCAL_MODEL": "bundled"}) as alone:
        login(page, alone)
        expect(page.locator("#model option")).to_have_count(1)
        expect(page.locator("#compare-toggle")).to_be_hidden()
    login(page, server)
    expect(page.locator("#model option")).not_to_have_count(1)
    expect(page.locator("#compare-toggle")).to_be_visible()
