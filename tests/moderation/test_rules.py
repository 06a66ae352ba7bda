"""The word and regular-expression lists: loading the operator's file, and
scanning a stream so that a match is caught before any of it is released."""

from __future__ import annotations

import asyncio
import json

import pytest

from conversations.moderation.base import Flagged
from conversations.moderation.rules import RulesError, RulesModerator, RulesScanner, rules_load, rules_parse

RULES = {"words": {"slurs": ["badword", "very bad"]}, "regex": {"card-number": [r"\b(?:\d[ -]?){13,16}\b"]}}


def moderator(data=RULES) -> RulesModerator:
    return RulesModerator(rules=rules_parse(data=data, where="test"))


def stream(pieces: list[str], *, hold: int = 16, data=RULES) -> tuple[str, str | None]:
    """Feed ``pieces``; (everything released, the rule that matched or None)."""
    scanner = moderator(data).scanner(hold=hold)
    assert isinstance(scanner, RulesScanner)
    released = ""
    try:
        for piece in pieces:
            released += scanner.feed(piece)
        released += scanner.end()
    except Flagged as flagged:
        return released, flagged.verdict.rule
    return released, None


TEXT = "an ordinary sentence, then a badword appears, and more text after it"


@pytest.mark.parametrize("cut", range(1, len(TEXT)))
def test_a_word_split_across_two_pieces_at_any_cut_is_caught_before_any_of_it_is_released(cut):
    released, rule = stream([TEXT[:cut], TEXT[cut:]])
    assert rule == "words:slurs"
    # What went out is the text before the word, never a character of it.
    assert TEXT.startswith(released) and len(released) <= TEXT.index("badword")


def test_a_word_streamed_a_character_at_a_time_is_caught_with_none_of_it_released():
    released, rule = stream(list(TEXT))
    assert rule == "words:slurs"
    assert released == TEXT[: len(released)]
    assert len(released) <= TEXT.index("badword")


def test_words_are_whole_words_and_any_case():
    assert stream(["it is BadWord."])[1] == "words:slurs"
    assert stream(["badwords and notbadword are other words"]) == (
        "badwords and notbadword are other words",
        None,
    )
    # A word of several words matches with any whitespace between them.
    assert stream(["this is very\n  bad"])[1] == "words:slurs"


def test_a_word_is_not_a_match_until_the_next_character_says_it_ended():
    # "badword" then "s": "badwords" is another word, and the whole text goes out.
    assert stream(["say badword", "s please"]) == ("say badwords please", None)


def test_a_match_in_the_final_tail_is_caught_at_the_end():
    released, rule = stream(["the last word is badword"], hold=48)
    assert (released, rule) == ("", "words:slurs")


def test_a_regular_expression_matches_as_written_and_names_its_list():
    released, rule = stream(["my card is 4111 1111 ", "1111 1111 thanks"], hold=32)
    assert rule == "regex:card-number"
    assert "4111" not in released


def test_clear_text_is_all_released_by_the_end_and_all_but_the_window_before_it():
    scanner = moderator().scanner(hold=10)
    assert scanner is not None
    assert scanner.feed("short") == ""  # all of it held: shorter than the window
    assert scanner.feed(" text, goes on") == "short tex"  # all but the last 10
    assert scanner.end() == "t, goes on"
    scanner = moderator().scanner(hold=10)
    assert scanner is not None
    out = scanner.feed("0123456789abcdef")
    assert out == "012345" and scanner.end() == "6789abcdef"


def test_a_continued_reply_s_earlier_text_is_context_for_word_boundaries():
    scanner = moderator().scanner(hold=16, context="not")
    assert scanner is not None
    # "not" + "badword" is "notbadword": not a match.
    assert scanner.feed("badword here") + scanner.end() == "badword here"


def test_the_prompt_check_names_the_rule_or_clears():
    verdict = asyncio.run(moderator().prompt_check(text="a BADWORD here"))
    assert verdict is not None and verdict.rule == "words:slurs"
    assert asyncio.run(moderator().prompt_check(text="fine words")) is None


def test_json_and_toml_files_load(tmp_path):
    json_file = tmp_path / "rules.json"
    json_file.write_text(json.dumps(RULES))
    toml_file = tmp_path / "rules.toml"
    toml_file.write_text("[words]\nslurs = [\"badword\"]\n[regex]\ncard = ['\\d{16}']\n")
    assert [r.name for r in rules_load(path=json_file)] == ["words:slurs", "regex:card-number"]
    assert [r.name for r in rules_load(path=toml_file)] == ["words:slurs", "regex:card"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not valid JSON"),
        ('{"words": ["a"]}', "'words' must be a table of named lists"),
        ('{"phrases": {}}', "unknown section 'phrases'"),
        ('{"words": {"slurs": "badword"}}', "words.slurs: must be a list of non-empty strings"),
        ('{"regex": {"card": ["(unclosed"]}}', "regex.card[0]: not a valid regular expression"),
        ('{"regex": {"all": ["x*"]}}', "matches the empty text"),
        ('{"words": {"bad name!": ["x"]}}', "a list's name is"),
    ],
)
def test_a_bad_file_is_refused_saying_what_and_where(tmp_path, content, says):
    path = tmp_path / "rules.json"
    path.write_text(content)
    with pytest.raises(RulesError) as caught:
        rules_load(path=path)
    assert says in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_file_is_refused_with_its_path(tmp_path):
    with pytest.raises(RulesError, match="cannot read the moderation rules file"):
        rules_load(path=tmp_path / "nope.json")


def test_word_lists_share_one_pattern_and_each_match_names_its_own_list():
    two = {"words": {"slurs": ["badword"], "spam": ["buy now"]}, "regex": {"repeat": [r"(\d)\1{3}"]}}
    assert [r.name for r in moderator(two).rules] == ["words:slurs", "regex:repeat"]
    assert stream(["please BUY  now!"], data=two)[1] == "words:spam"
    assert stream(["a badword"], data=two)[1] == "words:slurs"
    # A regular expression keeps its own groups (a backreference works).
    assert stream(["code 7777 here"], data=two)[1] == "regex:repeat"
