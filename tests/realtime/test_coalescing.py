"""How often a reply sends a frame: the coalescing window and how it widens under load."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from conversations.realtime.pacing import Sample, Targets, window_next
from conversations.realtime.registry import registry
from tests.conftest import deltas_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]


def _targets(**overrides) -> Targets:
    values = {"base": 0.030, "widest": 0.250, "lag": 0.010, "busy": 0.8} | overrides
    return Targets(**values)


def _sample(*, lag: float = 0.0, busy: float = 0.1, live: int = 200, tokens_per_s: float = 0.0) -> Sample:
    return Sample(lag=lag, busy=busy, live=live, tokens_per_s=tokens_per_s)


def test_one_sample_over_a_target_changes_nothing_but_two_in_a_row_widen_the_window():
    targets = _targets()
    window, streak = window_next(window=0.030, streak=0, sample=_sample(lag=0.040), targets=targets)
    assert (window, streak) == (pytest.approx(0.030), 1)
    window, streak = window_next(window=window, streak=streak, sample=_sample(busy=0.95), targets=targets)
    assert (window, streak) == (pytest.approx(0.030 * 1.25), 2)
    window, streak = window_next(window=window, streak=streak, sample=_sample(lag=0.020), targets=targets)
    assert window == pytest.approx(0.030 * 1.25 * 1.25)


def test_a_calm_loop_narrows_the_window_back_to_the_base_and_no_further():
    targets = _targets()
    calm = _sample(lag=0.001, busy=0.2)
    window, streak = window_next(window=0.100, streak=5, sample=calm, targets=targets)
    assert (window, streak) == (pytest.approx(0.080), 0)
    for _ in range(20):
        window, streak = window_next(window=window, streak=streak, sample=_sample(), targets=targets)
    assert window == pytest.approx(0.030)


def test_a_loop_neither_behind_nor_calm_holds_the_window():
    # lag between half the target and the target, busy under the target
    window, _ = window_next(window=0.060, streak=0, sample=_sample(lag=0.007, busy=0.5), targets=_targets())
    assert window == pytest.approx(0.060)


def test_the_window_never_grows_past_the_widest_nor_three_tokens_of_a_replys_own_pace():
    targets = _targets()
    window, streak = 0.030, 0
    for _ in range(40):
        window, streak = window_next(window=window, streak=streak, sample=_sample(lag=0.5), targets=targets)
    assert window == pytest.approx(0.250)
    # 200 replies reading 4,000 tokens a second: 50 ms between tokens, so at most 150 ms.
    paced = _sample(lag=0.5, live=200, tokens_per_s=4000)
    window, _ = window_next(window=window, streak=streak, sample=paced, targets=targets)
    assert window == pytest.approx(0.150)
    # a fixed window: the widest is the base
    window, _ = window_next(window=0.030, streak=9, sample=_sample(lag=0.5), targets=_targets(widest=0.030))
    assert window == pytest.approx(0.030)


async def _stream(connect, user, model: str) -> list[dict]:
    socket = await connect(user)
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="go", model=model)
    return await socket.recv_until("reply_finished")


async def test_a_loop_kept_busy_widens_the_window_of_live_replies(connect, alice, upstream, settings):
    # 60 tokens at 50 tokens/s: 20 ms between tokens, 1.2 s of streaming.
    model = "openai/fake?tokens=60&rate=50"
    settings.CHATSITE_COALESCE_MS = 10
    settings.CHATSITE_COALESCE_MAX_MS = 1000
    settings.CHATSITE_COALESCE_TARGET_LAG_MS = 2
    settings.CHATSITE_COALESCE_TARGET_BUSY = 0.3
    calm = await _stream(connect, alice, model)

    # Keep the loop busy: 8 ms of CPU in every 16 ms, while the reply streams.
    loop = asyncio.get_running_loop()
    windows: list[float] = []
    hogging = True

    def hog() -> None:
        end = time.thread_time() + 0.008
        while time.thread_time() < end:
            pass
        windows.append(registry.window)
        if hogging:
            loop.call_later(0.008, hog)

    loop.call_soon(hog)
    try:
        busy = await _stream(connect, alice, model)
    finally:
        hogging = False
    calm_deltas = [f for f in calm if f["type"] == "delta"]
    busy_deltas = [f for f in busy if f["type"] == "delta"]
    assert len(calm_deltas) >= 50  # about a frame per token
    assert max(windows) > 0.030  # widened past the base
    assert max(windows) <= 0.080  # about three tokens of its pace (measured each 100 ms)
    assert len(busy_deltas) < 0.8 * len(calm_deltas)
    # Fewer frames, the same text, numbered without gaps.
    assert deltas_text(busy) == upstream.requests[-1].text_sent
    assert deltas_text(calm) == upstream.requests[-2].text_sent
    assert [d["seq"] for d in busy_deltas] == list(range(1, len(busy_deltas) + 1))


async def test_the_window_is_the_base_again_once_nothing_is_live(connect, alice, upstream, settings):
    settings.CHATSITE_COALESCE_MS = 10
    socket = await connect(alice)
    model = "openai/fake?tokens=20&rate=50"
    await socket.send(type="send", client_id=uuid.uuid4().hex, conversation=None, text="go", model=model)
    await socket.recv_until("delta")
    assert not registry.pacer.stopped()  # sampling while the reply is live
    registry.pacer.window = 0.2  # as if a burst had widened it
    await socket.recv_until("reply_finished")
    assert registry.window == pytest.approx(0.010)
    assert registry.pacer.stopped()
