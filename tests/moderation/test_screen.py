"""A reply's screen: the order and kinds of what it releases, and how calls
clear, hold and stop text."""

from __future__ import annotations

import asyncio

import pytest

from conversations.moderation.base import Flagged, Verdict
from conversations.moderation.rules import RulesModerator, rules_parse
from conversations.moderation.screen import Screen
from conversations.testing.moderation import CallingModerator

WORDS = RulesModerator(rules=rules_parse(data={"words": {"w": ["badword"]}}, where="test"))


class Out:
    def __init__(self) -> None:
        self.released: list[tuple[str, bool]] = []
        self.stopped: list[Verdict] = []

    def release(self, text: str, reasoning: bool) -> None:
        self.released.append((text, reasoning))

    def stop(self, verdict: Verdict) -> None:
        self.stopped.append(verdict)

    def text(self, reasoning: bool = False) -> str:
        return "".join(t for t, r in self.released if r is reasoning)


def screen(out: Out, *moderators, hold: int = 8, context: str = "") -> Screen:
    return Screen(moderators=list(moderators), hold=hold, release=out.release, stop=out.stop, context=context)


def test_reasoning_and_answer_are_scanned_apart_and_released_in_order():
    out = Out()
    s = screen(out, WORDS)
    s.feed("I think bad", True)  # "bad" + "word" across the kinds is not the word
    s.feed("word is fine", False)
    asyncio.run(s.drain())
    assert out.text(True) == "I think bad" and out.text(False) == "word is fine"
    kinds = [r for _, r in out.released]
    assert kinds == sorted(kinds, reverse=True)  # all the reasoning first: its tail went out at the switch


def test_a_marker_ends_the_run_before_it_and_goes_on_in_order():
    out = Out()
    s = screen(out, WORDS)
    s.feed("abc", True)
    s.marker("", True)
    s.feed("answer", False)
    asyncio.run(s.drain())
    assert out.released == [("abc", True), ("", True), ("answer", False)]


def test_a_match_in_the_tail_at_the_end_raises_and_releases_none_of_it():
    out = Out()
    s = screen(out, WORDS, hold=16)
    s.feed("all fine until badword", False)
    with pytest.raises(Flagged):
        asyncio.run(s.drain())
    assert "badword" not in out.text()


async def test_calls_are_made_one_at_a_time_on_what_accumulated_and_release_once_cleared():
    out = Out()
    calling = CallingModerator()
    calling.answer.clear()
    s = screen(out, calling)
    s.feed("one ", False)
    await asyncio.sleep(0)
    s.feed("two ", False)
    s.feed("three ", False)
    assert calling.calls == ["one "] and out.released == []  # held until a call clears it
    calling.answer.set()
    await s.drain()
    assert calling.calls == ["one ", "one two three "]  # the second call, with the first as context
    assert out.text() == "one two three "


async def test_a_flagging_call_stops_the_reply_and_releases_nothing_it_checked():
    out = Out()
    s = screen(out, CallingModerator(flag=("badword",)))
    s.feed("fine ", False)
    await asyncio.sleep(0.01)
    s.feed("a badword ", False)
    await asyncio.sleep(0.01)
    assert out.stopped == [Verdict("endpoint:badword")]
    assert out.text() == "fine "
    with pytest.raises(Flagged):
        await s.drain()


async def test_rules_first_then_calls_on_what_the_rules_released():
    out = Out()
    calling = CallingModerator()
    s = screen(out, WORDS, calling, hold=4)
    s.feed("0123456789", False)
    await asyncio.sleep(0)  # the call on what the rules released begins
    await s.drain()
    assert out.text() == "0123456789"
    assert calling.calls == ["012345", "0123456789"]


async def test_closing_drops_what_is_held_and_cancels_the_call():
    out = Out()
    calling = CallingModerator()
    calling.answer.clear()
    s = screen(out, calling)
    s.feed("held", False)
    await asyncio.sleep(0)
    s.close()
    calling.answer.set()
    await asyncio.sleep(0.01)
    assert out.released == []
