"""docs/deploy/chatsite.env is a configuration that Django's deployment checks pass."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.production import ROOT, SERVICE_ENV_KEEP, read_env_file


def deploy_check(tmp_path, **changes: str) -> subprocess.CompletedProcess:
    env = {k: os.environ[k] for k in SERVICE_ENV_KEEP if k in os.environ}
    env.update(read_env_file())
    # The secret is the one value the example cannot ship; the data directory is a
    # temporary one only so that the check does not create /var/lib/chatsite here.
    env.update({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "CHATSITE_DATA_DIR": str(tmp_path)})
    env.update(changes)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_example_deploy_settings(tmp_path):
    result = deploy_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_would_catch_an_example_that_dropped_a_protection(tmp_path):
    # The check above means something: without HSTS the same command fails.
    result = deploy_check(tmp_path, DJANGO_SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr
