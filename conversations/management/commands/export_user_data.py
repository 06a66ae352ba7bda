"""``python3 manage.py export_user_data <username> [--output FILE]``: a user's conversations as JSON."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from conversations.transfer import exporting


class Command(BaseCommand):
    help = (
        "Export all of a user's conversations (every branch) in chatsite's JSON format "
        "(docs/export-format.md), which the user can import again. Writes to stdout unless --output."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, username: str, output: str | None, **options) -> None:
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        count = user.conversations.count()
        chunks = exporting.user_export_json_chunks(user=user)
        if not output:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            self.stdout.flush()
            return
        path = Path(output)
        # Written next to the target and moved into place: never a half-written file.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                for chunk in chunks:
                    file.write(chunk)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.stderr.write(f"Exported {count} conversation(s) of {username} to {path}.")
