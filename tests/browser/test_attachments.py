"""Images and files in the composer, in a real Chromium against a real daphne and the fake upstream."""

from __future__ import annotations

import base64
import time

import pytest

from tests import files

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VISION = "openai/fake-vision"
TEXT_ONLY = "openai/fake"
LAST_REPLY = ".message[data-role=assistant]:last-of-type"
USERS = ".message[data-role=user]"


def poll(page, script: str, check, timeout: float = 15.0, what: str = "the condition"):
    # Polled from here: Playwright's wait_for_function evaluates strings, which the CSP forbids.
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script)
        if check(value):
            return value
        assert time.monotonic() < deadline, f"{what} never held (last: {value!r})"
        page.wait_for_timeout(50)


def pick(page, model: str) -> None:
    page.wait_for_selector(f'#model option[value="{model}"]', state="attached")
    page.select_option("#model", value=model)


def wait_ready(page, count: int) -> None:
    poll(
        page,
        "() => document.querySelectorAll('#attachment-tray .tray-item[data-status=ready]').length",
        lambda n: n == count,
        what=f"{count} uploaded chips",
    )


def wait_complete(page) -> None:
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")


def thumbnails_loaded(page, selector: str = USERS) -> list[int]:
    """The natural widths of the images in the last element matching ``selector``, once
    each has loaded (0: it failed)."""
    return poll(
        page,
        f"() => [...([...document.querySelectorAll('{selector}')].at(-1)?.querySelectorAll('img') || [])]"
        ".map(i => i.complete ? i.naturalWidth : -1)",
        lambda widths: widths and all(w >= 0 for w in widths),
        what="the thumbnails to load",
    )


def requests_since(fake, before: int) -> list:
    return [r for r in fake.requests[before:] if r.path == "/v1/chat/completions"]


def test_an_image_and_a_pdf_by_the_button_reach_the_vision_model_and_survive_a_reload(
    page, server, fake_upstream, tmp_path
):
    login(page, server)
    pick(page, VISION)
    image = tmp_path / "chart.png"
    image.write_bytes(files.png(64, 48))
    report = tmp_path / "report.pdf"
    report.write_bytes(files.pdf("Quarterly numbers are up"))
    before = len(fake_upstream.requests)

    page.set_input_files("#attach-input", [str(image), str(report)])
    wait_ready(page, 2)
    assert page.locator("#attachment-tray .image-chip img").count() == 1
    assert "report.pdf" in page.inner_text("#attachment-tray .file-chip")
    page.fill("#prompt", "What do these say?")
    page.press("#prompt", "Enter")
    wait_complete(page)

    (record,) = requests_since(fake_upstream, before)
    assert [media for media, _ in record.images] == ["image/png"]
    user = record.body["messages"][-1]
    text = next(p["text"] for p in user["content"] if p["type"] == "text")
    assert "Quarterly numbers are up" in text and "report.pdf" in text and "What do these say?" in text
    assert page.is_hidden("#attachment-tray")
    assert thumbnails_loaded(page) == [64]
    assert "report.pdf" in page.locator(USERS).last.locator(".file-chip").inner_text()

    page.reload()
    wait_complete(page)
    assert thumbnails_loaded(page) == [64]
    assert "report.pdf" in page.locator(USERS).last.locator(".file-chip").inner_text()
    assert page.locator(USERS).last.locator(".message-body").inner_text().strip() == "What do these say?"
    assert page.problems == []


PASTE = """([name, b64, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const event = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
  document.querySelector('#prompt').dispatchEvent(event);
}"""

