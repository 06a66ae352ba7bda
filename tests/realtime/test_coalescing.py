"""How often a reply sends a frame: the coalescing window and how it widens under load."""

from __future__ import annotations

import uuid

import pytest

from conversations.realtime.registry import Registry, registry
from tests.conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


def _window_with(settings, live: int) -> float:
    fresh = Registry()
    fresh.by_id = {str(i): object() for i in range(live)}  # type: ignore[misc]
    fresh._update_window()
    return fresh.window


def test_window_is_the_base_until_the_frame_budget_is_reached(settings):
    settings.CHATSITE_COALESCE_MS = 30
    settings.CHATSITE_COALESCE_FRAMES_PER_S = 3300
    settings.CHATSITE_COALESCE_MAX_MS = 250
    assert _window_with(settings, 0) == pytest.approx(0.030)
    assert _window_with(settings, 99) == pytest.approx(0.030)  # 99 / 3300 s = 30 ms
    assert _window_with(settings, 200) == pytest.approx(200 / 3300)
    assert _window_with(settings, 500) == pytest.approx(500 / 3300)
    assert _window_with(settings, 5000) == pytest.approx(0.250)  # capped


def test_no_budget_means_a_fixed_window(settings):
    settings.CHATSITE_COALESCE_MS = 30
    settings.CHATSITE_COALESCE_FRAMES_PER_S = None
    assert _window_with(settings, 10_000) == pytest.approx(0.030)
    settings.CHATSITE_COALESCE_MS = 0
    assert _window_with(settings, 10_000) == 0.0


async def _stream(connect, user, model: str) -> list[dict]:
    socket = await connect(user)
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="go", model=model)
    return await socket.recv_until("reply_finished")


async def test_a_small_frame_budget_widens_the_window_of_live_replies(connect, alice, upstream, settings):
    # 100 tokens at 200 tokens/s: half a second of streaming.
    model = "openai/fake?tokens=100&rate=200"
    settings.CHATSITE_COALESCE_MS = 10
    settings.CHATSITE_COALESCE_FRAMES_PER_S = None
    calm = await _stream(connect, alice, model)
    # One live reply against a budget of 5 frames a second: a 200 ms window.
    settings.CHATSITE_COALESCE_FRAMES_PER_S = 5
    settings.CHATSITE_COALESCE_MAX_MS = 1000
    busy = await _stream(connect, alice, model)
    calm_deltas = [f for f in calm if f["type"] == "delta"]
    busy_deltas = [f for f in busy if f["type"] == "delta"]
    assert len(calm_deltas) >= 20  # about one per 10 ms window
    assert len(busy_deltas) <= 6  # the first token, then about one per 200 ms
    # Fewer frames, the same text, numbered without gaps.
    assert deltas_text(busy) == upstream.requests[-1].text_sent
    assert deltas_text(calm) == upstream.requests[-2].text_sent
    assert [d["seq"] for d in busy_deltas] == list(range(1, len(busy_deltas) + 1))
    assert registry.window == pytest.approx(0.010)  # nothing live any more: back to the base
