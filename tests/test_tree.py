"""The message tree, walked one way everywhere: the branch shown, the prompt's
branch, the versions of a message, the branch chosen by a version, and the
export's and importer's tree order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from conversations import tree

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class M:
    pk: str
    parent_id: str | None
    minute: int
    role: str = "user"

    @property
    def created_at(self) -> datetime:
        return T0 + timedelta(minutes=self.minute)


#     a ─ b ─ c          (c is the leaf shown)
#       └ b2 ─ c2        (b2: a regenerated version of b, newer)
#   x                    (a second first message, an edit of a)
MESSAGES = [
    M("a", None, 0),
    M("b", "a", 1, "assistant"),
    M("c", "b", 2),
    M("b2", "a", 3, "assistant"),
    M("c2", "b2", 4),
    M("x", None, 5),
]
PARENTS = {m.pk: m.parent_id for m in MESSAGES}
MINUTE = {m.pk: m.minute for m in MESSAGES}


def ids(messages) -> list[str]:
    return [m.pk for m in messages]


def test_the_branch_runs_from_a_first_message_down_to_the_leaf():
    assert ids(tree.branch_path(messages=MESSAGES, leaf_id="c")) == ["a", "b", "c"]
    assert ids(tree.branch_path(messages=MESSAGES, leaf_id="c2")) == ["a", "b2", "c2"]
    assert ids(tree.branch_path(messages=MESSAGES, leaf_id="x")) == ["x"]


def test_no_leaf_or_an_unknown_one_is_an_empty_branch():
    assert tree.branch_path(messages=MESSAGES, leaf_id=None) == []
    assert tree.branch_path(messages=MESSAGES, leaf_id="gone") == []


def test_a_loop_of_parents_cannot_hang_the_walk():
    looped = [M("p", "q", 0), M("q", "p", 1)]
    assert ids(tree.branch_path(messages=looped, leaf_id="p")) == ["q", "p"]


def test_with_no_branch_recorded_every_message_shows_in_the_order_written():
    same_time = [M("r", None, 7, "assistant"), M("u", None, 7, "user"), M("e", None, 0)]
    assert ids(tree.written_order(messages=same_time)) == ["e", "r", "u"]  # ties: assistant before user


def test_the_versions_of_a_message_are_its_parents_children_oldest_first():
    children = tree.children_of(parents=PARENTS, key=MINUTE.__getitem__)
    assert children["a"] == ["b", "b2"]
    assert children[None] == ["a", "x"]
    assert "c" not in children  # a leaf has no entry


def test_choosing_a_version_shows_its_newest_descendants():
    assert tree.newest_leaf(parents=PARENTS, key=MINUTE.__getitem__, start="a") == "c2"
    assert tree.newest_leaf(parents=PARENTS, key=MINUTE.__getitem__, start="b") == "c"
    assert tree.newest_leaf(parents=PARENTS, key=MINUTE.__getitem__, start="c") == "c"


def test_tree_order_puts_every_message_after_its_parent_and_oldest_first_otherwise():
    # c2's time is before b2's: it still comes after its parent.
    parents = {**PARENTS}
    minute = {**MINUTE, "c2": -1}
    assert tree.tree_order(parents=parents, key=minute.__getitem__) == ["a", "b", "c", "b2", "c2", "x"]


def test_in_tree_order_a_missing_parent_makes_a_first_message_and_a_loop_is_left_out():
    parents = {"a": "gone", "p": "q", "q": "p", "b": "a"}
    order = tree.tree_order(parents=parents, key=lambda k: k)
    assert order == ["a", "b"]  # the caller that must refuse a loop compares the lengths
