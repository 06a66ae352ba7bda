"""``python3 manage.py purge_archived --days N [--dry-run]``: delete old archived conversations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from conversations.models import Conversation, Message

BATCH = 500


@dataclass(frozen=True, slots=True)
class Purge:
    conversations: int
    messages: int


def purgeable(*, days: int) -> QuerySet[Conversation]:
    """Archived conversations with no activity (a change, or a message) in the last ``days`` days.

    A conversation with a reply still streaming is never purgeable.
    """
    cutoff = timezone.now() - timedelta(days=days)
    return (
        Conversation.objects.filter(archived=True)
        .annotate(last_activity=Greatest("updated_at", Coalesce(Max("messages__created_at"), "updated_at")))
        .filter(last_activity__lt=cutoff)
        .exclude(Q(messages__status=Message.Status.STREAMING))
    )


def archived_purge(*, days: int, dry_run: bool = False) -> Purge:
    ids = list(purgeable(days=days).order_by("updated_at").values_list("pk", flat=True))
    if dry_run:
        return Purge(len(ids), Message.objects.filter(conversation_id__in=ids).count() if ids else 0)
    conversations = messages = 0
    for start in range(0, len(ids), BATCH):
        with transaction.atomic():
            # Checked again here: one may have been unarchived or used since.
            chunk = (
                purgeable(days=days).filter(pk__in=ids[start : start + BATCH]).values_list("pk", flat=True)
            )
            _, deleted = Conversation.objects.filter(pk__in=list(chunk)).delete()
        conversations += deleted.get(Conversation._meta.label, 0)
        messages += deleted.get(Message._meta.label, 0)
    return Purge(conversations, messages)


class Command(BaseCommand):
    help = (
        "Delete archived conversations (with their messages) whose last activity is older than "
        "--days days. Conversations that are not archived are never touched."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days", type=int, required=True, help="Keep anything active in the last N days."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, days: int, dry_run: bool, **options) -> None:
        if days < 0:
            raise CommandError("--days must be 0 or more.")
        result = archived_purge(days=days, dry_run=dry_run)
        what = f"{result.conversations} archived conversation(s) ({result.messages} message(s))"
        since = f"inactive for more than {days} day(s)"
        if dry_run:
            self.stdout.write(f"Dry run: would delete {what} {since}. Nothing was deleted.")
        else:
            self.stdout.write(f"Deleted {what} {since}.")
