"""Shared links in a real Chromium: the owner shares from the conversation's menu
and copies the link, another user opens it (rendered by the same sanitizer under
the same CSP) and continues it as a copy, the owner revokes it and it answers
404; public links for a logged-out viewer when the setting allows them, a login
otherwise; the "Shared" marker and the list of links; a phone."""

from __future__ import annotations

import re
import secrets

import pytest

from .conftest import FAST_MARKDOWN, HOSTILE, PASSWORD, USERNAME, browser_server, login
from .test_chat_page import _assert_inert
from .test_history import conversation_id, item, open_menu, poll, send, wait_status
from .test_touch import PHONE, assert_reachable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWER, VIEWER_PASSWORD = "rosalind", "another-horse-battery-7"
SHARED_MESSAGES = "#messages .message"


@pytest.fixture(scope="module")
def viewer_account(server):
    server.create_user(VIEWER, VIEWER_PASSWORD)
    return VIEWER, VIEWER_PASSWORD


@pytest.fixture(scope="module")
def public_server(fake_upstream):
    """A second server, whose shared links open without a login."""
    with browser_server(
        "chatsite-public-shares-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(["fake", FAST_MARKDOWN]),
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            "CHATSITE_PUBLIC_SHARES": "on",
        },
    ) as daphne:
        yield daphne


def new_page(browser, **options):
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    return page


def login_as(page, server, username: str, password: str) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")


def share_from_menu(page, conv: str, *, tap: bool = False) -> str:
    """Share…, Create link, from the conversation's menu: the link it made (and copied)."""
    if tap:
        page.tap(f"{item(page, conv)} .item-menu-button")
        page.wait_for_selector(f"{item(page, conv)} .item-menu")
        page.tap(f"{item(page, conv)} .item-menu [data-action=share]")
    else:
        open_menu(page, conv)
        page.click(f"{item(page, conv)} .item-menu [data-action=share]")
    page.wait_for_selector("#share-dialog[open]")
    (page.tap if tap else page.click)("#share-create-button")
    page.wait_for_selector("#share-list .share-row")
    poll(page, "() => document.getElementById('share-status').textContent", lambda t: "Link made" in t)
    return page.input_value("#share-list .share-row .share-url")


def chat_with_hostile_reply(page) -> str:
    send(page, "Show me some markdown", FAST_MARKDOWN)
    wait_status(page, "complete")
    send(page, "Now something nasty", HOSTILE)
    poll(page, "() => document.querySelectorAll('.message[data-role=assistant]').length", lambda n: n == 2)
    wait_status(page, "complete")
    return conversation_id(page)


def test_share_open_as_another_user_continue_as_a_copy_then_revoke(browser, server, viewer_account):
    owner = new_page(browser)
    login(owner, server)
    conv = chat_with_hostile_reply(owner)
    link = share_from_menu(owner, conv)
    assert re.fullmatch(rf"{re.escape(server.url)}/s/[A-Za-z0-9_-]{{32,}}/", link), link
    # Copied for the owner at once, and the conversation is marked in the list.
    assert owner.evaluate("() => navigator.clipboard.readText()") == link
    owner.wait_for_selector(f"{item(owner, conv)}[data-shared] .shared-marker")
    owner.click("#share-list .share-copy")
    poll(owner, "() => document.getElementById('share-status').textContent", lambda t: t == "Link copied.")
    owner.screenshot(path="/tmp/chatsite-share-dialog.png")
    owner.keyboard.press("Escape")
    owner.wait_for_selector("#share-dialog", state="hidden")

    # Another user opens it: the snapshot, through the chat's sanitizer, under the same CSP.
    viewer = new_page(browser)
    foreign: list[str] = []
    viewer.on(
        "request",
        lambda r: r.url.startswith(server.url) or r.url.startswith("data:") or foreign.append(r.url),
    )
    login_as(viewer, server, *viewer_account)
    chat_csp = viewer.goto(f"{server.url}/").headers["content-security-policy"]
    response = viewer.goto(link)
    assert response.status == 200
    assert response.headers["content-security-policy"] == chat_csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-robots-tag"].startswith("noindex")
    viewer.wait_for_selector("body[data-ready=true]")
    assert viewer.locator(SHARED_MESSAGES).count() == 4
    first_reply = "#messages .message[data-role=assistant] >> nth=0"
    assert viewer.inner_text(f"{first_reply} >> h2") == "A fake reply"
    assert viewer.locator("#messages .message-body pre code.hljs").count() >= 1
    hostile = "#messages .message[data-role=assistant]:last-of-type .message-body"
    assert '<script>alert("script")</script>' in viewer.inner_text(hostile)
    _assert_inert(viewer, hostile)
    assert viewer.locator("#messages .regenerate-reply, #messages .edit-message").count() == 0
    assert USERNAME not in viewer.content()  # the owner did not choose to show their name
    viewer.screenshot(path="/tmp/chatsite-share-page.png", full_page=True)
    viewer.wait_for_timeout(300)
    assert foreign == []

    # The owner goes on; the link still shows the snapshot.
    send(owner, "A third question", FAST_MARKDOWN)
    poll(owner, "() => document.querySelectorAll('.message[data-role=assistant]').length", lambda n: n == 3)
    wait_status(owner, "complete")
    viewer.reload()
    viewer.wait_for_selector("body[data-ready=true]")
    assert viewer.locator(SHARED_MESSAGES).count() == 4

    # Continue as a copy: a conversation of the viewer's, open in the chat, that can go on.
    viewer.click("#continue-copy")
    viewer.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    copy = conversation_id(viewer)
    assert copy != conv
    viewer.wait_for_selector("body[data-socket=open]", state="attached")
    assert viewer.locator("#messages .message").count() == 4
    assert viewer.inner_text("#conversation-title") == owner.inner_text("#conversation-title")
    send(viewer, "Carry on from here", FAST_MARKDOWN)
    poll(viewer, "() => document.querySelectorAll('.message[data-role=assistant]').length", lambda n: n == 3)
    wait_status(viewer, "complete")
    assert viewer.locator(f"#conversation-list li[data-id='{copy}']").count() == 1

    # The owner sees the link in their list of links, and revokes it.
    owner.click(".sidebar-tools summary")
    owner.click("#shared-links-button")
    owner.wait_for_selector("#share-dialog[open] #share-list .share-row")
    assert owner.locator("#share-create").is_hidden()
    assert owner.input_value("#share-list .share-url") == link
    owner.click("#share-list .share-revoke")
    owner.wait_for_selector("#confirm-dialog[open]")
    owner.click("#confirm-ok")
    poll(owner, "() => document.getElementById('share-status').textContent", lambda t: "revoked" in t)
    owner.wait_for_selector(f"{item(owner, conv)} .shared-marker", state="detached")

    assert owner.problems == [] and viewer.problems == []
    revoked = viewer.goto(link)
    assert revoked.status == 404
    revoked_body = revoked.body()
    assert "doesn't work" in viewer.inner_text("main")
    never = viewer.goto(f"{server.url}/s/{secrets.token_urlsafe(24)}/")
    assert never.status == 404 and never.body() == revoked_body
    # The two 404s themselves are all the console reports.
    assert owner.problems == [] and all("404" in p for p in viewer.problems), viewer.problems
    owner.context.close()
    viewer.context.close()


