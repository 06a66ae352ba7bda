"""Production is the default: DEBUG off unless asked for, a secret key that `serve`
makes on first run, and a clear stop anywhere else without one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from chatsite import environment
from tests.processes import ROOT

SHOW_SETTINGS = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"


def _settings_process(env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "DJANGO_SECRET_KEY"}}
    full.update({"CHATSITE_NO_BOOTSTRAP": "1", "DJANGO_SETTINGS_MODULE": "chatsite.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {SHOW_SETTINGS}"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_SECURE_COOKIES"):
        # setenv first, so that whatever prepare() writes is undone after the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHATSITE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_debug_is_off_unless_django_debug_turns_it_on(tmp_path):
    key = "k" * 60
    off = _settings_process({"DJANGO_SECRET_KEY": key, "CHATSITE_DATA_DIR": str(tmp_path)})
    on = _settings_process({"DJANGO_DEBUG": "true", "CHATSITE_DATA_DIR": str(tmp_path)})
    assert off.returncode == 0, off.stderr
    assert off.stdout.split()[0] == "False"
    assert on.stdout.split()[0] == "True"


@pytest.mark.parametrize("key", ["", "change-me"])
def test_a_missing_secret_key_outside_debug_stops_the_process_and_says_what_to_set(tmp_path, key):
    result = _settings_process({"DJANGO_SECRET_KEY": key, "CHATSITE_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr


def test_serve_makes_a_private_secret_key_on_first_run_and_reuses_it(clean_env, monkeypatch):
    environment.prepare(["manage.py", "serve"])
    key = os.environ["DJANGO_SECRET_KEY"]
    path = clean_env / environment.SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key and len(key) >= 50

    monkeypatch.delenv("DJANGO_SECRET_KEY")
    environment.prepare(["manage.py", "serve"])
    assert os.environ["DJANGO_SECRET_KEY"] == key
    # serve speaks plain HTTP: its cookies can't be Secure unless the operator says so.
    assert os.environ["DJANGO_SECURE_COOKIES"] == "false"


def test_other_commands_reuse_the_key_serve_made_but_never_make_one(clean_env, monkeypatch):
    environment.prepare(["manage.py", "createsuperuser"])
    assert "DJANGO_SECRET_KEY" not in os.environ
    assert not (clean_env / environment.SECRET_KEY_FILE).exists()

    environment.prepare(["manage.py", "serve"])
    key = os.environ.pop("DJANGO_SECRET_KEY")
    environment.prepare(["manage.py", "createsuperuser"])
    assert os.environ["DJANGO_SECRET_KEY"] == key


def test_an_operator_key_is_never_replaced_by_the_file(clean_env, monkeypatch):
    (clean_env / environment.SECRET_KEY_FILE).write_text("from-the-file\n")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "from-the-operator")
    environment.prepare(["manage.py", "serve"])
    assert os.environ["DJANGO_SECRET_KEY"] == "from-the-operator"


def _settings_of(env: dict[str, str], *expressions: str) -> subprocess.CompletedProcess:
    """``expressions`` over a fresh process's ``settings``, one repr a line (``env``
    over a DEBUG configuration)."""
    show = "; ".join(f"print(repr({expression}))" for expression in expressions)
    full = {k: v for k, v in os.environ.items() if k not in environment.REMOVED}
    full.update({"CHATSITE_NO_BOOTSTRAP": "1", "DJANGO_SETTINGS_MODULE": "chatsite.settings"})
    full.update({"DJANGO_DEBUG": "true", **env})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; {show}"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("CHATSITE_HTTP_CONNECT_TIMEOUT", "CHATSITE_HTTP_TIMEOUT"),
        ("ANTHROPIC_MAX_TOKENS", "CHATSITE_MAX_TOKENS"),
        ("CHATSITE_SKIP_LOCAL_MODEL", "CHATSITE_LOCAL_MODEL=off"),
        ("CHATSITE_MAX_FRAME_BYTES", "CHATSITE_MAX_PROMPT_CHARS"),
        ("CHATSITE_WORKER_HEARTBEAT", "Django setting"),
    ],
)
def test_a_removed_variable_still_set_stops_start_up_and_names_its_replacement(tmp_path, name, replacement):
    result = _settings_of({name: "5", "CHATSITE_DATA_DIR": str(tmp_path)}, "settings.DEBUG")
    assert result.returncode != 0
    assert f"chatsite no longer reads this variable:\n  {name}: " in result.stderr
    assert replacement in result.stderr


def test_removed_variables_are_all_named_at_once_and_an_empty_one_is_no_setting():
    environment.removed_check({"CHATSITE_RETRY_BACKOFF": " ", "CHATSITE_PORT": "8001"})  # nothing removed set
    with pytest.raises(environment.SettingError) as info:
        environment.removed_check({"CHATSITE_HTTP_POOL_TIMEOUT": "3", "CHATSITE_COALESCE_MAX_MS": "100"})
    message = str(info.value)
    assert message.startswith("chatsite no longer reads these variables:")
    assert "CHATSITE_HTTP_POOL_TIMEOUT: set CHATSITE_HTTP_TIMEOUT instead" in message
    assert "CHATSITE_COALESCE_MAX_MS: remove it" in message


@pytest.mark.parametrize("word", ["off", "OFF", "false", "no", "0", " Off "])
def test_every_off_word_turns_a_yes_no_variable_off(monkeypatch, word):
    monkeypatch.setenv("X_SWITCH", word)
    assert environment.env_bool("X_SWITCH", True) is False


@pytest.mark.parametrize("word", ["on", "true", "yes", "1", "TRUE"])
def test_every_on_word_turns_a_yes_no_variable_on(monkeypatch, word):
    monkeypatch.setenv("X_SWITCH", word)
    assert environment.env_bool("X_SWITCH", False) is True


@pytest.mark.parametrize("word", ["off", "false", "no", "none", "never"])
def test_the_same_words_turn_a_number_off_while_0_stays_the_number_zero(monkeypatch, word):
    monkeypatch.setenv("X_SECONDS", word)
    assert environment.env_float("X_SECONDS", 5.0) is None
    monkeypatch.setenv("X_SECONDS", "0")
    assert environment.env_float("X_SECONDS", 5.0) == 0.0


def test_a_word_that_is_neither_on_nor_off_stops_with_the_words_it_takes(monkeypatch):
    monkeypatch.setenv("X_SWITCH", "maybe")
    with pytest.raises(environment.SettingError, match=r"X_SWITCH must be on or off .* not 'maybe'"):
        environment.env_bool("X_SWITCH", True)


def test_the_local_model_is_turned_off_by_the_same_words_and_the_sigterm_handler_too(tmp_path):
    for word in ("off", "no", "0", "false"):
        env = {
            "CHATSITE_LOCAL_MODEL": word,
            "CHATSITE_SIGTERM_HANDLER": word,
            "CHATSITE_DATA_DIR": str(tmp_path),
        }
        result = _settings_of(
            env, "'local' in settings.CHATSITE_PROVIDERS", "settings.CHATSITE_SIGTERM_HANDLER"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["False", "False"], word
    result = _settings_of({"CHATSITE_DATA_DIR": str(tmp_path)}, "'local' in settings.CHATSITE_PROVIDERS")
    assert result.stdout.split() == ["True"]


def test_the_local_model_on_is_the_bundled_one_and_a_missing_file_stops_the_start(tmp_path):
    for word in ("on", "true", "Bundled"):
        result = _settings_of(
            {"CHATSITE_LOCAL_MODEL": word, "CHATSITE_DATA_DIR": str(tmp_path)},
            "settings.CHATSITE_PROVIDERS['local']['MODEL_PATH']",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["'bundled'"], word
    model = tmp_path / "other.gguf"
    model.write_bytes(b"GGUF")
    result = _settings_of(
        {"CHATSITE_LOCAL_MODEL": str(model), "CHATSITE_DATA_DIR": str(tmp_path)},
        "settings.CHATSITE_PROVIDERS['local']['MODEL_PATH']",
    )
    assert result.stdout.split() == [repr(str(model))], result.stderr
    missing = _settings_of(
        {"CHATSITE_LOCAL_MODEL": str(tmp_path / "nowhere.gguf"), "CHATSITE_DATA_DIR": str(tmp_path)},
        "settings.CHATSITE_PROVIDERS",
    )
    assert missing.returncode != 0
    assert "CHATSITE_LOCAL_MODEL: there is no file at" in missing.stderr and "nowhere.gguf" in missing.stderr


def test_the_frame_limit_follows_the_prompt_limit(tmp_path):
    default = _settings_of({"CHATSITE_DATA_DIR": str(tmp_path)}, "settings.CHATSITE_MAX_FRAME_BYTES")
    larger = _settings_of(
        {"CHATSITE_MAX_PROMPT_CHARS": "100000", "CHATSITE_DATA_DIR": str(tmp_path)},
        "settings.CHATSITE_MAX_FRAME_BYTES",
    )
    assert default.stdout.split() == ["262144"], default.stderr
    # A send of the longest prompt, every character a 6-byte \u escape, fits.
    assert larger.stdout.split() == [str(6 * 100_000 + 16 * 1024)], larger.stderr


def test_openai_stream_and_anthropic_stream_turn_streaming_off_per_provider(tmp_path):
    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "ANTHROPIC_API_KEY": "sk-ant-not-secret",
        "CHATSITE_DATA_DIR": str(tmp_path),
    }
    on = _settings_of(
        env,
        "settings.CHATSITE_PROVIDERS['openai']['STREAM']",
        "settings.CHATSITE_PROVIDERS['anthropic']['STREAM']",
    )
    off = _settings_of(
        {
            **env,
            "OPENAI_STREAM": "off",
            "ANTHROPIC_STREAM": "false",
            "CHATSITE_NON_STREAMING_MODELS": "openai/a*,anthropic/b",
        },
        "settings.CHATSITE_PROVIDERS['openai']['STREAM']",
        "settings.CHATSITE_PROVIDERS['anthropic']['STREAM']",
        "settings.CHATSITE_NON_STREAMING_MODELS",
    )
    assert on.stdout.split() == ["True", "True"], on.stderr
    assert off.stdout.splitlines() == ["False", "False", "['openai/a*', 'anthropic/b']"], off.stderr


def test_model_prices_are_json_per_model_kept_as_written_and_a_bad_one_stops_with_its_shape(monkeypatch):
    monkeypatch.setenv(
        "CHATSITE_MODEL_PRICES",
        '{"openai/gpt-4o": {"input": 2.50, "output": 10}, "anthropic/*": {"output": 15}}',
    )
    assert environment.env_prices("CHATSITE_MODEL_PRICES") == {
        "openai/gpt-4o": {"input": "2.50", "output": "10"},
        "anthropic/*": {"input": "0", "output": "15"},
    }
    monkeypatch.setenv("CHATSITE_MODEL_PRICES", "")
    assert environment.env_prices("CHATSITE_MODEL_PRICES") == {}
    for bad in (
        '{"gpt-4o": {"input": 1}}',
        '{"openai/x": {"input": -1}}',
        '{"openai/x": {"in": 1}}',
        "not json",
        "[1]",
    ):
        monkeypatch.setenv("CHATSITE_MODEL_PRICES", bad)
        with pytest.raises(environment.SettingError, match="CHATSITE_MODEL_PRICES"):
            environment.env_prices("CHATSITE_MODEL_PRICES")


def test_json_logs_make_every_line_one_object_with_the_documented_keys(tmp_path):
    env = {"CHATSITE_LOG_FORMAT": "json", "DJANGO_DEBUG": "true", "CHATSITE_DATA_DIR": str(tmp_path)}
    full = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "DJANGO_SECRET_KEY"}}
    full.update({"CHATSITE_NO_BOOTSTRAP": "1", "DJANGO_SETTINGS_MODULE": "chatsite.settings", **env})
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('conversations.x').info('hello %s', 'there')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stderr.splitlines() if text.strip()]
    assert list(line) == ["time", "level", "logger", "message"]
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "conversations.x", "hello there")
    bad = _settings_process(
        {"CHATSITE_LOG_FORMAT": "xml", "DJANGO_DEBUG": "true", "CHATSITE_DATA_DIR": str(tmp_path)}
    )
    assert bad.returncode != 0 and "CHATSITE_LOG_FORMAT must be text or json" in bad.stderr
