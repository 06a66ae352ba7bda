"""Word and regular-expression lists from an operator's file.

The file is JSON or TOML (by its name: ``.toml`` is TOML, anything else JSON),
with named lists::

    [words]
    slurs = ["badword", "worse word"]

    [regex]
    card-number = ['\\b(?:\\d[ -]?){13,16}\\b']

Words match whole words, case-insensitively (a word of several words matches
with any whitespace between them); a regular expression matches as written
(``(?i)`` makes it case-insensitive). A match is named by its list,
``words:slurs`` or ``regex:card-number``. A file that cannot be used raises
:class:`RulesError` with what is wrong and where: the process stops at start-up
rather than run without the operator's rules.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from conversations.moderation.base import Flagged, Moderator, Scanner, Verdict

LIST_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Released text kept before the next scan, for word boundaries and short lookbehinds.
CONTEXT_CHARS = 16


class RulesError(ValueError):
    """A rules file that cannot be used; the message says what is wrong, and where."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # "words:slurs", "regex:card-number"
    pattern: re.Pattern[str]
    #: The word lists' names, when ``pattern`` holds several (group ``w<i>`` is list i).
    lists: tuple[str, ...] = ()


def _words_rule(lists: dict[str, list[str]]) -> Rule:
    """Every word list in one pattern (one search per scan, not one per list),
    each list a named group so a match still names its list."""
    groups = []
    for i, words in enumerate(lists.values()):
        # Longest first, so "bad word" wins over "bad".
        alternatives = sorted({r"\s+".join(map(re.escape, w.split())) for w in words}, key=len, reverse=True)
        groups.append(f"(?P<w{i}>" + "|".join(alternatives) + ")")
    # The words' first characters, first: the engine skips every other position
    # at once (ten times faster than trying the lookbehind at each).
    firsts = "".join(sorted({re.escape(w.strip()[0]) for words in lists.values() for w in words}))
    source = rf"(?=[{firsts}])(?<!\w)(?:" + "|".join(groups) + r")(?!\w)"
    names = tuple(f"words:{name}" for name in lists)
    return Rule(names[0], re.compile(source, re.IGNORECASE), names)


def rules_parse(*, data: object, where: str) -> list[Rule]:
    """The rules of a loaded file (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise RulesError(f"{where}: the file must hold a table with 'words' and/or 'regex' lists")
    unknown = set(data) - {"words", "regex"}
    if unknown:
        raise RulesError(f"{where}: unknown section {sorted(unknown)[0]!r} (use 'words' and 'regex')")
    rules: list[Rule] = []
    words: dict[str, list[str]] = {}
    for section in ("words", "regex"):
        lists = data.get(section, {})
        if not isinstance(lists, dict):
            raise RulesError(f"{where}: '{section}' must be a table of named lists")
        for name, items in lists.items():
            place = f"{where}: {section}.{name}"
            if not LIST_NAME_RE.match(str(name)):
                raise RulesError(f"{place}: a list's name is 1-64 letters, digits, '_', '.' or '-'")
            if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
                raise RulesError(f"{place}: must be a list of non-empty strings")
            if not items:
                continue
            if section == "words":
                words[str(name)] = items
                continue
            for i, source in enumerate(items):
                try:
                    pattern = re.compile(source)
                except re.error as exc:
                    raise RulesError(f"{place}[{i}]: not a valid regular expression ({exc})") from None
                if pattern.search(""):
                    raise RulesError(f"{place}[{i}]: matches the empty text, so it would match everything")
                rules.append(Rule(f"regex:{name}", pattern))
    if words:
        rules.insert(0, _words_rule(words))
    return rules


def rules_load(*, path: Path) -> list[Rule]:
    """Read and check the operator's rules file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the moderation rules file ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise RulesError(f"{path}: not valid {kind} ({exc})") from None
    return rules_parse(data=data, where=str(path))


def _found(pattern: re.Pattern[str], text: str, pos: int, final: bool) -> re.Match[str] | None:
    """Whether ``pattern`` matches in ``text`` from ``pos`` (the text before it is
    only looked behind at). Unless ``final``, a match that touches the end of
    ``text`` does not count yet: more text may undo it ("cat" is a word until an
    "s" comes)."""
    found = pattern.search(text, pos)
    end = len(text)
    while found is not None and not final and found.end() == end:
        found = pattern.search(text, found.start() + 1)
    return found


def _first_match(rules: tuple[Rule, ...], text: str, *, final: bool, pos: int = 0) -> Verdict | None:
    """The first rule with a match in ``text`` from ``pos`` (see :func:`_found`).
    (Regular expressions are searched one by one: joined into one pattern they
    lose the engine's skipping ahead to where each can start, and cost more.)"""
    for rule in rules:
        found = _found(rule.pattern, text, pos, final)
        if found is not None:
            if rule.lists and found.lastgroup:
                return Verdict(rule.lists[int(found.lastgroup[1:])])
            return Verdict(rule.name)
    return None


class RulesScanner(Scanner):
    """One text stream against the rules: all but the last ``hold`` characters
    are released once the text has no match (the last few released characters
    are looked behind at, for word boundaries). A match of at most ``hold``
    characters is always caught before any of it is released; a longer one may
    be caught only after its start was."""

    __slots__ = ("_context", "_held", "_hold", "_rules")

    def __init__(self, *, rules: tuple[Rule, ...], hold: int, context: str = "") -> None:
        self._rules = rules
        self._hold = hold
        self._held = ""
        self._context = context[-CONTEXT_CHARS:]

    def feed(self, text: str) -> str:
        held = self._held + text
        context = self._context
        verdict = _first_match(self._rules, context + held, final=False, pos=len(context))
        if verdict is not None:
            raise Flagged(verdict)
        cut = len(held) - self._hold
        if cut <= 0:
            self._held = held
            return ""
        released = held[:cut]
        self._held = held[cut:]
        self._context = (context + released)[-CONTEXT_CHARS:]
        return released

    def end(self) -> str:
        held, self._held = self._held, ""
        if held:
            verdict = _first_match(self._rules, self._context + held, final=True, pos=len(self._context))
            if verdict is not None:
                raise Flagged(verdict)
            self._context = (self._context + held)[-CONTEXT_CHARS:]
        return held


class RulesModerator(Moderator):
    """The operator's word and regular-expression lists."""

    def __init__(self, *, rules: list[Rule]) -> None:
        self.rules = tuple(rules)

    async def prompt_check(self, *, text: str) -> Verdict | None:
        return _first_match(self.rules, text, final=True)

    def scanner(self, *, hold: int, context: str = "") -> Scanner | None:
        return RulesScanner(rules=self.rules, hold=hold, context=context)
