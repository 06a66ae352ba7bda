"""Production is the default: DEBUG off unless asked for, a secret key that `serve`
makes on first run, and a clear stop anywhere else without one."""

from __future__ import annotations

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
