"""A real daphne process and a real headless Chromium (Debian's), via Playwright."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.processes import Daphne

CHROMIUM = "/usr/bin/chromium"
USERNAME, PASSWORD = "walter", "correct-horse-battery-9"
SLOW_MARKDOWN = "fake?text=markdown&tokens=400&rate=25"
FAST_MARKDOWN = "fake?text=markdown&tokens=60&rate=200"
HOSTILE = "fake?text=hostile&tokens=38&rate=200"
MATH = "fake?text=math&tokens=72&rate=40"
# The math reply stopped in the middle of its first display formula.
MATH_STALLED = "fake?text=math&tokens=72&rate=0&fault=stall&after=23"


def pytest_collection_modifyitems(config, items):
    # Locally, no Chromium means the browser tests are skipped; in CI (which
    # installs it) they run, and fail loudly if it is missing.
    if os.path.exists(CHROMIUM) or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(skip)


@contextmanager
def browser_server(prefix: str, env: dict[str, str]) -> Iterator[Daphne]:
    """A daphne on a fresh SQLite database of its own with the test user, for
    tests whose server needs settings of its own (``server`` is one too)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    daphne = Daphne(data_dir, env)
    try:
        daphne.start()
        daphne.create_user(USERNAME, PASSWORD)
        yield daphne
    finally:
        daphne.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server(fake_upstream):
    with browser_server(
        "chatsite-browser-",
        {
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(["fake", SLOW_MARKDOWN, FAST_MARKDOWN, HOSTILE, MATH, MATH_STALLED]),
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            "CHATSITE_CHECKPOINT_INTERVAL": "0.5",
            # Every test here logs in as the same user, and the whole file sends
            # more than the default 20 messages a minute: the limit is not what
            # these tests are about (tests/realtime/test_batching.py checks it).
            "CHATSITE_MAX_MESSAGES_PER_MINUTE": "1000",
        },
    ) as daphne:
        yield daphne


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: sync Playwright keeps an event loop running in
    # this thread while it is open, which would break the async tests after it.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    page.on("dialog", lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    yield page
    context.close()


def login(page, server) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    page.wait_for_selector("body[data-socket=open]", state="attached")
