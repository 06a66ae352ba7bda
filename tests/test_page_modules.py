"""The chat page's ES modules: an import graph without cycles, and the state without the DOM."""

from __future__ import annotations

import re
from pathlib import Path

CHAT = Path(__file__).resolve().parent.parent / "static" / "chat"
IMPORT_RE = re.compile(r"""^\s*import\s[^;]*?from\s+['"](\./[\w.-]+\.js)['"]""", re.M | re.S)


def imports() -> dict[str, set[str]]:
    return {
        path.name: {spec.removeprefix("./") for spec in IMPORT_RE.findall(path.read_text())}
        for path in sorted(CHAT.glob("*.js"))
    }


def test_the_pages_modules_import_each_other_without_a_cycle():
    graph = imports()
    assert graph["main.js"], "main.js wires the others"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import cycle: " + " -> ".join((*path, name))
        if name in done:
            return
        for target in graph.get(name, ()):
            assert target in graph, f"{name} imports {target}, which is not in static/chat/"
            visit(target, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
    # Everything is reached from an entry module: the chat page's, or the shared page's.
    reached, todo = set(), ["main.js", "share.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert reached == set(graph), set(graph) - reached


def test_the_state_and_the_protocol_know_no_dom():
    for name in ("state.js", "protocol.js"):
        text = CHAT.joinpath(name).read_text()
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(r"\b(document|window|HTMLElement|querySelector)\b", code), name
