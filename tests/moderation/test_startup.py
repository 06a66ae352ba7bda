"""Moderation is off by default, and a rules file that cannot be used stops the
process when Django starts, saying what is wrong and where."""

from __future__ import annotations

from tests.chatsite.test_environment import _settings_of


def test_moderation_is_off_by_default_and_a_good_file_turns_it_on(tmp_path):
    env = {"CHATSITE_DATA_DIR": str(tmp_path), "CHATSITE_LOCAL_MODEL": "off", "CHATSITE_MODERATION_RULES": ""}
    check = "__import__('conversations.moderation').moderation.moderation_on()"
    off = _settings_of(
        env, check, "settings.CHATSITE_MODERATION_HOLD_CHARS", "settings.CHATSITE_MODERATION_FAIL"
    )
    assert off.stdout.split() == ["False", "48", "'open'"], off.stderr
    rules = tmp_path / "rules.toml"
    rules.write_text('[words]\nslurs = ["badword"]\n')
    on = _settings_of({**env, "CHATSITE_MODERATION_RULES": str(rules)}, check)
    assert on.stdout.split() == ["True"], on.stderr


def test_a_bad_rules_file_or_fail_mode_stops_the_process_at_start(tmp_path):
    env = {"CHATSITE_DATA_DIR": str(tmp_path), "CHATSITE_LOCAL_MODEL": "off"}
    rules = tmp_path / "rules.json"
    rules.write_text('{"regex": {"card": ["(unclosed"]}}')
    refused = _settings_of({**env, "CHATSITE_MODERATION_RULES": str(rules)}, "1")
    assert refused.returncode != 0
    assert (
        f"CHATSITE_MODERATION_RULES: {rules}: regex.card[0]: not a valid regular expression" in refused.stderr
    )
    wrong = _settings_of({**env, "CHATSITE_MODERATION_FAIL": "maybe"}, "1")
    assert wrong.returncode != 0 and "CHATSITE_MODERATION_FAIL must be 'open' or 'closed'" in wrong.stderr
