"""chatsite settings.

What an operator decides comes from the environment (see ``.env.example`` and
``docs/configuration.md``), read by the helpers in ``chatsite/environment.py``;
nothing else in chatsite reads the environment. The defaults are the embedded
ones (SQLite, the in-memory channel layer, the bundled offline model) in the
production configuration: DEBUG is off unless ``DJANGO_DEBUG`` turns it on, and
then a missing secret stops the process at start-up instead of running
insecurely (``manage.py serve`` makes one). A variable chatsite no longer reads
stops it too, naming its replacement.

Tuning internals are plain Django settings (the "Django-only" section below):
a settings module of your own, or a test's ``settings`` fixture, changes them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chatsite.environment import (
    BASE_DIR,
    FALSE_WORDS,
    SECRET_KEY_FILE,
    TRUE_WORDS,
    data_dir,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_prices,
    env_str,
    removed_check,
)

removed_check()

# Production unless DJANGO_DEBUG turns development on.
DEBUG = env_bool("DJANGO_DEBUG", False)
DATA_DIR = data_dir()

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not DEBUG and SECRET_KEY in {"", "change-me"}:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Set it to a long random value, e.g. the output of "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' (see docs/deploy.md), "
        f"or run python3 manage.py serve, which keeps one in {DATA_DIR / SECRET_KEY_FILE}; "
        "DJANGO_DEBUG=true runs the development configuration instead."
    )
if not SECRET_KEY:
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
#: JSON endpoints answer a CSRF failure in their error envelope (docs/protocol.md).
CSRF_FAILURE_VIEW = "conversations.views.errors.csrf_failure"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "libraries": {"importmap": "chatsite.importmap"},
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'chatsite.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Opening a SQLite connection (and closing the last one, which folds the
    # WAL back into the file) costs ~1-2 ms; keep one per thread instead.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers proceed while a reply is checkpointed; IMMEDIATE
        # transactions take the write lock up front, so a busy database waits
        # (up to the timeout) instead of failing half-way through.
        "transaction_mode": "IMMEDIATE",
        "timeout": env_float("CHATSITE_SQLITE_BUSY_TIMEOUT", 5.0),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # One test database per test process, so concurrent runs never share one.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"chatsite-test-{os.getpid()}.sqlite3")
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = True
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels ---------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Production: compressed, content-hashed names (see chatsite/importmap.py
        # for how ES modules find each other under those names).
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security -------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Django 5.2 has no CSP middleware of its own; chatsite.middleware adds one.
MIDDLEWARE.insert(1, "chatsite.middleware.ContentSecurityPolicyMiddleware")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; frame-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# --- Providers -------------------------------------------------------------
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_MODELS = env_list("OPENAI_MODELS", [])
# A server that serves one request at a time and drops a running stream for the
# next one (llama-cpp-python's server): do not list its models while streaming.
OPENAI_SINGLE_STREAM = env_bool("OPENAI_SINGLE_STREAM", False)
# An endpoint that only answers whole (some proxies and batch gateways): every
# request goes out with streaming off and the answer arrives as one piece.
OPENAI_STREAM = env_bool("OPENAI_STREAM", True)
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_MODELS = env_list("ANTHROPIC_MODELS", [])
ANTHROPIC_STREAM = env_bool("ANTHROPIC_STREAM", True)
CHATSITE_LOCAL_MODEL = env_str("CHATSITE_LOCAL_MODEL", "bundled")
if CHATSITE_LOCAL_MODEL.lower() in TRUE_WORDS | {"bundled"}:
    CHATSITE_LOCAL_MODEL = "bundled"  # "on" can only mean the bundled model
elif CHATSITE_LOCAL_MODEL.lower() not in FALSE_WORDS and not Path(CHATSITE_LOCAL_MODEL).is_file():
    raise ImproperlyConfigured(
        f"CHATSITE_LOCAL_MODEL: there is no file at {CHATSITE_LOCAL_MODEL!r}. Give the path of a GGUF "
        "model file, 'bundled' for the bundled SmolLM2 model, or 'off' (docs/configuration.md)."
    )

_providers: dict[str, dict] = {}
if CHATSITE_LOCAL_MODEL.lower() not in FALSE_WORDS:
    _providers["local"] = {
        "BACKEND": "conversations.providers.local.LocalProvider",
        "MODEL_PATH": CHATSITE_LOCAL_MODEL,
        # A tiny model falls into loops: 1.1 made it run on to the length limit
        # in 1 of 48 sampled replies instead of 9 (docs/configuration.md).
        "REPEAT_PENALTY": env_float("CHATSITE_LOCAL_REPEAT_PENALTY", 1.1),
    }
if OPENAI_BASE_URL or OPENAI_API_KEY:
    _providers["openai"] = {
        "BACKEND": "conversations.providers.openai.OpenAIProvider",
        "BASE_URL": OPENAI_BASE_URL or "https://api.openai.com/v1",
        "API_KEY": OPENAI_API_KEY,
        "MODELS": OPENAI_MODELS,
        "SINGLE_STREAM": OPENAI_SINGLE_STREAM,
        "STREAM": OPENAI_STREAM,
        # Generations at once for this process (0: unlimited); more wait in the queue.
        "CAPACITY": env_int("OPENAI_CAPACITY", 0),
    }
if ANTHROPIC_BASE_URL or ANTHROPIC_API_KEY:
    _providers["anthropic"] = {
        "BACKEND": "conversations.providers.anthropic.AnthropicProvider",
        "BASE_URL": ANTHROPIC_BASE_URL or "https://api.anthropic.com",
        "API_KEY": ANTHROPIC_API_KEY,
        "MODELS": ANTHROPIC_MODELS,
        "STREAM": ANTHROPIC_STREAM,
        # Extended thinking for every model of the provider (tokens; 0 is off).
        "THINKING_BUDGET": env_int("ANTHROPIC_THINKING_BUDGET", 0),
        "CAPACITY": env_int("ANTHROPIC_CAPACITY", 0),
    }
if _providers.get("openai") is not None and env_str("OPENAI_TOKENIZE_URL"):
    _providers["openai"]["TOKENIZE_URL"] = env_str("OPENAI_TOKENIZE_URL")
CHATSITE_PROVIDERS = _providers
CHATSITE_DEFAULT_MODEL = env_str("CHATSITE_DEFAULT_MODEL")
# Model lists are refreshed in the background this often (seconds); a listing
# request gets CHATSITE_MODELS_TIMEOUT seconds to answer.
CHATSITE_MODELS_REFRESH = env_float("CHATSITE_MODELS_REFRESH", 60.0) or 60.0
CHATSITE_MODELS_TIMEOUT = env_float("CHATSITE_MODELS_TIMEOUT", 5.0) or 5.0


def env_context_tokens(name: str, *, allow_zero: bool = False) -> dict[str, int]:
    """``<provider>/<model>=<tokens>,…`` (a model id may hold ``/``, ``:`` and ``.``)."""
    found: dict[str, int] = {}
    for item in env_list(name, []):
        model, sep, tokens = item.rpartition("=")
        least = 0 if allow_zero else 1
        if not sep or "/" not in model.strip() or not tokens.strip().isdigit() or int(tokens) < least:
            raise ImproperlyConfigured(
                f"{name} must be a comma-separated list of <provider>/<model>=<tokens>, not {item!r}"
            )
        found[model.strip()] = int(tokens)
    return found


# The window of a model whose provider does not say (the offline model says:
# its n_ctx; an upstream that names its window in an overflow error is believed).
CHATSITE_CONTEXT_TOKENS = env_int("CHATSITE_CONTEXT_TOKENS", 8192) or 8192
CHATSITE_CONTEXT_TOKENS_MODELS = env_context_tokens("CHATSITE_CONTEXT_TOKENS_MODELS")
# Extended thinking (Anthropic): a budget in tokens per model, over the
# provider's ANTHROPIC_THINKING_BUDGET; 0 is off.
CHATSITE_THINKING_BUDGET_MODELS = env_context_tokens("CHATSITE_THINKING_BUDGET_MODELS", allow_zero=True)

# --- Replies -----------------------------------------------------------------
CHATSITE_FIRST_TOKEN_TIMEOUT = env_float("CHATSITE_FIRST_TOKEN_TIMEOUT", 60.0)
CHATSITE_IDLE_TIMEOUT = env_float("CHATSITE_IDLE_TIMEOUT", 30.0)
CHATSITE_TOTAL_TIMEOUT = env_float("CHATSITE_TOTAL_TIMEOUT", 600.0)
# Replies beyond a model's capacity wait (conversations/realtime/capacity.py): at
# most this many per model (then the lowest-ranked work is shed, a newcomer among
# equals refused: error "overloaded"), each at most this many seconds (off: no limit).
CHATSITE_QUEUE_MAX = env_int("CHATSITE_QUEUE_MAX", 16)
CHATSITE_QUEUE_MAX_WAIT = env_float("CHATSITE_QUEUE_MAX_WAIT", 300.0)
# Connecting to an upstream, writing a request to it, waiting for a free connection.
CHATSITE_HTTP_TIMEOUT = env_float("CHATSITE_HTTP_TIMEOUT", 10.0)
CHATSITE_COALESCE_MS = env_float("CHATSITE_COALESCE_MS", 30.0)
CHATSITE_CHECKPOINT_INTERVAL = env_float("CHATSITE_CHECKPOINT_INTERVAL", 1.0)
CHATSITE_MAX_REPLY_CHARS = env_int("CHATSITE_MAX_REPLY_CHARS", 100_000)
CHATSITE_MAX_PROMPT_CHARS = env_int("CHATSITE_MAX_PROMPT_CHARS", 32_000)
# 0: the provider's default (Anthropic, which requires one: 4096; the offline model: 512).
CHATSITE_MAX_TOKENS = env_int("CHATSITE_MAX_TOKENS", 0)
CHATSITE_RETRY_ATTEMPTS = env_int("CHATSITE_RETRY_ATTEMPTS", 3)
# None: a reply whose viewers all left keeps going and is saved. A number:
# it is stopped that many seconds after the last viewer left.
CHATSITE_DISCONNECT_GRACE = env_float("CHATSITE_DISCONNECT_GRACE", None)
CHATSITE_ALLOW_SIGNUP = env_bool("CHATSITE_ALLOW_SIGNUP", False)
# Per user, counted across every process (from the database).
CHATSITE_MAX_MESSAGES_PER_MINUTE = env_int("CHATSITE_MAX_MESSAGES_PER_MINUTE", 20)
CHATSITE_MAX_CONCURRENT_REPLIES = env_int("CHATSITE_MAX_CONCURRENT_REPLIES", 3)
CHATSITE_HEARTBEAT = env_float("CHATSITE_HEARTBEAT", 25.0)
# Every channel-layer call on a request path (a handshake, a routed stop or
# subscribe, a logout) gives up after this long: a frozen Redis holds up nothing.
CHATSITE_LAYER_TIMEOUT = env_float("CHATSITE_LAYER_TIMEOUT", 1.0)
# Largest file accepted by the conversation import (bytes; 0: no limit).
CHATSITE_MAX_IMPORT_BYTES = env_int("CHATSITE_MAX_IMPORT_BYTES", 50 * 1024 * 1024)
# --- Attachments ----------------------------------------------------------------
# Uploaded files live here (never under a public URL), named by their id.
CHATSITE_ATTACHMENTS_DIR = Path(env_str("CHATSITE_ATTACHMENTS_DIR") or DATA_DIR / "attachments")
# Largest file accepted (bytes), files per message, images' pixels (width x height:
# a larger one, such as a decompression bomb, is refused before it is decoded),
# characters of text taken from a text file or a PDF, uploads not yet sent per user.
CHATSITE_ATTACHMENT_MAX_BYTES = env_int("CHATSITE_ATTACHMENT_MAX_BYTES", 20 * 1024 * 1024)
CHATSITE_ATTACHMENTS_PER_MESSAGE = env_int("CHATSITE_ATTACHMENTS_PER_MESSAGE", 10)
CHATSITE_ATTACHMENT_MAX_PIXELS = env_int("CHATSITE_ATTACHMENT_MAX_PIXELS", 50_000_000)
CHATSITE_ATTACHMENT_MAX_TEXT_CHARS = env_int("CHATSITE_ATTACHMENT_MAX_TEXT_CHARS", 200_000)
CHATSITE_ATTACHMENTS_PENDING_MAX = env_int("CHATSITE_ATTACHMENTS_PENDING_MAX", 50)
# Models that take images when their provider does not say: <provider>/<model>
# ids or globs ("openai/gpt-4o*"). Claude 3 and later always do; the offline model never.
CHATSITE_VISION_MODELS = env_list("CHATSITE_VISION_MODELS", [])
# Models asked with streaming off (the provider's own STREAM option turns it off
# for all its models): <provider>/<model> ids or globs ("openai/batch-*").
CHATSITE_NON_STREAMING_MODELS = env_list("CHATSITE_NON_STREAMING_MODELS", [])
# --- Titles ------------------------------------------------------------------
# After a conversation's first exchange its model (or CHATSITE_TITLE_MODEL) is
# asked for a short title, in the background (conversations/realtime/titles.py).
CHATSITE_AUTO_TITLES = env_bool("CHATSITE_AUTO_TITLES", True)
CHATSITE_TITLE_MODEL = env_str("CHATSITE_TITLE_MODEL")
_title_provider, _, _title_model = CHATSITE_TITLE_MODEL.partition("/")
if CHATSITE_TITLE_MODEL and (not _title_model or _title_provider not in _providers):
    raise ImproperlyConfigured(
        f"CHATSITE_TITLE_MODEL must be '<provider>/<model id>' with a configured provider "
        f"({', '.join(sorted(_providers)) or 'none is configured'}), as /api/models/ lists it; "
        f"not {CHATSITE_TITLE_MODEL!r}"
    )
CHATSITE_TITLE_TIMEOUT = env_float("CHATSITE_TITLE_TIMEOUT", 20.0)
# A title is skipped (the first-line title stays) when this process already has
# this many replies streaming (title requests in flight count too). 0: never.
CHATSITE_TITLE_BUSY_REPLIES = env_int("CHATSITE_TITLE_BUSY_REPLIES", 8)
# --- Moderation ----------------------------------------------------------------
# Off unless one is set: the operator's word and regular-expression lists (a JSON
# or TOML file; read at start-up, a bad file stops the process), and/or an
# OpenAI-compatible moderation endpoint (POST <url>/moderations). Both check the
# user's message before it is sent, and the reply before any text is shown.
CHATSITE_MODERATION_RULES = env_str("CHATSITE_MODERATION_RULES")
CHATSITE_MODERATION_URL = env_str("CHATSITE_MODERATION_URL")
CHATSITE_MODERATION_API_KEY = env_str("CHATSITE_MODERATION_API_KEY")
CHATSITE_MODERATION_MODEL = env_str("CHATSITE_MODERATION_MODEL")
CHATSITE_MODERATION_TIMEOUT = env_float("CHATSITE_MODERATION_TIMEOUT", 5.0)
# When the endpoint fails: "open" lets the text through (with a log line),
# "closed" stops it.
CHATSITE_MODERATION_FAIL = env_str("CHATSITE_MODERATION_FAIL", "open").lower()
if CHATSITE_MODERATION_FAIL not in {"open", "closed"}:
    raise ImproperlyConfigured(
        f"CHATSITE_MODERATION_FAIL must be 'open' or 'closed', not {CHATSITE_MODERATION_FAIL!r}"
    )
# The reply's last characters held back until they are clear of the word and
# regular-expression lists: a match of up to this many characters is never shown.
CHATSITE_MODERATION_HOLD_CHARS = env_int("CHATSITE_MODERATION_HOLD_CHARS", 48)
# Shared links (/s/<token>/) open without a login. Off: only logged-in users see them.
CHATSITE_PUBLIC_SHARES = env_bool("CHATSITE_PUBLIC_SHARES", False)
# Off: no SIGTERM handler of chatsite's own (the server's shutdown path alone).
CHATSITE_SIGTERM_HANDLER = env_bool("CHATSITE_SIGTERM_HANDLER", True)
# --- Usage and metrics ---------------------------------------------------------
# Prices per model (per million tokens, JSON; globs allowed) for the estimated
# cost of usage: the conversation's Usage dialog and the admin's usage page.
CHATSITE_MODEL_PRICES = env_prices("CHATSITE_MODEL_PRICES")
# The Prometheus endpoint /metrics (conversations/metrics.py): off, it answers 404
# and nothing is counted. It is read with this Bearer token, or by a staff login.
CHATSITE_METRICS = env_bool("CHATSITE_METRICS", True)
CHATSITE_METRICS_TOKEN = env_str("CHATSITE_METRICS_TOKEN")
# "json": every log line is one JSON object (chatsite/logformat.py); "text" otherwise.
CHATSITE_LOG_FORMAT = env_str("CHATSITE_LOG_FORMAT", "text").lower() or "text"
if CHATSITE_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"CHATSITE_LOG_FORMAT must be text or json, not {CHATSITE_LOG_FORMAT!r}")
# Where `manage.py serve` listens.
CHATSITE_HOST = env_str("CHATSITE_HOST", "127.0.0.1")
CHATSITE_PORT = env_int("CHATSITE_PORT", 8000)


def frame_bytes_limit(max_prompt_chars: int) -> int:
    """The largest WebSocket frame a client may send: a ``send`` of the longest
    prompt fits even with every character written as a 6-byte JSON escape, and
    never less than 256 KiB (the limit before it was derived)."""
    return max(256 * 1024, 6 * max_prompt_chars + 16 * 1024)


# --- Django-only settings (tuning internals; no environment variable) ----------
# A settings module of your own (``from chatsite.settings import *``) or a
# test's ``settings`` fixture changes them.
CHATSITE_MAX_FRAME_BYTES = frame_bytes_limit(CHATSITE_MAX_PROMPT_CHARS)
# Size of the shared upstream connection pool (one httpx client per process).
CHATSITE_HTTP_MAX_CONNECTIONS = 1000
# The coalescing window widens past CHATSITE_COALESCE_MS while the event loop
# is behind (its lag, or the CPU its thread uses, over a target), up to the
# widest, and narrows again when it keeps up (conversations/realtime/pacing.py).
# The widest equal to CHATSITE_COALESCE_MS: a fixed window.
CHATSITE_COALESCE_MAX_MS = 250.0
CHATSITE_COALESCE_TARGET_LAG_MS = 10.0
CHATSITE_COALESCE_TARGET_BUSY = 0.8
# Before a reply's first token: the first backoff (doubling each try), and the
# longest Retry-After (or backoff) waited for.
CHATSITE_RETRY_BACKOFF = 0.5
CHATSITE_RETRY_MAX_WAIT = 10.0
# A socket re-checks its session on a frame at most this often (a logout closes
# the session's sockets at once through the channel layer anyway).
CHATSITE_SESSION_RECHECK = 10.0
# Each process writes a heartbeat this often; one silent for CHATSITE_WORKER_STALE
# seconds is dead, and its streaming replies become "interrupted".
CHATSITE_WORKER_HEARTBEAT = 5.0
CHATSITE_WORKER_STALE = 30.0

# --- Logging -----------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "chatsite.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if CHATSITE_LOG_FORMAT == "json" else "plain",
        }
    },
    # One handler, on the root logger: configuring the root replaces the handler
    # daphne's command line installs, so every line is written once.
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # One INFO line per upstream request is noise on the hot path.
        "httpx": {"level": "WARNING"},
        "chatsite": {"level": env_str("CHATSITE_LOG_LEVEL", "INFO")},
        "conversations": {"level": env_str("CHATSITE_LOG_LEVEL", "INFO")},
    },
}

TEST_RUNNER = "chatsite.test_runner.PytestTestRunner"
