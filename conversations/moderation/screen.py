"""A reply's moderation: the backends run on its text before any of it is released.

The reply hands every piece to :meth:`Screen.feed` (answer or reasoning) and
takes back cleared text through ``release(text, reasoning)``, in order. Text
goes through the scanners first (each kind its own, so a word never spans the
end of the reasoning and the start of the answer), then, with an endpoint,
waits for a call to clear it: calls are made one at a time on everything that
has accumulated, so at most one call's worth of text is held beyond the
scanners' window. A match raises :class:`Flagged` from ``feed`` (a scanner) or
calls ``stop(verdict)`` (a call, from its task); what was held is never
released. At the end, :meth:`drain` checks the tails and waits for the last call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conversations.moderation.base import Flagged, Moderator, Scanner, Verdict

#: Text released before the text a call checks, sent along with it.
CALL_CONTEXT_CHARS = 500


class Screen:
    def __init__(
        self,
        *,
        moderators: list[Moderator],
        hold: int,
        release: Callable[[str, bool], object],
        stop: Callable[[Verdict], object],
        context: str = "",
        reasoning_context: str = "",
    ) -> None:
        self._release = release
        self._stop = stop
        scanning = [m for m in moderators if not m.checks_with_calls]
        self._answer: list[Scanner] = [s for m in scanning if (s := m.scanner(hold=hold, context=context))]
        self._reasoning: list[Scanner] = [
            s for m in scanning if (s := m.scanner(hold=hold, context=reasoning_context))
        ]
        self._caller = next((m for m in moderators if m.checks_with_calls), None)
        self._kind: bool | None = None  # the kind of the last piece: True for reasoning
        self._unchecked: list[tuple[str, bool]] = []
        self._checked_tail = context[-CALL_CONTEXT_CHARS:]
        self._call: asyncio.Task[None] | None = None
        self._draining = False
        self.verdict: Verdict | None = None

    # --- the stream --------------------------------------------------------------
    def feed(self, text: str, reasoning: bool) -> None:
        """The next piece of the reply. Raises :class:`Flagged` on a scanner's match."""
        if reasoning is not self._kind:
            if self._kind is not None:
                self._end_run(self._kind)
            self._kind = reasoning
        for scanner in self._reasoning if reasoning else self._answer:
            text = scanner.feed(text)
            if not text:
                return
        self._pass(text, reasoning)

    def marker(self, piece: str, reasoning: bool) -> None:
        """A piece with no text to check (redacted reasoning): it ends the run of
        its kind and goes on in order."""
        if self._kind is not None:
            self._end_run(self._kind)
        self._kind = None
        self._pass(piece, reasoning)

    def _end_run(self, reasoning: bool) -> None:
        scanners = self._reasoning if reasoning else self._answer
        tail = ""
        for i, scanner in enumerate(scanners):
            # What an earlier scanner releases last is the next one's input, then its end.
            tail = scanner.feed(tail) + scanner.end() if i else scanner.end()
        if tail:
            self._pass(tail, reasoning)

    def _pass(self, text: str, reasoning: bool) -> None:
        if self._caller is None:
            self._release(text, reasoning)
            return
        self._unchecked.append((text, reasoning))
        if self._call is None and self.verdict is None:
            self._call = asyncio.ensure_future(self._calls())

    async def _calls(self) -> None:
        assert self._caller is not None
        try:
            while self._unchecked and self.verdict is None:
                batch, self._unchecked = self._unchecked, []
                text = "".join(t for t, _ in batch)
                verdict = await self._caller.check(text=self._checked_tail + text) if text.strip() else None
                if verdict is not None:
                    self.verdict = verdict
                    if not self._draining:
                        self._stop(verdict)
                    return
                self._checked_tail = (self._checked_tail + text)[-CALL_CONTEXT_CHARS:]
                for piece, reasoning in batch:
                    self._release(piece, reasoning)
        finally:
            self._call = None

    # --- the end -------------------------------------------------------------------
    async def drain(self) -> None:
        """The stream ended: check what is held, release it, and wait for the
        last call. Raises :class:`Flagged` on a match."""
        if self.verdict is not None:
            raise Flagged(self.verdict)
        if self._kind is not None:
            self._end_run(self._kind)  # the other kind's run ended when this one began
        self._kind = None
        if self._caller is None:
            return
        self._draining = True
        call = self._call
        if call is not None:
            await asyncio.shield(call)
        if self.verdict is not None:
            raise Flagged(self.verdict)

    def end_runs(self) -> None:
        """End the run of text now (the upstream broke): the scanners' held tail
        is checked and passed on. Raises :class:`Flagged` on a match."""
        if self._kind is not None:
            self._end_run(self._kind)
        self._kind = None

    def close(self) -> None:
        """The reply ended: drop what is held, and stop a call in flight."""
        call, self._call = self._call, None
        self._unchecked = []
        if call is not None and not call.done():
            call.cancel()
