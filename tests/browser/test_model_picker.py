"""The model picker with the ids servers list (paths), and with a provider that is down."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.processes import Daphne

from .conftest import USERNAME, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PATH_ID = "/srv/models/x.gguf"
LAST_REPLY = ".message[data-role=assistant]:last-of-type"


def _daphne(base_url: str):
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-picker-"))
    daphne = Daphne(
        data_dir,
        {
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-browser-test-not-secret",
            # Listed first, as a llama.cpp server lists its model; no default model set.
            "OPENAI_MODELS": PATH_ID,
            "CHATSITE_DEFAULT_MODEL": "",
        },
    )
    daphne.start()
    daphne.create_user(USERNAME, "correct-horse-battery-9")
    return daphne, data_dir


@pytest.fixture
def path_server(fake_upstream):
    daphne, data_dir = _daphne(fake_upstream.openai_base_url)
    yield daphne
    daphne.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def down_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    daphne, data_dir = _daphne(f"http://127.0.0.1:{port}/v1")
    yield daphne
    daphne.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_the_picker_defaults_to_a_path_shaped_id_and_a_send_with_it_completes(
    page, path_server, fake_upstream
):
    login(page, path_server)
    assert page.input_value("#model") == f"openai/{PATH_ID}"
    before = len(fake_upstream.requests)
    page.fill("#prompt", "Hello, path-shaped model")
    page.press("#prompt", "Enter")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")

    chats = [r for r in fake_upstream.requests[before:] if r.path == "/v1/chat/completions"]
    assert [r.body["model"] for r in chats] == [PATH_ID]
    ((model, content),) = path_server.query(
        "select model, content from conversations_message where role='assistant'"
    )
    assert model == PATH_ID and content == chats[0].text_sent
    assert page.is_hidden("#composer-error")
    assert page.problems == []


def test_a_model_of_an_unreachable_provider_is_marked_with_since_when_and_send_stays_enabled(
    page, down_server
):
    login(page, down_server)
    option = page.locator(f'#model option[value="openai/{PATH_ID}"]')
    # The first listing fails in the background; the picker asks /api/models/ again.
    page.wait_for_selector(
        f'#model option[value="openai/{PATH_ID}"][data-unreachable=true]', state="attached"
    )
    assert "unreachable since" in option.inner_text()
    assert page.get_attribute("#model", "data-unreachable") == "true"
    assert "unreachable since" in page.text_content("#model-hint")
    page.fill("#prompt", "Anyone there?")
    assert page.is_enabled("#send")
    assert page.is_enabled("#model")
    assert page.problems == []
