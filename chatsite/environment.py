"""The process environment: how settings read it, and what ``manage.py`` adds first.

Settings read every value through the ``env_*`` helpers here (standard library
only: ``chatsite/bootstrap.py`` reads its few variables with them too, before
Django is installed). One vocabulary turns things on and off everywhere:
:data:`TRUE_WORDS` and :data:`FALSE_WORDS` for a yes/no variable, and
:data:`OFF_WORDS` for a number or a model that can be turned off (there ``0`` is
the number zero, not "off").

A variable chatsite no longer reads stops the process at start-up with the
name of what replaced it (:data:`REMOVED`, :func:`removed_check`): an operator
upgrading with an old env file is told, rather than silently ignored.

Before settings are loaded, ``manage.py`` calls :func:`prepare`, which fills in
what a command needs on a machine nobody has configured:

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
from collections.abc import Mapping
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY_FILE = "secret_key"
#: "Off" wherever something can be turned off: a number (a timeout, a grace
#: period, a frame budget), the local model, a yes/no variable.
OFF_WORDS = frozenset({"off", "false", "no", "none", "never"})
#: A yes/no variable (and the local model) also takes ``0`` for off...
FALSE_WORDS = OFF_WORDS | {"0"}
#: ...and these for on.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

#: Variables chatsite read once, and what to set instead.
REMOVED: dict[str, str] = {
    **dict.fromkeys(
        ("CHATSITE_HTTP_CONNECT_TIMEOUT", "CHATSITE_HTTP_WRITE_TIMEOUT", "CHATSITE_HTTP_POOL_TIMEOUT"),
        "set CHATSITE_HTTP_TIMEOUT instead (one timeout for connecting to an upstream, "
        "writing to it and waiting for a free connection)",
    ),
    "ANTHROPIC_MAX_TOKENS": "set CHATSITE_MAX_TOKENS instead (it applies to every provider; "
    "left at 0, Anthropic requests still ask for 4096)",
    "CHATSITE_SKIP_LOCAL_MODEL": "set CHATSITE_LOCAL_MODEL=off instead (the bootstrap then "
    "installs no offline model either)",
    "CHATSITE_MAX_FRAME_BYTES": "remove it: the frame limit now follows CHATSITE_MAX_PROMPT_CHARS "
    "(docs/configuration.md), and daphne gets it from `python -m chatsite.daphne`",
    "CHATSITE_COALESCE_FRAMES_PER_S": "remove it: the coalescing window now follows the load the "
    "process measures (its event loop's lag and CPU), not a frame budget (docs/configuration.md)",
    **dict.fromkeys(
        (
            "CHATSITE_COALESCE_MAX_MS",
            "CHATSITE_RETRY_BACKOFF",
            "CHATSITE_RETRY_MAX_WAIT",
            "CHATSITE_SESSION_RECHECK",
            "CHATSITE_WORKER_HEARTBEAT",
            "CHATSITE_WORKER_STALE",
            "CHATSITE_HTTP_MAX_CONNECTIONS",
        ),
        "remove it: this is now a Django setting of the same name, "
        'for a settings module of your own (docs/configuration.md, "Django-only settings")',
    ),
}


class SettingError(Exception):
    """A variable whose value chatsite cannot use (the message says what to set)."""


def removed_check(environ: Mapping[str, str] | None = None) -> None:
    """Stop, naming the replacement, when a removed variable is set (an empty value is no setting)."""
    env = os.environ if environ is None else environ
    found = [f"{name}: {REMOVED[name]}" for name in sorted(REMOVED) if env.get(name, "").strip()]
    if found:
        raise SettingError(
            "chatsite no longer reads "
            + ("this variable" if len(found) == 1 else "these variables")
            + ":\n  "
            + "\n  ".join(found)
        )


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
    raise SettingError(f"{name} must be on or off (true or false, 1 or 0), not {raw!r}")


def env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in OFF_WORDS:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingError(f"{name} must be a number, not {raw!r}") from exc
    if value < 0:
        raise SettingError(f"{name} must not be negative")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingError(f"{name} must be a whole number, not {raw!r}") from exc
    if value < 0:
        raise SettingError(f"{name} must not be negative")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_prices(name: str) -> dict[str, dict[str, str]]:
    """Prices per model, as JSON: ``{"openai/gpt-4o": {"input": 2.5, "output": 10}, …}``
    (per million tokens; a key may be a glob such as ``"openai/gpt-4o*"``). The
    numbers are kept as the operator wrote them (strings), for exact decimals."""
    import json
    from decimal import Decimal, InvalidOperation

    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    example = '{"openai/gpt-4o": {"input": 2.50, "output": 10.00}}'
    try:
        value = json.loads(raw, parse_float=str, parse_int=str)
    except ValueError as exc:
        raise SettingError(f"{name} must be JSON such as {example}, not {raw!r}") from exc
    if not isinstance(value, dict):
        raise SettingError(f"{name} must be a JSON object such as {example}")
    prices: dict[str, dict[str, str]] = {}
    for model, price in value.items():
        if "/" not in model or not isinstance(price, dict) or set(price) - {"input", "output"}:
            raise SettingError(
                f"{name}: each key is <provider>/<model> (a glob is fine) and each value "
                f'{{"input": <price>, "output": <price>}} per million tokens, not {model!r}: {price!r}'
            )
        for side in ("input", "output"):
            amount = price.get(side, "0")
            try:
                if not isinstance(amount, str) or Decimal(amount) < 0 or not Decimal(amount).is_finite():
                    raise InvalidOperation
            except InvalidOperation as exc:
                raise SettingError(f"{name}: the {side} price of {model!r} must be a number >= 0") from exc
            prices.setdefault(model, {})[side] = amount
    return prices


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
        # The suite's conversations keep their first-line titles (a title made by
        # the fake upstream would race the tests that read them); the tests of
        # automatic titles turn them on.
        os.environ.setdefault("CHATSITE_AUTO_TITLES", "off")
    if command == "serve":
        os.environ.setdefault("DJANGO_SECURE_COOKIES", "false")
    if env_str("DJANGO_SECRET_KEY") or env_bool("DJANGO_DEBUG", False):
        return
    key = secret_key_from_file(create=command == "serve")
    if key:
        os.environ["DJANGO_SECRET_KEY"] = key
