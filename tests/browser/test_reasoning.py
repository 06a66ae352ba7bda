"""Reasoning in a real browser: "Thinking…" while the model thinks, "Thought for
N s" afterwards, expandable, apart from the answer, live and from history, in
each of the three dialects (against the fake upstream)."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import browser_server, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"
# The model thinks for about 1.5 s (30 reasoning tokens at 20 a second), then answers.
THINK = "thoughts=30&rate=20&tokens=12"
MODELS = {
    "reasoning_content": f"openai/fake?reasoning=reasoning_content&{THINK}",
    "reasoning": f"openai/fake?reasoning=reasoning&{THINK}",
    "think": f"openai/fake?reasoning=think&{THINK}",
    "anthropic": f"anthropic/fake?reasoning=thinking&{THINK}",
}
REDACTED = "anthropic/fake?reasoning=redacted&tokens=12&rate=20"
LONG_THOUGHT = "openai/fake?reasoning=reasoning_content&thoughts=2000&rate=20&tokens=5"
THOUGHTS = "".join(f"t{i} " for i in range(30)).strip()


@pytest.fixture(scope="module")
def reasoning_server(fake_upstream):
    openai = [m.removeprefix("openai/") for m in [*MODELS.values(), LONG_THOUGHT] if m.startswith("openai/")]
    anthropic = [
        m.removeprefix("anthropic/") for m in [*MODELS.values(), REDACTED] if m.startswith("anthropic/")
    ]
    with browser_server(
        "chatsite-reasoning-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(openai),
            "ANTHROPIC_BASE_URL": fake_upstream.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-browser-test-not-secret",
            "ANTHROPIC_MODELS": ",".join(anthropic),
            "ANTHROPIC_THINKING_BUDGET": "2048",
            "CHATSITE_DEFAULT_MODEL": MODELS["reasoning_content"],
            "CHATSITE_CHECKPOINT_INTERVAL": "0.3",
        },
    ) as daphne:
        yield daphne


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=model)
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def reasoning_state(page) -> dict:
    return page.eval_on_selector(
        LAST_REPLY,
        """el => {
            const d = el.querySelector('.reasoning');
            return {
                hidden: d.hidden,
                open: d.open,
                state: d.dataset.state || null,
                label: d.querySelector('.reasoning-summary').textContent,
                text: d.querySelector('.reasoning-body').textContent.trim(),
                redacted: d.querySelector('.reasoning-redacted').hidden ? null
                    : d.querySelector('.reasoning-redacted').textContent,
                answer: el.chatsiteText,
                body: el.querySelector('.message-body').textContent,
                metrics: el.querySelector('.metrics').textContent,
                status: el.dataset.status,
            };
        }""",
    )


def wait_until(page, check, what: str, timeout: float = 15.0):
    # Polled from here: Playwright's wait_for_function evaluates strings, which the CSP forbids.
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        page.wait_for_timeout(50)


def check_finished(page, answer: str) -> dict:
    seen = reasoning_state(page)
    assert seen["hidden"] is False and seen["open"] is False  # collapsed, there
    assert re.fullmatch(r"Thought for [0-9.]+ s", seen["label"]), seen["label"]
    assert seen["answer"] == answer
    assert "t0" not in seen["body"] and "<think>" not in seen["body"]
    assert "to first answer token" in seen["metrics"]
    # Expandable: the reasoning itself, rendered apart from the answer.
    page.click(f"{LAST_REPLY} .reasoning-summary")
    assert page.eval_on_selector(f"{LAST_REPLY} .reasoning", "d => d.open") is True
    seen = reasoning_state(page)
    assert seen["text"] == THOUGHTS
    assert page.is_visible(f"{LAST_REPLY} .reasoning-body")
    return seen


@pytest.mark.parametrize("dialect", list(MODELS))
def test_reasoning_streams_in_its_own_place_live_and_from_history(
    page, reasoning_server, fake_upstream, dialect
):
    login(page, reasoning_server)
    before = len(fake_upstream.requests)
    send(page, "Think first, then answer", MODELS[dialect])
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    # Thinking: the block says so, with a live timer, collapsed; no answer yet.
    live = wait_until(
        page,
        lambda: (s := reasoning_state(page))["state"] == "thinking" and s["text"] and s,
        "thinking shown",
    )
    assert live["label"].startswith("Thinking…") and live["open"] is False and live["answer"] == ""
    timer = page.inner_text(f"{LAST_REPLY} .reasoning-timer")
    assert re.fullmatch(r"[0-9.]+ s", timer), timer
    # Screen readers are told politely.
    assert page.get_attribute("#announcer", "aria-live") == "polite"
    wait_until(page, lambda: page.inner_text("#announcer") == "Thinking", "the thinking announced")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    record = fake_upstream.requests[before]
    assert record.reasoning_sent.strip() == THOUGHTS
    check_finished(page, record.text_sent)
    assert page.problems == []

    # From history: the same, from what was saved.
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    check_finished(page, record.text_sent)
    assert page.problems == []


def test_a_stop_while_thinking_keeps_the_thinking(page, reasoning_server, fake_upstream):
    login(page, reasoning_server)
    send(page, "Think for a long time", LONG_THOUGHT)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    wait_until(page, lambda: len(reasoning_state(page)["text"]) > 40, "some thinking")
    page.click("#stop")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    seen = reasoning_state(page)
    assert seen["answer"] == "" and seen["state"] == "done"
    assert re.fullmatch(r"Thought for [0-9.]+ s", seen["label"]), seen["label"]
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    page.click(f"{LAST_REPLY} .reasoning-summary")
    assert reasoning_state(page)["text"] == seen["text"]  # saved == seen
    assert page.problems == []


def test_a_reload_while_thinking_picks_the_thinking_up_where_it_was(page, reasoning_server, fake_upstream):
    login(page, reasoning_server)
    send(page, "Think for a long time", LONG_THOUGHT)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    wait_until(page, lambda: len(reasoning_state(page)["text"]) > 40, "some thinking")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    wait_until(page, lambda: reasoning_state(page)["state"] == "thinking", "thinking after the reload")
    before = reasoning_state(page)["text"]
    wait_until(page, lambda: len(reasoning_state(page)["text"]) > len(before) + 20, "more thinking")
    page.click("#stop")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    seen = reasoning_state(page)["text"]
    tokens = seen.split()
    assert tokens == [f"t{i}" for i in range(len(tokens))]  # every piece once, in order
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    assert reasoning_state(page)["text"] == seen
    assert page.problems == []


def test_redacted_thinking_is_shown_as_hidden_by_the_provider(page, reasoning_server, fake_upstream):
    login(page, reasoning_server)
    send(page, "Think in secret", REDACTED)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    for _ in range(2):  # live, then from history
        page.click(f"{LAST_REPLY} .reasoning-summary")
        seen = reasoning_state(page)
        assert seen["hidden"] is False
        assert seen["redacted"] == "The reasoning was hidden by the provider."
        assert seen["answer"] == "".join(f"w{i} " for i in range(12))
        page.reload()
        page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    assert page.problems == []


def test_the_settings_dialog_turns_a_conversations_thinking_off_and_on(page, reasoning_server, fake_upstream):
    login(page, reasoning_server)
    send(page, "Think first", MODELS["anthropic"])
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    assert reasoning_state(page)["hidden"] is False  # the model's default: thinking on
    page.click("#settings-button")
    assert page.input_value("#settings-thinking-budget") == ""
    page.fill("#settings-thinking-budget", "0")
    page.click("#settings-save")
    page.wait_for_selector("#settings-dialog", state="hidden")
    before = len(fake_upstream.requests)
    page.fill("#prompt", "Now without thinking")
    page.press("#prompt", "Enter")
    wait_until(page, lambda: page.locator(".message[data-role=assistant]").count() == 2, "a second reply")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    assert "thinking" not in fake_upstream.requests[before].body
    assert reasoning_state(page)["hidden"] is True
    page.reload()
    page.click("#settings-button")
    assert page.input_value("#settings-thinking-budget") == "0"
    assert page.problems == []


def test_screenshots_of_reasoning(page, browser, reasoning_server, fake_upstream):
    login(page, reasoning_server)
    send(page, "Think first, then answer", MODELS["think"])
    page.wait_for_selector(f"{LAST_REPLY}[data-status=streaming]")
    wait_until(page, lambda: reasoning_state(page)["state"] == "thinking", "thinking shown")
    page.screenshot(path=str(Path(tempfile.gettempdir()) / "reasoning-thinking.png"))
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    page.click(f"{LAST_REPLY} .reasoning-summary")
    page.screenshot(path=str(Path(tempfile.gettempdir()) / "reasoning-desktop.png"))
    cookies = page.context.storage_state()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=cookies)
    small = phone.new_page()
    small.goto(page.url)
    small.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    small.click(f"{LAST_REPLY} .reasoning-summary")
    small.screenshot(path=str(Path(tempfile.gettempdir()) / "reasoning-phone.png"))
    phone.close()
