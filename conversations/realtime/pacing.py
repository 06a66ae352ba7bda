"""The coalescing window: how long a live reply may hold tokens before it sends
them in one frame, following the load this process actually has.

A frame costs the server about as much as reading its tokens did, so when the
event loop falls behind, fewer and fuller frames are what lets it catch up;
when it keeps up, a frame per token (within ``CHATSITE_COALESCE_MS``) is what
the user should see. The :class:`Pacer` samples the loop every
:data:`SAMPLE_SECONDS` while replies are live:

* *lag*: how late its own timer ran (what every callback waits on the loop);
* *busy*: the CPU time the loop's thread used over the interval, as a
  fraction of the interval;
* *tokens*: how many pieces the replies read in the interval.

Two samples in a row over a target (lag over ``CHATSITE_COALESCE_TARGET_LAG_MS``
or busy over ``CHATSITE_COALESCE_TARGET_BUSY``) widen the window by a quarter;
a sample well under both (half the lag, three quarters of the busy) narrows it
by a fifth, never below ``CHATSITE_COALESCE_MS``. One spike (a commit holding
the GIL, a garbage collection, a burst of starts) changes nothing. The window
never grows past ``CHATSITE_COALESCE_MAX_MS``, nor past three tokens' worth of
each reply's own pace (the live replies over the tokens read a second): past
that, merging more tokens into a frame saves next to nothing and only makes the
text arrive in bigger lumps. The first token of a reply is never held
(:class:`~conversations.realtime.replies.Reply` sends it at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

#: How often the loop is sampled while replies are live, in seconds.
SAMPLE_SECONDS = 0.1
#: Samples in a row over a target before the window widens.
OVER_STREAK = 2
WIDEN = 1.25
NARROW = 0.8
#: The window holds at most this many tokens' worth of a reply's own pace.
TOKENS_PER_FRAME_MAX = 3.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the loop: its lag and busy fraction over the last interval,
    and what the live replies did in it."""

    lag: float  # seconds late
    busy: float  # CPU seconds of the loop's thread per second
    live: int  # live replies
    tokens_per_s: float  # tokens the live replies read, per second


@dataclass(frozen=True, slots=True)
class Targets:
    base: float  # seconds: the calm window
    widest: float  # seconds
    lag: float  # seconds
    busy: float  # fraction of a core

    @classmethod
    def from_settings(cls) -> Targets:
        base = max(0.0, (settings.CHATSITE_COALESCE_MS or 0) / 1000.0)
        return cls(
            base=base,
            widest=max(base, (settings.CHATSITE_COALESCE_MAX_MS or 0) / 1000.0),
            lag=(settings.CHATSITE_COALESCE_TARGET_LAG_MS or 0) / 1000.0,
            busy=settings.CHATSITE_COALESCE_TARGET_BUSY or 0.0,
        )


def window_next(*, window: float, streak: int, sample: Sample, targets: Targets) -> tuple[float, int]:
    """The window after ``sample``, and the new count of samples over a target in a row."""
    over = sample.lag > targets.lag or sample.busy > targets.busy
    streak = streak + 1 if over else 0
    calm = sample.lag < targets.lag / 2 and sample.busy < targets.busy * 0.75
    if streak >= OVER_STREAK:
        window = max(window, targets.base, 0.005) * WIDEN
    elif calm:
        window *= NARROW
    cap = targets.widest
    if sample.tokens_per_s > 0 and sample.live:
        # Each reply's mean gap between tokens is live / tokens_per_s.
        cap = min(cap, max(targets.base, TOKENS_PER_FRAME_MAX * sample.live / sample.tokens_per_s))
    return min(cap, max(targets.base, window)), streak


class Pacer:
    """This process's coalescing window (:attr:`window`), sampled on its event
    loop while ``live()`` is above zero; the base window when nothing is live."""

    def __init__(self, *, live: Callable[[], int], pieces: Callable[[], int]) -> None:
        self._live = live
        self._pieces = pieces  # every piece read so far (never decreases)
        self.window = Targets.from_settings().base
        self._pieces_at = 0
        self._streak = 0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._at = 0.0
        self._cpu = 0.0

    def ensure_running(self) -> None:
        """Start sampling on the running loop (a reply became live)."""
        loop = asyncio.get_running_loop()
        if self._handle is not None and self._loop is loop:
            return
        if self._handle is not None:  # a timer of an earlier loop (tests run one per test)
            self._handle.cancel()
        self._loop = loop
        self.window = Targets.from_settings().base
        self._streak = 0
        self._pieces_at = self._pieces()
        self._at, self._cpu = time.monotonic(), time.thread_time()
        self._schedule(self._at)

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + SAMPLE_SECONDS
        # asyncio's loop clock is time.monotonic().
        self._handle = self._loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        now, cpu, pieces = time.monotonic(), time.thread_time(), self._pieces()
        elapsed = max(now - self._at, 1e-6)
        sample = Sample(
            lag=max(0.0, now - self._due),
            busy=(cpu - self._cpu) / elapsed,
            live=self._live(),
            tokens_per_s=max(0, pieces - self._pieces_at) / elapsed,
        )
        self._at, self._cpu, self._pieces_at = now, cpu, pieces
        targets = Targets.from_settings()
        if not sample.live:
            self.window, self._streak, self._handle = targets.base, 0, None
            return
        self.window, self._streak = window_next(
            window=self.window, streak=self._streak, sample=sample, targets=targets
        )
        self._schedule(now)

    def stopped(self) -> bool:
        return self._handle is None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self.window = Targets.from_settings().base
