"""Waiting on a condition, not on the clock."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    probe: Callable[[], Any | Awaitable[Any]], *, what: str, timeout: float = 10.0, every: float = 0.02
) -> Any:
    """Ask ``probe()`` (a function or a coroutine function) until it gives
    something true, and return that; fail, naming ``what`` was waited for, if
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        await asyncio.sleep(every)