def test_a_logged_out_viewer_must_log_in_unless_public_links_are_allowed(browser, server, public_server):
    for where, public in ((server, False), (public_server, True)):
        owner = new_page(browser)
        login(owner, where)
        send(owner, "Hello there", FAST_MARKDOWN)
        wait_status(owner, "complete")
        link = share_from_menu(owner, conversation_id(owner))
        note = owner.inner_text("#share-note")
        expected = "Anyone with the link sees" if public else "Anyone with the link who can log in"
        assert note.startswith(expected)
        owner.context.close()

        anonymous = new_page(browser)
        anonymous.goto(link)
        if not public:
            assert "/accounts/login/?next=/s/" in anonymous.url
            # Logging in lands on the shared page.
            anonymous.fill("#id_username", USERNAME)
            anonymous.fill("#id_password", PASSWORD)
            anonymous.click("button[type=submit]")
            anonymous.wait_for_url(link)
        anonymous.wait_for_selector("body[data-ready=true]")
        assert anonymous.locator(SHARED_MESSAGES).count() == 2
        if public:
            assert anonymous.inner_text(".share-foot") == "Log in to continue this conversation"
            anonymous.click(".share-foot a")
            assert "/accounts/login/?next=/s/" in anonymous.url
        else:
            assert anonymous.locator("#continue-copy").is_visible()
        assert anonymous.problems == []
        anonymous.context.close()


def test_on_a_phone_the_owner_shares_from_the_drawer_and_the_page_reads_well(browser, server, viewer_account):
    owner = new_page(browser, **PHONE)
    login(owner, server)
    send(owner, "Share me from a phone", FAST_MARKDOWN)
    wait_status(owner, "complete")
    conv = conversation_id(owner)
    owner.tap("#sidebar-toggle")
    owner.wait_for_selector("body.sidebar-open")
    poll(owner, "() => document.getElementById('sidebar').getBoundingClientRect().left", lambda x: x >= 0)
    link = share_from_menu(owner, conv, tap=True)
    for control in ("#share-create-button", "#share-list .share-copy", "#share-list .share-revoke"):
        assert_reachable(owner, control)
    owner.screenshot(path="/tmp/chatsite-share-dialog-phone.png")
    owner.tap("#share-list .share-copy")
    poll(owner, "() => document.getElementById('share-status').textContent", lambda t: t == "Link copied.")

    viewer = new_page(browser, **PHONE)
    login_as(viewer, server, *viewer_account)
    viewer.goto(link)
    viewer.wait_for_selector("body[data-ready=true]")
    assert viewer.locator(SHARED_MESSAGES).count() == 2
    # Nothing wider than the screen; the copy button is in reach.
    assert viewer.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    assert_reachable(viewer, "#continue-copy")
    viewer.screenshot(path="/tmp/chatsite-share-page-phone.png", full_page=True)
    assert owner.problems == [] and viewer.problems == []
    owner.context.close()
    viewer.context.close()
