"""The providers know no Django: only ``providers/__init__.py`` reads settings."""

from __future__ import annotations

import ast
from pathlib import Path

import conversations

PACKAGE = Path(conversations.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_module_under_providers_but_init_and_not_the_prompt_types_import_django():
    modules = [p for p in (PACKAGE / "providers").glob("*.py") if p.name != "__init__.py"]
    modules.append(PACKAGE / "prompt.py")
    assert len(modules) >= 7
    offenders = {
        path.relative_to(PACKAGE).as_posix(): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "django"
        )
        for path in modules
    }
    assert {path: found for path, found in offenders.items() if found} == {}
    # The check itself can fail: the package's __init__ does import Django.
    assert any(m.startswith("django") for m in imported_modules(PACKAGE / "providers" / "__init__.py"))
