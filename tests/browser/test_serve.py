"""The newcomer's path: `python3 manage.py serve` on a fresh data directory, with
nothing configured, is the production configuration (DEBUG off, collected static
files under hashed names) and the page works in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import ROOT, free_port

from .conftest import FAST_MARKDOWN

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"


@pytest.fixture(scope="module")
def served(fake_upstream):
    data = Path(tempfile.mkdtemp(prefix="chatsite-serve-"))
    port = free_port()
    # Nothing configured: no DEBUG, no key, the embedded database and channel layer.
    unset = {"DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_SECURE_COOKIES", "DATABASE_URL", "REDIS_URL"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        {
            "CHATSITE_NO_BOOTSTRAP": "1",
            "CHATSITE_DATA_DIR": str(data),
            "CHATSITE_LOCAL_MODEL": "off",
            "OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "OPENAI_API_KEY": "sk-serve-test-not-secret",
            "OPENAI_MODELS": FAST_MARKDOWN,
            "CHATSITE_DEFAULT_MODEL": f"openai/{FAST_MARKDOWN}",
        }
    )
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start:\n" + (data / "serve.log").read_text())
            time.sleep(0.1)
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def test_serve_on_a_fresh_machine_runs_the_production_page_and_it_works(browser, served):
    url, data = served
    key_file = data / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not httpx.get(f"{url}/static/chat/main.js").is_error  # collected by serve itself

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status}: {r.url}"))
    try:
        page.goto(f"{url}/accounts/signup/")
        page.fill("#id_username", "newcomer")
        page.fill("#id_password1", "a-long-first-password-42")
        page.fill("#id_password2", "a-long-first-password-42")
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        page.wait_for_selector("body[data-socket=open]", state="attached")
        # The page's modules came under their hashed names.
        scripts = page.eval_on_selector_all("script[type=module]", "els => els.map(e => e.src)")
        hashed = r"/static/chat/main\.[0-9a-f]{12}\.js$"
        assert scripts and all(re.search(hashed, s) for s in scripts), scripts
        page.fill("#prompt", "Hello from a fresh machine")
        page.press("#prompt", "Enter")
        page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=20_000)
        assert page.eval_on_selector(LAST_REPLY, "el => el.chatsiteText")
        assert problems == []
    finally:
        context.close()
