"""Every variable an operator sets is in docs/configuration.md and .env.example, and
is read through settings (or, before Django exists, by the bootstrap)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from chatsite import environment

ROOT = Path(__file__).resolve().parents[2]
VARIABLE_TABLE = "| variable | default | meaning |"


def documented() -> set[str]:
    """The first column of configuration.md's variable tables."""
    names: set[str] = set()
    in_table = False
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.strip() == VARIABLE_TABLE:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def in_env_example() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_docs_and_the_example_file_list_the_same_variables():
    assert documented() == in_env_example()
    assert len(documented()) > 40  # the tables were found


def test_every_documented_variable_is_read_by_settings_its_helpers_or_the_bootstrap():
    read = set().union(
        *(
            string_literals(ROOT / "chatsite" / name)
            for name in ("settings.py", "environment.py", "bootstrap.py")
        )
    )
    assert sorted(documented() - read) == []


def test_no_removed_variable_is_documented_or_in_the_example_file():
    assert documented() & set(environment.REMOVED) == set()
    assert in_env_example() & set(environment.REMOVED) == set()


def environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read the process environment (``os.environ.get``,
    ``os.getenv``, ``os.environ[...]``); writes such as ``setdefault`` are not reads."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in {"get", "getenv"}:
            target = ast.unparse(node.value)
            if (node.attr == "get" and target == "os.environ") or (node.attr == "getenv" and target == "os"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) == "os.environ":
                lines.append(node.lineno)
    return lines


def test_nothing_in_the_app_reads_the_environment_but_the_env_helpers():
    modules = [*(ROOT / "conversations").rglob("*.py"), *(ROOT / "chatsite").glob("*.py")]
    reads = {
        path.relative_to(ROOT).as_posix(): environment_reads(path)
        for path in modules
        if path.name != "environment.py"
    }
    assert {path: lines for path, lines in reads.items() if lines} == {}
    # The check can fail: the helpers themselves read it.
    assert environment_reads(ROOT / "chatsite" / "environment.py")
