"""``manage.py fakeupstream``: run the fake LLM upstream until Ctrl-C (``conversations.testing``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from conversations.testing import fakeupstream


class Command(BaseCommand):
    help = "Serve a fake OpenAI/Anthropic-compatible LLM upstream for tests, demos and benchmarks."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        fakeupstream.add_arguments(parser)

    def handle(self, *args, **options):
        try:
            fakeupstream.serve(options, out=self.stdout)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
