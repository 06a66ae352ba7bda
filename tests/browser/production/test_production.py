"""The production subset of the browser suite, against the stack docs/deploy.md describes:
DEBUG off, collected static files, two daphnes as the systemd unit starts them, PostgreSQL,
Redis, and the real nginx over HTTPS. Each flow is the one the DEBUG suite runs; every page
load must be clean (no failed request, no error response, no console error, no CSP violation).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from conversations.realtime import protocol

from ..test_chat_page import send_stream_stop_and_reload
from ..test_history import export_then_import, search_lands_on_a_deep_message
from ..test_math import math_reply_live_and_from_history
from ..test_resume import reload_mid_stream, second_tab_follows, stop_from_the_other_tab
from ..test_settings import settings_shape_the_next_reply
from .conftest import assert_clean, on_another_daphne

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_production_page_is_served_by_nginx_with_the_deploy_security_headers(page, server):
    response = page.goto(f"{server.url}/accounts/login/")
    assert response.status == 200
    headers = response.headers
    assert headers["server"].startswith("nginx")
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert "script-src 'self'" in headers["content-security-policy"]
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["csrftoken"]["secure"] is True
    # Collected, hashed static files: no DEBUG-mode static serving.
    stylesheet = page.get_attribute("link[rel=stylesheet]", "href")
    assert re.fullmatch(r"/static/chat/style\.[0-9a-f]{12}\.css", stylesheet), stylesheet
    page.screenshot(path="/tmp/chatsite-production-login.png")
    assert_clean(page)
    # Plain HTTP is answered by nginx's redirect to https (to the default port, as the file says).
    plain = httpx.get(f"http://127.0.0.1:{server.http_port}/accounts/login/?next=/")
    assert plain.status_code == 301
    assert plain.headers["location"] == "https://127.0.0.1/accounts/login/?next=/"


def test_production_send_stream_stop_and_reload(page, server, fake_upstream):
    send_stream_stop_and_reload(page, server, fake_upstream)
    sessions = {c["name"]: c for c in page.context.cookies()}
    assert sessions["sessionid"]["secure"] is True and sessions["sessionid"]["httpOnly"] is True
    page.screenshot(path="/tmp/chatsite-production-chat.png")
    assert_clean(page)


def test_production_math_renders_with_the_collected_katex_and_its_fonts(page, server):
    math_reply_live_and_from_history(page, server)
    # KaTeX's module and stylesheet under their hashed names, its fonts found through them.
    hrefs = "els => els.map(e => e.getAttribute('href'))"
    stylesheets = page.eval_on_selector_all("link[rel=stylesheet]", hrefs)
    assert any(re.fullmatch(r"/static/vendor/katex/katex\.min\.[0-9a-f]{12}\.css", s) for s in stylesheets)
    assert_clean(page)


def test_production_reload_mid_reply_reattaches(context, server, fake_upstream):
    reload_mid_stream(context, server, fake_upstream)
    assert_clean(*context.pages)


def test_production_a_second_tab_follows_the_live_reply_from_the_other_process(
    context, server, fake_upstream
):
    second_tab_follows(context, server, fake_upstream, open_second=on_another_daphne(server))
    assert len(context.pages) == 2
    assert_clean(*context.pages)
    # The two tabs' sockets were on the two daphnes (as nginx saw it too): the live
    # reply reached the second one over Redis. (nginx logs a WebSocket when it closes.)
    agent = context.pages[0].evaluate("() => navigator.userAgent")
    for tab in context.pages:
        tab.close()

    def ports():
        return {r[3] for r in server.served() if r[1] == protocol.PATH and r[2] == 101 and r[4] == agent}

    deadline = time.monotonic() + 10
    while ports() != {d.port for d in server.daphnes}:
        assert time.monotonic() < deadline, server.served()
        time.sleep(0.05)


def test_production_stop_from_the_other_tab_closes_the_upstream(context, server, fake_upstream):
    stop_from_the_other_tab(context, server, fake_upstream, open_second=on_another_daphne(server))
    assert_clean(*context.pages)


def test_production_history_search(page, server):
    search_lands_on_a_deep_message(page, server)
    assert_clean(page)


def test_production_export_and_import(page, server, tmp_path):
    export_then_import(page, server, tmp_path)
    # The flow's bad file is refused with a 400 (which the browser may log); nothing else.
    assert_clean(page, expected=(f"response 400: POST {server.url}/import/",), allowed=("status of 400",))


def test_production_settings_dialog(page, server, fake_upstream):
    settings_shape_the_next_reply(page, server, fake_upstream)
    page.screenshot(path="/tmp/chatsite-production-settings.png")
    assert_clean(page)


def test_the_page_watch_reports_csp_violations_failed_requests_and_error_responses(page, server):
    # The checks every test above relies on, shown to fire.
    page.goto(f"{server.url}/accounts/login/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = '1'; document.body.append(s); }"
    )
    page.route("**/healthz", lambda route: route.abort())
    page.evaluate("() => fetch('/healthz').catch(() => null)")
    page.goto(f"{server.url}/no-such-page/")
    problems = page.problems
    assert any(p.startswith("csp: script-src") for p in problems), problems
    assert any(
        p.startswith("requestfailed: GET") and p.endswith("/healthz net::ERR_FAILED") for p in problems
    ), problems
    assert any(p.startswith("response 404: GET") and "/no-such-page/" in p for p in problems), problems
    page.checked = True
