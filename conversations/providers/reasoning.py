"""Reasoning ("thinking") pieces of a stream, and the splitter of inline ``<think>``.

A provider's stream yields plain ``str`` for the answer (the hot path carries
nothing else) and :class:`Reasoning` for the model's thinking: a ``str``
subclass, so a reply runner tells the two apart with one class check. A
:class:`RedactedReasoning` (always empty) marks thinking that the provider
hid (Anthropic's ``redacted_thinking``).

:class:`ThinkSplitter` splits an answer that begins with ``<think>…</think>``
(Qwen3, DeepSeek R1 and their kind on servers that do not split it out
themselves) into reasoning and answer while it streams, whatever the chunks
the tags arrive cut into. Only a ``<think>`` at the very start of the content
(after white space) opens reasoning: one anywhere later, in a code block or
in prose, is the answer's own text and left alone.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class Reasoning(str):
    """A piece of the model's reasoning, not of its answer."""

    __slots__ = ()


class RedactedReasoning(Reasoning):
    """Reasoning the provider sent encrypted (shown as hidden): no text of its own."""

    __slots__ = ()


def _held_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Feed it the answer's pieces in order; it returns what to yield for each.

    ``done`` is True once the stream is past any reasoning (its pieces can then
    be yielded as they are, without calling :meth:`feed`).
    """

    __slots__ = ("_buffer", "_state", "done")

    def __init__(self) -> None:
        self._state = "start"  # "start" | "thinking" | "after" (strip white space) | "answer"
        self._buffer = ""
        self.done = False

    def feed(self, piece: str) -> list[str]:
        out: list[str] = []
        text = self._buffer + piece
        self._buffer = ""
        if self._state == "start":
            stripped = text.lstrip()
            if not stripped:
                self._buffer = text  # only white space so far: it may precede <think>
                return out
            if len(stripped) < len(OPEN_TAG) and OPEN_TAG.startswith(stripped):
                self._buffer = text  # "<thi": wait for the rest
                return out
            if not stripped.startswith(OPEN_TAG):
                self._state, self.done = "answer", True
                return [text]
            self._state = "thinking"
            text = stripped[len(OPEN_TAG) :]
        if self._state == "thinking":
            end = text.find(CLOSE_TAG)
            if end < 0:
                held = _held_suffix(text, CLOSE_TAG)
                if held:
                    self._buffer = text[-held:]
                    text = text[:-held]
                if text:
                    out.append(Reasoning(text))
                return out
            if end:
                out.append(Reasoning(text[:end]))
            self._state = "after"
            text = text[end + len(CLOSE_TAG) :]
        if self._state == "after":
            # The white space between </think> and the answer is neither's.
            text = text.lstrip()
            if not text:
                return out
            self._state, self.done = "answer", True
        if text:
            out.append(text)
        return out

    def end(self) -> list[str]:
        """What is still held back when the stream ends cleanly."""
        held, self._buffer = self._buffer, ""
        if not held:
            return []
        if self._state == "thinking":
            return [Reasoning(held)]
        if self._state == "start" and held.strip():
            return [held]  # an answer that is just "<thi"
        return []
