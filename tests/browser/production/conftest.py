"""The production stack (tests/production.py) and pages that watch every load.

Runs where DATABASE_URL names a PostgreSQL server (the stack creates its own
database there, and brings its own Redis and nginx): in CI, the second pass
of ``.ci/run``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from conversations.realtime import protocol
from tests.production import NGINX, ProductionStack

from ..conftest import FAST_MARKDOWN, HOSTILE, MATH, PASSWORD, SLOW_MARKDOWN, USERNAME
from ..test_resume import FAST, LONG, STREAM
from ..test_resume import open_page as _open_page

MODELS = ["fake", SLOW_MARKDOWN, FAST_MARKDOWN, HOSTILE, MATH, STREAM, LONG, FAST]

# Sent by the page itself when the browser reports a violation of the page's CSP.
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.chatsiteCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`
    + ` at ${e.sourceFile || '?'}:${e.lineNumber}`);
});
"""


def pytest_collection_modifyitems(config, items):
    reasons = []
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        reasons.append("needs DATABASE_URL=postgres://... (a server to create its database on)")
    if not (os.path.exists(NGINX) and shutil.which("redis-server") and shutil.which("openssl")):
        if not os.environ.get("CI"):  # CI installs them, and fails loudly without them
            reasons.append(f"needs {NGINX}, redis-server and openssl (apt-get install nginx)")
    if not reasons:
        return
    skip = pytest.mark.skip(reason="; ".join(reasons))
    for item in items:
        if "tests/browser/production" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server(fake_upstream):
    """The stack; named like tests/browser's daphne so the shared flows take it."""
    stack = ProductionStack(
        postgres_url=os.environ["DATABASE_URL"],
        settings={
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            "OPENAI_MODELS": ",".join(MODELS),
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
            # The bundled offline model is not part of these tests.
            "CHATSITE_LOCAL_MODEL": "off",
        },
    )
    stack.start()
    try:
        stack.create_user(USERNAME, PASSWORD)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def server_logs_stay_clean(server):
    """Nothing a test does may make a daphne log a traceback or an error, or nginx an error."""
    before = server.logs()
    yield
    assert server.errors_since(before) == []


def watch(page) -> None:
    """Every failed request and error response goes to page.problems (open_page adds
    console errors and uncaught exceptions; the context's init script CSP violations)."""
    if not hasattr(page, "problems"):
        page.problems = []

    def note(problem: str) -> None:
        page.problems.append(problem)  # the list open_page gives the page, looked up now

    page.on("requestfailed", lambda r: note(f"requestfailed: {r.method} {r.url} {r.failure}"))

    def note_failure(response) -> None:
        if response.status >= 400:
            note(f"response {response.status}: {response.request.method} {response.url}")

    page.on("response", note_failure)


@pytest.fixture
def context(browser, server):
    agent = f"Mozilla/5.0 (X11; Linux x86_64) chatsite-test/{uuid.uuid4().hex}"
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        ignore_https_errors=True,
        # Tells this test's requests apart in nginx's log (ProductionStack.served).
        user_agent=agent,
    )
    sockets: list = []
    context.expose_binding(
        "chatsiteCspViolation", lambda source, text: source["page"].problems.append(f"csp: {text}")
    )
    context.add_init_script(CSP_LISTENER)
    # Every page of the context, also those the shared flows open themselves.
    context.on("page", watch)
    context.on("page", lambda page: page.on("websocket", sockets.append))
    yield context
    # A test that failed before its assert_clean: say what went wrong on its pages.
    unchecked = [p for page in context.pages if not getattr(page, "checked", False) for p in page.problems]
    context.close()
    # The next test starts when nginx has closed this one's sockets, so that its
    # least_conn choices (which daphne a socket goes to) depend on that test alone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len([r for r in server.served() if r[1] == protocol.PATH and r[4] == agent]) >= len(sockets):
            break
        time.sleep(0.05)
    assert unchecked == [], "problems on the test's pages"


def open_page(context):
    page = _open_page(context)
    assert page.problems == []
    return page


def on_another_daphne(server):
    """An ``open_second`` for the shared two-tab flows: the tab is opened (again, up to
    a few times) until its socket is on another daphne than every socket the test had
    opened before (the first tab's), so the live reply must cross processes."""
    before = server.websockets_accepted()

    def open_second(context, url):
        first = {port for port, n in server.websockets_accepted().items() if n > before[port]}
        assert first, "the first tab has no socket yet"
        for _ in range(8):
            counts = server.websockets_accepted()
            page = open_page(context)
            page.goto(url)
            page.wait_for_selector("body[data-socket=open]", state="attached")
            deadline = time.monotonic() + 5
            while not (new := {p for p, n in server.websockets_accepted().items() if n > counts[p]}):
                assert time.monotonic() < deadline, "no daphne logged the new tab's socket"
                time.sleep(0.02)
            if not new & first:
                return page
            page.close()
        raise AssertionError(f"nginx never put a second tab on another daphne than {first}")

    return open_second


@pytest.fixture
def page(context):
    return open_page(context)


def assert_clean(*pages, expected: tuple[str, ...] = (), allowed: tuple[str, ...] = ()) -> None:
    """No problem on any load of these pages but the ``expected`` ones (each must have
    happened) and the ``allowed`` ones (which may)."""
    for page in pages:
        page.checked = True
        problems = list(page.problems)
        for wanted in expected:
            matching = [p for p in problems if wanted in p]
            assert matching, f"expected a problem matching {wanted!r}; got {problems}"
            problems = [p for p in problems if wanted not in p]
        assert [p for p in problems if not any(a in p for a in allowed)] == []
