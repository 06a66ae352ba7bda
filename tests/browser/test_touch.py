"""Phones, touch and keyboards: every action on a message and in the conversation
list can be found and used without a mouse, in a real Chromium."""

from __future__ import annotations

import pytest

from .conftest import FAST_MARKDOWN, login
from .test_history import LAST_REPLY, db_conversation, item, poll, send, version_label, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
USER = ".message[data-role=user]"
VERSION_LABEL = f"() => document.querySelector('{LAST_REPLY} .version-label')?.textContent"

#: Where a control is, as a person would find it: shown, opaque, on screen, on top.
REACHABLE = """(el) => {
  el.scrollIntoView({block: 'center'});
  let opacity = 1;
  for (let n = el; n; n = n.parentElement) opacity *= Number(getComputedStyle(n).opacity);
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const top = document.elementFromPoint(x, y);
  return {
    opacity,
    width: r.width,
    height: r.height,
    onScreen: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight,
    onTop: top !== null && (top === el || el.contains(top)),
    hidden: el.hidden || getComputedStyle(el).visibility !== 'visible',
  };
}"""


def assert_reachable(page, selector: str) -> None:
    where = page.eval_on_selector(selector, REACHABLE)
    assert not where["hidden"] and where["opacity"] > 0.9, (selector, where)
    assert where["width"] >= 24 and where["height"] >= 24, (selector, where)
    assert where["onScreen"] and where["onTop"], (selector, where)


@pytest.fixture
def phone(browser, server):
    context = browser.new_context(**PHONE)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    yield page
    context.close()


def regenerated_chat(page, text: str) -> None:
    """A conversation whose reply has two versions (the switcher shows)."""
    send(page, text, FAST_MARKDOWN)
    wait_status(page, "complete")
    page.select_option("#model", value="openai/fake")
    page.click(f"{LAST_REPLY} .regenerate-reply")
    poll(
        page,
        f"() => document.querySelector('{LAST_REPLY} .version-label')?.textContent",
        lambda v: v == "2/2",
        what="the 2/2 switcher",
    )
    wait_status(page, "complete")


def test_on_a_phone_every_message_and_conversation_action_can_be_seen_and_tapped(phone, server):
    page = phone
    login(page, server)
    assert page.evaluate("() => matchMedia('(hover: none)').matches")
    regenerated_chat(page, "Tap my buttons")
    page.screenshot(path="/tmp/chatsite-phone-chat.png")

    for control in (
        f"{USER} .copy-message",
        f"{USER} .edit-message",
        f"{LAST_REPLY} .copy-message",
        f"{LAST_REPLY} .version-prev",
        f"{LAST_REPLY} .regenerate-reply",
    ):
        assert_reachable(page, control)

    page.tap(f"{LAST_REPLY} .copy-message")
    page.wait_for_selector(f"{LAST_REPLY} .copy-message[data-copied]")
    page.tap(f"{LAST_REPLY} .version-prev")
    poll(page, VERSION_LABEL, lambda v: v == "1/2", what="version 1/2")
    assert_reachable(page, f"{LAST_REPLY} .version-next")
    page.tap(f"{USER} .edit-message")
    page.wait_for_selector(f"{USER} .edit-form")
    assert_reachable(page, f"{USER} .edit-cancel")
    page.tap(f"{USER} .edit-cancel")
    page.wait_for_selector(f"{USER} .edit-form", state="detached")

    # The conversation list: behind the menu button, in a drawer.
    conv = page.url.rstrip("/").rsplit("/", 1)[1]
    assert_reachable(page, "#sidebar-toggle")
    page.tap("#sidebar-toggle")
    page.wait_for_selector("body.sidebar-open")
    poll(page, "() => document.getElementById('sidebar').getBoundingClientRect().left", lambda x: x >= 0)
    page.screenshot(path="/tmp/chatsite-phone-sidebar.png")
    menu_button = f"{item(page, conv)} .item-menu-button"
    assert_reachable(page, menu_button)
    page.tap(menu_button)
    page.wait_for_selector(f"{item(page, conv)} .item-menu")
    page.screenshot(path="/tmp/chatsite-phone-menu.png")
    for action in ("rename", "pin", "share", "usage", "archive", "delete"):
        assert_reachable(page, f"{item(page, conv)} [data-action={action}]")

    page.tap(f"{item(page, conv)} [data-action=pin]")
    page.wait_for_selector(f"{item(page, conv)}[data-pinned]")
    assert db_conversation(server, conv)[0][1] == 1

    page.tap(menu_button)
    page.tap(f"{item(page, conv)} [data-action=rename]")
    page.fill(f"{item(page, conv)} .rename-input", "Renamed on a phone")
    page.press(f"{item(page, conv)} .rename-input", "Enter")
    page.wait_for_selector(f"{item(page, conv)} .conversation-link:has-text('Renamed on a phone')")
    assert db_conversation(server, conv)[0][0] == "Renamed on a phone"

    page.tap(menu_button)
    page.tap(f"{item(page, conv)} [data-action=delete]")
    page.wait_for_selector("#confirm-dialog[open]")
    assert_reachable(page, "#confirm-cancel")
    page.tap("#confirm-cancel")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert db_conversation(server, conv)

    page.tap(menu_button)
    page.tap(f"{item(page, conv)} [data-action=archive]")
    page.wait_for_selector(item(page, conv), state="detached")
    assert db_conversation(server, conv)[0][2] == 1
    assert page.problems == []


