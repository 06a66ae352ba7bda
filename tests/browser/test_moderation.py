"""A moderated reply on the page: the server's words, never the matched word,
the same after a reload; and a moderated message, refused with its words. At
desktop and phone sizes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from .conftest import browser_server, login
from .test_history import LAST_REPLY, api_messages, conversation_id, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = "fake?tokens=60&rate=40"
SAID = "here is a long and ordinary sentence before a badword and then much more"
BEFORE = SAID[: SAID.index("badword")]
STOPPED = "This reply was stopped because it matched a content rule set by the operator."
REFUSED = "This message was not sent: it matches a rule set by the operator of this server."
LISTED = "async () => (await (await fetch('/api/history/')).json()).conversations.length"
SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}


@pytest.fixture(scope="module")
def moderated(fake_upstream, tmp_path_factory):
    rules = tmp_path_factory.mktemp("moderation") / "rules.toml"
    rules.write_text('[words]\nslurs = ["badword"]\n')
    with browser_server(
        "chatsite-moderation-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": MODEL,
            "CHATSITE_DEFAULT_MODEL": f"openai/{MODEL}",
            "CHATSITE_MODERATION_RULES": str(rules),
            "CHATSITE_MODERATION_HOLD_CHARS": "24",
        },
    ) as daphne:
        yield daphne


@pytest.fixture
def saying(fake_upstream):
    """The fake's replies start with SAID (on the server side: no model id on the page carries it)."""
    default = fake_upstream.default
    fake_upstream.default = dataclasses.replace(default, say=SAID)
    yield fake_upstream
    fake_upstream.default = default


def new_page(browser, size: str):
    context = browser.new_context(**SIZES[size])
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    return context, page


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def reply_shown(page) -> dict:
    return page.eval_on_selector(
        LAST_REPLY,
        """el => ({
          text: el.querySelector('.message-body') ? el.querySelector('.message-body').textContent : '',
          badge: el.querySelector('.badge').textContent,
          kind: el.querySelector('.badge').dataset.errorKind,
          error: el.querySelector('.message-error').textContent,
          continueShown: !el.querySelector('.continue-reply').hidden,
          regenerateShown: !el.querySelector('.regenerate-reply').hidden,
        })""",
    )


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_moderated_reply_shows_the_operators_words_and_never_the_matched_word(
    browser, moderated, saying, size
):
    context, page = new_page(browser, size)
    try:
        login(page, moderated)
        send(page, "Tell me a story")
        wait_status(page, "error")
        live = reply_shown(page)
        assert live["error"] == STOPPED and live["kind"] == "moderation"
        assert live["badge"] == "Stopped by a rule"
        # Regenerate, not Continue: the model would write on into what was stopped.
        assert live["regenerateShown"] is True and live["continueShown"] is False
        assert BEFORE.startswith(live["text"].strip())
        stored = api_messages(page, conversation_id(page))[-1]
        assert (stored["error_kind"], stored["error"]) == ("moderation", STOPPED)
        assert BEFORE.startswith(stored["content"]) and "badword" not in stored["content"]
        # Not on the page, not in its data, and the rule is not told to a user who is not staff.
        assert "badword" not in page.content() and "words:slurs" not in page.content()
        page.screenshot(path=f"/tmp/moderation-{size}.png")

        page.reload()
        wait_status(page, "error")
        assert reply_shown(page) == live
        assert "badword" not in page.content()
        assert page.problems == []
    finally:
        context.close()


def test_a_moderated_message_is_refused_with_its_words_and_kept_in_the_composer(browser, moderated):
    context, page = new_page(browser, "desktop")
    try:
        login(page, moderated)
        before = page.evaluate(LISTED)
        send(page, "please say BADWORD")
        page.wait_for_selector("#composer-error:not([hidden])")
        assert page.text_content("#composer-error") == REFUSED
        assert page.input_value("#prompt") == "please say BADWORD"  # given back to edit
        after = page.evaluate(LISTED)
        assert after == before  # nothing stored
        page.screenshot(path="/tmp/moderation-refused.png")
        assert page.problems == []
    finally:
        context.close()
