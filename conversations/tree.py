"""The message tree of a conversation: branch walks and orders, written once.

Messages form a tree: each has a ``parent`` (``None`` for a first message), and
a regenerated reply or an edited message is a sibling of the one it replaces.
The conversation shows one branch, the path from a first message down to its
``active_leaf``. Everything here works on plain ids and parent links (or on any
objects with ``pk``, ``parent_id`` and ``created_at``), so the chat's reads, the
prompt, the exports and the importer's checks all walk the tree the same way.
No Django here.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class Node(Protocol):
    """A message as the tree sees it (``conversations.models.Message`` is one)."""

    @property
    def pk(self) -> Any: ...

    @property
    def parent_id(self) -> Any: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def role(self) -> str: ...


N = TypeVar("N", bound=Node)


def branch_path(*, messages: Iterable[N], leaf_id: Any) -> list[N]:
    """The messages from a first one down to ``leaf_id``, following parents
    (empty for no leaf, or one that is not among ``messages``)."""
    if leaf_id is None:
        return []
    by_id = {m.pk: m for m in messages}
    path: list[N] = []
    node = by_id.get(leaf_id)
    while node is not None and len(path) < len(by_id):  # a loop of parents cannot hang it
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    path.reverse()
    return path


def written_order(*, messages: Iterable[N]) -> list[N]:
    """Every message in the order it was written: what a conversation with no
    branch recorded shows."""
    return sorted(messages, key=lambda m: (m.created_at, m.role))


def children_of(*, parents: Mapping[K, K | None], key: Callable[[K], Any]) -> dict[K | None, list[K]]:
    """Each id's children (``None``: the first messages), in ``key`` order; the
    versions of a message are its parent's children."""
    children: dict[K | None, list[K]] = defaultdict(list)
    for node in sorted(parents, key=key):
        children[parents[node]].append(node)
    return dict(children)


def newest_leaf(*, parents: Mapping[K, K | None], key: Callable[[K], Any], start: K) -> K:
    """From ``start``, down the newest child (largest ``key``) each time, to a leaf."""
    children = children_of(parents=parents, key=key)
    node = start
    seen = {node}
    while children.get(node):
        node = children[node][-1]
        if node in seen:  # pragma: no cover - a loop of parents
            break
        seen.add(node)
    return node


def tree_order(*, parents: Mapping[K, K | None], key: Callable[[K], Any]) -> list[K]:
    """Every id after its parent; among those whose parent came already, the
    smallest ``key`` first (the oldest, with a time as the key).

    An id whose parent is ``None`` or not in ``parents`` is a first message.
    Ids on a loop of parent links are never reached and are left out: a caller
    that must refuse those compares the lengths.
    """
    children: dict[K, list[K]] = defaultdict(list)
    heap: list[tuple[Any, K]] = []
    for node, parent in parents.items():
        if parent is None or parent not in parents:
            heap.append((key(node), node))
        else:
            children[parent].append(node)
    heapq.heapify(heap)
    order: list[K] = []
    while heap:
        _, node = heapq.heappop(heap)
        order.append(node)
        for child in children.get(node, ()):
            heapq.heappush(heap, (key(child), child))
    return order
