"""A moderation backend for tests that checks with calls, in process: it
flags a text holding one of its words, records every call, and can be made to
wait until a test lets a call answer."""

from __future__ import annotations

import asyncio

from conversations.moderation.base import Moderator, Verdict


class CallingModerator(Moderator):
    checks_with_calls = True

    def __init__(self, *, flag: tuple[str, ...] = ()) -> None:
        self.flag = flag
        self.calls: list[str] = []
        #: Cleared: calls wait until a test sets it.
        self.answer = asyncio.Event()
        self.answer.set()

    async def check(self, *, text: str) -> Verdict | None:
        self.calls.append(text)
        await self.answer.wait()
        hit = next((word for word in self.flag if word in text), None)
        return Verdict(f"endpoint:{hit}") if hit else None

    async def prompt_check(self, *, text: str) -> Verdict | None:
        return await self.check(text=text)
