"""The import graph says where each part sits, and a test fails when it stops saying so.

Every module of ``chatsite/`` and ``conversations/`` is parsed with ``ast``; every
import counts, at the top or inside a function (an import hidden in a function
still ties the two modules together), except those under ``if TYPE_CHECKING:``,
which never run. The rules:

- no import cycle among the project's modules;
- below ``conversations/providers/``, only ``__init__.py`` knows Django: the
  backends import neither ``django``, ``channels`` nor the rest of the project
  (``conversations.prompt``, the prompt types, excepted);
- in ``conversations/realtime/``, only the consumer (and ``middleware.py``, the
  socket's ASGI auth stack) knows the socket (``channels.generic``);
- below ``conversations/moderation/``, only ``__init__.py`` knows Django (the
  backends are given their options, and may use the shared HTTP client);
- the models know no transport.

Each rule is also run on a small package made in ``tmp_path`` that breaks it, so a
checker that can no longer fail fails too.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chatsite", "conversations")


# --- the graph -------------------------------------------------------------------


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under each package."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in the tree, at any depth, but not under ``if TYPE_CHECKING:``."""
    nodes: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            nodes.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``name`` (at ``path``) imports, as dotted names.

    ``from a import b`` names ``a.b`` when that is a module of the project and ``a``
    otherwise; for outside packages, where that cannot be told from here, both.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            base_parts = package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if candidate in known:
                names.add(candidate)
            elif base in known:
                names.add(base)
            else:
                names.update({base, candidate})
    names.discard("")
    return names


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Each module of the project -> every module it imports (the project's and others')."""
    files = module_files(root, packages)
    known = set(files)
    return {name: imported_names(name, path, known) for name, path in files.items()}


# --- the checks ------------------------------------------------------------------


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each group of the project's modules that import each other."""
    inner = {name: sorted(graph[name] & graph.keys()) for name in sorted(graph)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(name: str) -> None:  # Tarjan's strongly connected components
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in inner[name]:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == name:
                    break
            if len(group) > 1 or name in inner[name]:
                groups.append(group)

    for name in inner:
        if name not in index:
            visit(name)

    cycles = []
    for group in groups:
        start = min(group)
        # The shortest way back to start inside the group.
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while cycle is None:
            step = []
            for name in frontier:
                for target in inner[name]:
                    if target == start:
                        cycle = [*paths[name], start]
                        break
                    if target in group and target not in paths:
                        paths[target] = [*paths[name], target]
                        step.append(target)
                if cycle:
                    break
            frontier = step
        cycles.append(cycle)
    return sorted(cycles)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class Rule:
    """Modules ``within`` (but not the ``exempt`` ones) import nothing ``forbidden``
    (but what is ``allowed``)."""

    within: str
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()

    def violations(self, graph: dict[str, set[str]]) -> list[str]:
        found = []
        for name in sorted(graph):
            if not _within(name, self.within) or name in self.exempt:
                continue
            for target in sorted(graph[name]):
                if any(_within(target, f) for f in self.forbidden) and not any(
                    _within(target, a) for a in self.allowed
                ):
                    found.append(f"{name} imports {target}")
        return found


PROVIDERS_KNOW_NO_DJANGO = Rule(
    within="conversations.providers",
    exempt=("conversations.providers",),  # __init__.py reads settings and hands each backend its options
    forbidden=("django", "channels", "asgiref", "chatsite", "conversations"),
    allowed=("conversations.providers", "conversations.prompt"),
)
MODERATION_BACKENDS_KNOW_NO_DJANGO = Rule(
    within="conversations.moderation",
    exempt=("conversations.moderation",),  # __init__.py reads settings and builds the backends
    forbidden=("django", "channels", "asgiref", "chatsite", "conversations"),
    allowed=("conversations.moderation", "conversations.providers.http"),
)
ONLY_THE_CONSUMER_KNOWS_THE_SOCKET = Rule(
    within="conversations.realtime",
    exempt=("conversations.realtime.consumers", "conversations.realtime.middleware"),
    forbidden=("channels.generic",),
)
MODELS_KNOW_NO_TRANSPORT = Rule(
    within="conversations.models",
    forbidden=(
        "channels",
        "daphne",
        "websockets",
        "httpx",
        "httpx_sse",
        "conversations.realtime",
        "conversations.providers",
    ),
)


# --- the project -----------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_module_and_the_imports_inside_functions(graph):
    assert {"chatsite.settings", "conversations.models", "conversations.realtime.consumers"} <= graph.keys()
    assert "conversations.providers.base" in graph
    assert any(_within(t, "django") for t in graph["conversations.models"])


def test_no_module_of_the_project_imports_itself_back(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_below_providers_only_init_knows_django_or_the_rest_of_the_project(graph):
    assert not PROVIDERS_KNOW_NO_DJANGO.violations(graph)


def test_below_moderation_only_init_knows_django_or_the_rest_of_the_project(graph):
    assert "conversations.moderation.rules" in graph
    assert not MODERATION_BACKENDS_KNOW_NO_DJANGO.violations(graph)


def test_in_realtime_only_the_consumer_knows_the_socket(graph):
    assert not ONLY_THE_CONSUMER_KNOWS_THE_SOCKET.violations(graph)


def test_the_models_know_no_transport(graph):
    assert not MODELS_KNOW_NO_TRANSPORT.violations(graph)


# --- each check can fail -----------------------------------------------------------


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
    return root


def test_a_cycle_through_an_import_inside_a_function_is_found_and_named(tmp_path):
    make_tree(
        tmp_path,
        {
            "conversations/realtime/commands.py": """
                def finished():
                    from conversations.realtime.cluster import finished_frame_for
                    return finished_frame_for
            """,
            "conversations/realtime/cluster.py": "from . import commands\n",
            "conversations/models.py": "import json\n",
        },
    )
    cluster, commands = "conversations.realtime.cluster", "conversations.realtime.commands"
    assert import_cycles(import_graph(tmp_path, ("conversations",))) == [[cluster, commands, cluster]]


def test_a_longer_cycle_is_reported_whole_and_a_type_checking_import_is_not_one(tmp_path):
    make_tree(
        tmp_path,
        {
            "chatsite/a.py": "from chatsite import b\n",
            "chatsite/b.py": "import chatsite.c\n",
            "chatsite/c.py": "from .a import thing\n",
            "chatsite/d.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from chatsite.e import E
            """,
            "chatsite/e.py": "from chatsite.d import D\n",
        },
    )
    assert import_cycles(import_graph(tmp_path, ("chatsite",))) == [
        ["chatsite.a", "chatsite.b", "chatsite.c", "chatsite.a"]
    ]


def test_a_backend_that_reads_django_settings_or_the_models_breaks_the_providers_rule(tmp_path):
    make_tree(
        tmp_path,
        {
            "conversations/providers/__init__.py": "from django.conf import settings\n",
            "conversations/providers/base.py": "from conversations.prompt import ChatMessage\n",
            "conversations/providers/http.py": """
                def timeout():
                    from django.conf import settings
                    return settings.TIMEOUT
            """,
            "conversations/providers/openai.py": """
                from ..models import Message
                from .base import ChatMessage
            """,
            "conversations/prompt.py": "",
            "conversations/models.py": "",
        },
    )
    assert PROVIDERS_KNOW_NO_DJANGO.violations(import_graph(tmp_path, ("conversations",))) == [
        "conversations.providers.http imports django.conf",
        "conversations.providers.http imports django.conf.settings",
        "conversations.providers.openai imports conversations.models",
    ]


def test_a_realtime_module_other_than_the_consumer_that_knows_the_socket_breaks_the_rule(tmp_path):
    make_tree(
        tmp_path,
        {
            "conversations/realtime/consumers.py": "from channels.generic.websocket import Consumer\n",
            "conversations/realtime/middleware.py": "from channels.generic import websocket\n",
            "conversations/realtime/commands.py": "from channels.generic import websocket\n",
            "conversations/realtime/outbox.py": "from channels.layers import get_channel_layer\n",
        },
    )
    assert ONLY_THE_CONSUMER_KNOWS_THE_SOCKET.violations(import_graph(tmp_path, ("conversations",))) == [
        "conversations.realtime.commands imports channels.generic",
        "conversations.realtime.commands imports channels.generic.websocket",
    ]


def test_models_that_reach_for_a_transport_break_the_rule(tmp_path):
    make_tree(
        tmp_path,
        {
            "conversations/models.py": """
                from django.db import models
                def notify():
                    import httpx
                    from conversations.realtime import protocol
            """,
            "conversations/realtime/protocol.py": "",
        },
    )
    assert MODELS_KNOW_NO_TRANSPORT.violations(import_graph(tmp_path, ("conversations",))) == [
        "conversations.models imports conversations.realtime.protocol",
        "conversations.models imports httpx",
    ]
