"""``python3 manage.py purge_attachments [--hours N] [--dry-run]``: delete uploads that were never sent."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from conversations.services.attachments import attachments_purge


class Command(BaseCommand):
    help = (
        "Delete attachments that are on no message (uploaded and never sent, or whose conversations "
        "were deleted) and older than --hours hours (default 24), with their files."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--hours", type=float, default=24.0, help="Keep uploads younger than N hours.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, hours: float, dry_run: bool, **options) -> None:
        if hours < 0:
            raise CommandError("--hours must be 0 or more.")
        count = attachments_purge(older_than=timedelta(hours=hours), dry_run=dry_run)
        if dry_run:
            self.stdout.write(f"Dry run: would delete {count} unsent attachment(s). Nothing was deleted.")
        else:
            self.stdout.write(f"Deleted {count} unsent attachment(s) older than {hours:g} hour(s).")
