"""The process environment: how settings read it, and what ``manage.py`` adds first.

Settings read every value through the ``env_*`` helpers here. Before settings are
loaded, ``manage.py`` calls :func:`prepare`, which fills in what a command needs
on a machine nobody has configured:

- ``manage.py serve`` (the newcomer's command) creates a secret key on first run,
  keeps it in the data directory (``secret_key``, mode 0600) and reuses it; it
  serves plain HTTP, so its cookies are not marked ``Secure`` unless
  ``DJANGO_SECURE_COOKIES`` says so.
- Any other ``manage.py`` command reuses that key file if it exists.
- ``manage.py test`` runs the suite in the development configuration (the
  production configuration is tested by the tests that start real servers).

A process started any other way (``daphne chatsite.asgi:application``, the
systemd unit) gets none of this: with DEBUG off and no ``DJANGO_SECRET_KEY`` it
stops at start-up and says what to set.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY_FILE = "secret_key"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in {"none", "off", "never"}:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from exc
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from exc
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def data_dir() -> Path:
    """Where chatsite keeps its files (``CHATSITE_DATA_DIR``, default ``var/``)."""
    return Path(env_str("CHATSITE_DATA_DIR") or BASE_DIR / "var")


def secret_key_from_file(*, create: bool) -> str:
    """The key kept in the data directory; made (mode 0600) if missing and ``create``."""
    path = data_dir() / SECRET_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key or not create:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # O_EXCL: two first runs at once never write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def prepare(argv: list[str]) -> None:
    """Fill in the environment a ``manage.py`` command needs (see the module's doc)."""
    command = argv[1] if len(argv) > 1 else ""
    if command == "test":
        os.environ.setdefault("DJANGO_DEBUG", "true")
    if command == "serve":
        os.environ.setdefault("DJANGO_SECURE_COOKIES", "false")
    if env_str("DJANGO_SECRET_KEY") or env_bool("DJANGO_DEBUG", False):
        return
    key = secret_key_from_file(create=command == "serve")
    if key:
        os.environ["DJANGO_SECRET_KEY"] = key
