"""``python3 manage.py serve``: prepare the database and run chatsite under daphne."""

from __future__ import annotations

import threading

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from chatsite import daphne
from conversations.providers import get_provider
from conversations.providers.local import LocalProvider, bundled_model_path, runtime_available
from conversations.services import replies as reply_services


class Command(BaseCommand):
    help = "Migrate, then serve chatsite with daphne (HTTP and WebSocket)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.CHATSITE_HOST)
        parser.add_argument("--port", type=int, default=settings.CHATSITE_PORT)

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
            provider = get_provider("local")
            if isinstance(provider, LocalProvider) and provider.available:
                if provider.model_path == bundled_model_path():
                    self.stdout.write(
                        "Offline model: SmolLM2-135M-Instruct (a tiny demo model, no key needed)."
                    )
                else:
                    self.stdout.write(f"Offline model: {provider.model_path}")
                # Load it now, off the main thread, so the first reply does not wait for it.
                threading.Thread(target=provider.preload, name="preload-local-model", daemon=True).start()
            elif not runtime_available():
                self.stdout.write(
                    self.style.WARNING("The offline model's runtime (llama-cpp-python) is not installed.")
                )
            else:
                self.stdout.write(self.style.WARNING("The bundled offline model is not installed."))
        for name in ("openai", "anthropic"):
            if name in settings.CHATSITE_PROVIDERS:
                self.stdout.write(f"Provider configured: {name}")
        # daphne with the app's frame limit as its own (chatsite/daphne.py).
        daphne.main(["-b", host, "-p", str(port), "chatsite.asgi:application"])