FOCUSED_OPACITY = """() => { let opacity = 1;
  for (let n = document.activeElement; n; n = n.parentElement) opacity *= Number(getComputedStyle(n).opacity);
  return opacity; }"""


def focused(page) -> dict:
    return page.evaluate(
        """() => { const el = document.activeElement;
                   let opacity = 1;
                   for (let n = el; n; n = n.parentElement) opacity *= Number(getComputedStyle(n).opacity);
                   return {cls: el.className || '', action: el.dataset.action || '', opacity}; }"""
    )


def tab_to(page, css_class: str, limit: int = 120) -> dict:
    """Press Tab until a control with ``css_class`` has the focus; it must be visible then."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        if css_class in now["cls"].split():
            # Shown once focused (after a short fade-in).
            poll(page, FOCUSED_OPACITY, lambda o: o > 0.9, timeout=2, what=f"a visible .{css_class}")
            return now
    raise AssertionError(f"Tab never reached .{css_class}")


def test_the_keyboard_reaches_and_uses_every_action(page, server):
    login(page, server)
    regenerated_chat(page, "Tab to my buttons")
    conv = page.url.rstrip("/").rsplit("/", 1)[1]
    page.mouse.move(0, 0)  # nothing is hovered

    # The conversation menu: Tab to it, Space opens it, Enter picks an action.
    page.focus("#search")
    tab_to(page, "item-menu-button")
    page.keyboard.press("Space")
    page.wait_for_selector(f"{item(page, conv)} .item-menu")
    page.keyboard.press("ArrowDown")
    assert focused(page)["action"] == "pin"
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{item(page, conv)}[data-pinned]")

    # The messages' actions, in reading order.
    page.focus("#help-button")
    tab_to(page, "edit-message")
    tab_to(page, "copy-message")  # the user's message
    tab_to(page, "version-prev")
    page.keyboard.press("Enter")
    poll(page, VERSION_LABEL, lambda v: v == "1/2", what="version 1/2")
    assert version_label(page, LAST_REPLY) == "1/2"
    page.focus("#help-button")
    tab_to(page, "edit-message")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{USER} .edit-form")
    page.keyboard.press("Escape")
    page.wait_for_selector(f"{USER} .edit-form", state="detached")
    assert "edit-message" in focused(page)["cls"]
    assert page.problems == []


def test_on_a_narrow_screen_the_keyboard_opens_the_conversation_drawer_and_uses_it(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        login(page, server)
        regenerated_chat(page, "A drawer for the keyboard")
        conv = page.url.rstrip("/").rsplit("/", 1)[1]

        page.focus("#sidebar-toggle")
        page.keyboard.press("Enter")
        page.wait_for_selector("body.sidebar-open")
        # The focus moved into the drawer, onto the conversation on show.
        assert page.evaluate("() => document.getElementById('sidebar').contains(document.activeElement)")
        assert page.evaluate("() => document.activeElement.getAttribute('aria-current')") == "page"
        tab_to(page, "item-menu-button")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"{item(page, conv)} .item-menu")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")  # Pin
        page.wait_for_selector(f"{item(page, conv)}[data-pinned]")
        assert db_conversation(server, conv)[0][1] == 1

        # Escape closes the drawer and gives the focus back to its button.
        page.focus(f"{item(page, conv)} .conversation-link")
        page.keyboard.press("Escape")
        page.wait_for_selector("body:not(.sidebar-open)")
        assert page.evaluate("() => document.activeElement.id") == "sidebar-toggle"
    finally:
        context.close()
