"""No module of the realtime package dodges an import cycle with an import
inside a function (the cycles themselves: tests/test_architecture.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import conversations.realtime

PACKAGE = Path(conversations.realtime.__file__).parent
NAME = "conversations.realtime"


def _modules() -> dict[str, ast.Module]:
    return {
        f"{NAME}.{path.stem}": ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem != "__init__"
    }


def _imported(node: ast.AST, known: set[str]) -> set[str]:
    """The package's modules that an import statement names."""
    names: list[str] = []
    if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    return {name for name in names if name in known}


def test_no_module_of_the_package_imports_inside_a_function():
    hidden = []
    for name, tree in _modules().items():
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        hidden.append(f"{name}.{function.name}: {ast.unparse(node)}")
    assert hidden == []
