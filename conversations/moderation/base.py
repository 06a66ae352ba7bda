"""What every moderation backend is: a check of a prompt, and a check of a reply as it streams.

A backend is given its options and nothing else of the app (no Django, no
models): ``conversations/moderation/__init__.py`` builds the backends from
settings, and :mod:`conversations.moderation.screen` runs them on a reply.

Two ways to check a stream, because the two kinds of rule cost differently:

- a :class:`Scanner` (word and regular-expression lists) is synchronous and
  cheap: it sees every piece and releases all but the last ``hold`` characters
  once they are clear, so a match of at most ``hold`` characters is always
  caught before any of it is released;
- :meth:`Moderator.check` (an endpoint) is a call: the screen makes one at a
  time, on what has accumulated, and releases that text when the call clears it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why text was stopped. ``rule`` names the rule for staff (``words:slurs``,
    ``regex:card-number``, ``endpoint:violence``); ``cause`` is ``""`` for a
    match, ``"unavailable"`` when the endpoint failed and the operator chose to
    fail closed."""

    rule: str
    cause: str = ""


class Flagged(Exception):
    """Text matched a rule (raised by a scanner, or by the screen at the end)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.rule)
        self.verdict = verdict


class Scanner:
    """One text stream (a reply's answer, or its reasoning), scanned as it comes."""

    def feed(self, text: str) -> str:
        """Take the next text; return what is clear to release now (it may be
        ``""``). Raises :class:`Flagged` on a match."""
        raise NotImplementedError

    def end(self) -> str:
        """The stream (or this run of it) ended: check what is held as a final
        tail and return it. Raises :class:`Flagged` on a match."""
        raise NotImplementedError


class Moderator:
    """One backend."""

    #: True when the backend checks a stream with calls (:meth:`check`), not a scanner.
    checks_with_calls = False

    async def prompt_check(self, *, text: str) -> Verdict | None:
        """The verdict on a user's message before it is stored or sent upstream (None: clear)."""
        raise NotImplementedError

    def scanner(self, *, hold: int, context: str = "") -> Scanner | None:
        """A scanner for one text stream (None: this backend checks with calls).
        ``context``: the text just before the stream (a continued reply's), for
        word boundaries."""
        return None

    async def check(self, *, text: str) -> Verdict | None:
        """One call on accumulated reply text (backends with ``checks_with_calls``)."""
        return None
