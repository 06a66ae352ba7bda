"""``python3 manage.py serve``: prepare the database and run chatsite under daphne."""

from __future__ import annotations

import os
import threading

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from conversations.providers import get_provider
from conversations.providers.local import LocalProvider, bundled_model_path, runtime_available
from conversations.services import replies as reply_services


class Command(BaseCommand):
    help = "Migrate, then serve chatsite with daphne (HTTP and WebSocket)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("CHATSITE_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("CHATSITE_PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        swept = reply_services.reply_sweep_dead_workers()
        if swept:
            self.stdout.write(f"Marked {len(swept)} reply(ies) left by a stopped server as interrupted.")
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"chatsite is starting on {url}"))
        if not get_user_model().objects.exists():
            self.stdout.write(
                f"No account yet: open {url}accounts/signup/ to create the first one "
                "(it becomes the administrator), or run: python3 manage.py createsuperuser"
            )
        if "local" in settings.CHATSITE_PROVIDERS:
            if bundled_model_path() and runtime_available():
                self.stdout.write("Offline model: SmolLM2-135M-Instruct (a tiny demo model, no key needed).")
                # Load it now, off the main thread, so the first reply does not wait for it.
                provider = get_provider("local")
                if isinstance(provider, LocalProvider):
                    threading.Thread(target=provider.preload, name="preload-local-model", daemon=True).start()
            else:
                self.stdout.write(self.style.WARNING("The bundled offline model is not installed."))
        for name in ("openai", "anthropic"):
            if name in settings.CHATSITE_PROVIDERS:
                self.stdout.write(f"Provider configured: {name}")
        from daphne.cli import CommandLineInterface

        CommandLineInterface().run(
            ["-b", host, "-p", str(port), *daphne_frame_limit(), "chatsite.asgi:application"]
        )


def daphne_frame_limit() -> list[str]:
    """daphne's own cap on a received WebSocket message (and frame), set to
    CHATSITE_MAX_FRAME_BYTES: one limit, enforced before a byte of a larger frame is
    buffered (docs/protocol.md says what a client gets above it)."""
    size = str(settings.CHATSITE_MAX_FRAME_BYTES)
    return ["--websocket-max-message-size", size, "--websocket-max-frame-size", size]