DROP = """([name, b64, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const zone = document.querySelector('#scroller');
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


def test_a_pasted_image_and_a_dropped_text_file_are_attached_and_sent(page, server, fake_upstream):
    login(page, server)
    pick(page, VISION)
    before = len(fake_upstream.requests)

    page.evaluate(PASTE, ["", base64.b64encode(files.png(20, 10)).decode(), "image/png"])
    wait_ready(page, 1)
    page.evaluate(
        DROP, ["notes.md", base64.b64encode(b"# Notes\n\nThe launch is on Friday.").decode(), "text/markdown"]
    )
    wait_ready(page, 2)
    assert "notes.md" in page.inner_text("#attachment-tray .file-chip")
    page.fill("#prompt", "Summarize")
    page.press("#prompt", "Enter")
    wait_complete(page)

    (record,) = requests_since(fake_upstream, before)
    assert [media for media, _ in record.images] == ["image/png"]
    parts = record.body["messages"][-1]["content"]
    assert "The launch is on Friday." in parts[0]["text"]
    assert thumbnails_loaded(page) == [20]
    assert page.problems == []


def test_an_image_for_a_text_only_model_is_refused_before_any_upstream_call(
    page, server, fake_upstream, tmp_path
):
    login(page, server)
    pick(page, TEXT_ONLY)
    image = tmp_path / "photo.png"
    image.write_bytes(files.png())
    before = len(fake_upstream.requests)

    page.set_input_files("#attach-input", str(image))
    wait_ready(page, 1)
    page.wait_for_selector("#attach-note:not([hidden])")
    assert "cannot see images" in page.inner_text("#attach-note")
    page.fill("#prompt", "Describe this")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#composer-error:not([hidden])")
    assert "cannot see images" in page.inner_text("#composer-error")
    # The page itself held it back; the server refuses it too (tests/test_attachments.py).
    assert page.locator(".message[data-role=user]").count() == 0
    assert page.input_value("#prompt") == "Describe this"
    assert page.locator("#attachment-tray .tray-item").count() == 1
    assert requests_since(fake_upstream, before) == []

    # A model that sees images: the note goes, and the same message goes out.
    pick(page, VISION)
    page.wait_for_selector("#attach-note", state="hidden")
    page.press("#prompt", "Enter")
    wait_complete(page)
    (record,) = requests_since(fake_upstream, before)
    assert len(record.images) == 1


def test_the_server_refusal_of_an_image_restores_the_message_and_its_files(
    page, server, fake_upstream, tmp_path
):
    """The page thinks the model sees images (an old list); the server says no, before any upstream call."""
    login(page, server)
    pick(page, TEXT_ONLY)
    page.evaluate("() => { window.chatsite.state.models.find(m => m.id === 'openai/fake').vision = true; }")
    image = tmp_path / "photo.png"
    image.write_bytes(files.png())
    before = len(fake_upstream.requests)
    page.set_input_files("#attach-input", str(image))
    wait_ready(page, 1)
    page.fill("#prompt", "Describe this")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message[data-role=user][data-status=failed]")
    assert "cannot see images" in page.inner_text("#composer-error")
    assert page.input_value("#prompt") == "Describe this"
    assert page.locator("#attachment-tray .tray-item[data-status=ready]").count() == 1
    assert requests_since(fake_upstream, before) == []


def test_regenerate_and_edit_keep_the_attachments(page, server, fake_upstream, tmp_path):
    login(page, server)
    pick(page, VISION)
    image = tmp_path / "diagram.png"
    image.write_bytes(files.png(30, 30))
    notes = tmp_path / "data.csv"
    notes.write_text("name,score\nada,10\n")
    before = len(fake_upstream.requests)
    page.set_input_files("#attach-input", [str(image), str(notes)])
    wait_ready(page, 2)
    page.fill("#prompt", "First question")
    page.press("#prompt", "Enter")
    wait_complete(page)

    page.click(f"{LAST_REPLY} .regenerate-reply")
    poll(
        page,
        f"() => document.querySelector('{LAST_REPLY} .version-label')?.textContent",
        lambda v: v == "2/2",
        what="the regenerated reply's 2/2",
    )
    wait_complete(page)
    first, regenerated = requests_since(fake_upstream, before)
    assert regenerated.images == first.images and len(first.images) == 1
    assert "ada,10" in regenerated.body["messages"][-1]["content"][0]["text"]

    page.locator(USERS).last.locator(".edit-message").click()
    assert page.locator(".edit-form .image-chip").count() == 1
    assert page.locator(".edit-form .file-chip").count() == 1
    page.fill(".edit-area", "The edited question")
    page.click(".edit-save")
    poll(
        page,
        "() => document.querySelector('.message[data-role=user] .version-label')?.textContent",
        lambda v: v == "2/2",
        what="the edited message's 2/2",
    )
    wait_complete(page)
    edited = requests_since(fake_upstream, before)[2]
    assert edited.images == first.images
    last_text = edited.body["messages"][-1]["content"][0]["text"]
    assert "ada,10" in last_text and "The edited question" in last_text
    assert thumbnails_loaded(page) == [30]

    page.reload()
    wait_complete(page)
    assert thumbnails_loaded(page) == [30]
    assert "data.csv" in page.locator(USERS).last.locator(".file-chip").inner_text()
    assert page.problems == []


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_screenshot_of_the_composer_with_files(page, server, tmp_path, viewport):
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    login(page, server)
    pick(page, VISION)
    image = tmp_path / "chart.png"
    image.write_bytes(files.png(120, 80, (40, 140, 90)))
    report = tmp_path / "quarterly-report.pdf"
    report.write_bytes(files.pdf())
    page.set_input_files("#attach-input", [str(image), str(report)])
    wait_ready(page, 2)
    page.fill("#prompt", "What do these say?")
    page.press("#prompt", "Enter")
    wait_complete(page)
    page.set_input_files("#attach-input", [str(image), str(report)])
    wait_ready(page, 2)
    thumbnails_loaded(page)
    page.screenshot(path=f"/tmp/attachments-{viewport[0]}.png")
