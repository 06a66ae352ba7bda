"""Operator commands: export_user_data, purge_archived and serve."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta

import pytest
from daphne.cli import CommandLineInterface
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations.management.commands import serve
from conversations.models import Conversation, Message
from conversations.providers import local as local_provider
from conversations.providers.local import LocalProvider
from conversations.transfer import importing
from tests import factories
from tests.factories import branchy_conversation, plain_conversation
from tests.transfer.test_transfer import normalized


@pytest.fixture
def ann(db):
    return factories.user("ann")


@pytest.fixture
def ben(db):
    return factories.user("ben")


def run(*args, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# --- export_user_data -------------------------------------------------------------------


def test_export_user_data_writes_the_users_conversations_to_stdout(ann, ben):
    branchy_conversation(ann)
    plain_conversation(ann, title="Archived", minutes=30, archived=True)
    plain_conversation(ben, title="Not ann's", minutes=10)
    out, err = run("export_user_data", "ann")
    document = json.loads(out)  # stdout holds the JSON and nothing else
    assert document["format"] == "chatsite" and document["version"] == 1
    assert [c["title"] for c in document["conversations"]] == ["Sorting in Python", "Archived"]
    assert sum(len(c["messages"]) for c in document["conversations"]) == 10
    # The user can import it again, branches and all.
    importing.conversations_import(user=ben, data=out.encode())
    again, _ = run("export_user_data", "ben")
    mine = [c for c in json.loads(again)["conversations"] if c["title"] != "Not ann's"]
    assert normalized({"conversations": mine}) == normalized(document)


def test_export_user_data_to_a_file(ann, tmp_path):
    branchy_conversation(ann)
    target = tmp_path / "ann.json"
    out, err = run("export_user_data", "ann", "--output", str(target))
    assert out == ""
    assert "Exported 1 conversation(s) of ann to" in err
    document = json.loads(target.read_text(encoding="utf-8"))
    assert len(document["conversations"][0]["messages"]) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["ann.json"]  # no temporary file left


def test_export_user_data_of_a_user_without_conversations(ann):
    out, _ = run("export_user_data", "ann")
    assert json.loads(out)["conversations"] == []


def test_export_user_data_of_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("export_user_data", "nobody")


def test_export_user_data_to_an_unwritable_place_leaves_nothing(ann, tmp_path):
    branchy_conversation(ann)
    with pytest.raises(FileNotFoundError):
        run("export_user_data", "ann", "--output", str(tmp_path / "missing-dir" / "ann.json"))
    assert list(tmp_path.iterdir()) == []


# --- purge_archived ----------------------------------------------------------------------


def aged(user, *, title: str, days: float, archived: bool = True, message_days: float | None = None, **reply):
    """A conversation last active ``days`` ago (its messages ``message_days`` ago)."""
    c = factories.conversation(user, title, archived=archived)
    when = timezone.now() - timedelta(days=message_days if message_days is not None else days)
    u = factories.message(c, "question", created_at=when)
    a = factories.message(
        c, "answer", "assistant", parent=u, created_at=when, status=reply.get("status", "complete")
    )
    return factories.lead_to(a, created_at=when, updated_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def aging(ann, ben):
    return {
        "old archived": aged(ann, title="old archived", days=40),
        "old archived, ben's": aged(ben, title="old archived, ben's", days=100),
        "recent archived": aged(ann, title="recent archived", days=10),
        "old not archived": aged(ann, title="old not archived", days=400, archived=False),
        # Renamed (or otherwise changed) recently: that is activity too.
        "old messages, touched lately": aged(
            ann, title="old messages, touched lately", days=2, message_days=60
        ),
        "old, still streaming": aged(ann, title="old, still streaming", days=50, status="streaming"),
    }


def titles() -> set[str]:
    return set(Conversation.objects.values_list("title", flat=True))


def test_purge_dry_run_counts_and_deletes_nothing(aging):
    before = (Conversation.objects.count(), Message.objects.count())
    out, _ = run("purge_archived", "--days", "30", "--dry-run")
    assert out.strip() == (
        "Dry run: would delete 2 archived conversation(s) (4 message(s)) inactive for more than 30 day(s). "
        "Nothing was deleted."
    )
    assert (Conversation.objects.count(), Message.objects.count()) == before


def test_purge_deletes_only_archived_conversations_older_than_the_days(aging):
    out, _ = run("purge_archived", "--days", "30")
    assert (
        out.strip() == "Deleted 2 archived conversation(s) (4 message(s)) inactive for more than 30 day(s)."
    )
    assert titles() == {
        "recent archived",
        "old not archived",
        "old messages, touched lately",
        "old, still streaming",
    }
    assert not Message.objects.filter(conversation__title__startswith="old archived").exists()
    # A second run finds nothing more.
    out, _ = run("purge_archived", "--days", "30")
    assert out.startswith("Deleted 0 archived conversation(s) (0 message(s))")


def test_purge_respects_the_number_of_days(aging):
    run("purge_archived", "--days", "365")
    assert "old archived" in titles() and "old archived, ben's" in titles()
    run("purge_archived", "--days", "90")
    assert "old archived" in titles() and "old archived, ben's" not in titles()
    run("purge_archived", "--days", "5")
    assert titles() == {"old not archived", "old messages, touched lately", "old, still streaming"}
    run("purge_archived", "--days", "0")
    assert titles() == {"old not archived", "old, still streaming"}


def test_purge_handles_branches_and_active_leaves(ann):
    c = branchy_conversation(ann)
    Conversation.objects.filter(pk=c.pk).update(archived=True)  # branchy's dates are in 2025
    out, _ = run("purge_archived", "--days", "30")
    assert "Deleted 1 archived conversation(s) (8 message(s))" in out
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_purge_needs_a_sensible_number_of_days(db):
    with pytest.raises(CommandError, match="--days must be 0 or more"):
        run("purge_archived", "--days", "-1")
    with pytest.raises(CommandError):
        run("purge_archived")


# --- serve --------------------------------------------------------------------------------


def test_serve_preloads_the_offline_model_in_the_background_then_runs_daphne(db, settings, monkeypatch):
    settings.CHATSITE_PROVIDERS = {
        "local": {"BACKEND": "conversations.providers.local.LocalProvider", "MODEL_PATH": "bundled"}
    }
    loaded = threading.Event()
    monkeypatch.setattr(LocalProvider, "preload", lambda self: loaded.set())
    monkeypatch.setattr(LocalProvider, "available", property(lambda self: True))
    monkeypatch.setattr(serve, "call_command", lambda *args, **options: None)  # no migrate, no collectstatic
    daphne_argv: list[list[str]] = []
    monkeypatch.setattr(CommandLineInterface, "run", lambda self, argv: daphne_argv.append(argv))

    out, _ = run("serve", "--port", "8123")

    assert "Offline model: SmolLM2-135M-Instruct" in out
    assert loaded.wait(timeout=10)
    assert daphne_argv and daphne_argv[0][-1] == "chatsite.asgi:application"


def test_serve_names_another_offline_model_by_its_file_and_says_when_the_runtime_is_missing(
    db, settings, monkeypatch, tmp_path
):
    model = tmp_path / "my-model.gguf"
    model.write_bytes(b"GGUF")
    settings.CHATSITE_PROVIDERS = {
        "local": {"BACKEND": "conversations.providers.local.LocalProvider", "MODEL_PATH": str(model)}
    }
    monkeypatch.setattr(LocalProvider, "preload", lambda self: None)
    monkeypatch.setattr(serve, "call_command", lambda *args, **options: None)
    monkeypatch.setattr(CommandLineInterface, "run", lambda self, argv: None)
    monkeypatch.setattr(local_provider, "runtime_available", lambda: True)
    out, _ = run("serve", "--port", "8123")
    assert f"Offline model: {model}" in out and "SmolLM2" not in out
    monkeypatch.setattr(local_provider, "runtime_available", lambda: False)
    monkeypatch.setattr(serve, "runtime_available", lambda: False)
    out, _ = run("serve", "--port", "8123")
    assert "runtime (llama-cpp-python) is not installed" in out
