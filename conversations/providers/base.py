"""The provider interface: a small base class, one module per backend.

A provider turns a conversation into a stream of text. ``stream`` is an async
generator yielding plain ``str`` pieces (the hot path carries nothing else);
usage and the finish reason are written onto the :class:`StreamResult` the
caller passes in. Anything that goes wrong is raised as :class:`ProviderError`
with a named ``kind``; the reply runner decides about retries and statuses.

Cancelling the task that iterates ``stream`` must close the upstream at once:
backends open their HTTP streams with ``async with`` (or, for the local model,
stop generating at the next token).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    provider: str
    name: str
    label: str
    description: str = ""

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "label": self.label, "description": self.description}


@dataclass(slots=True)
class StreamResult:
    """What a provider reports besides text, filled in while streaming."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: Things that look like API keys in upstream error text ("sk-...", "sk-ant-...").
_KEY_LIKE = re.compile(r"\b(sk|key|api|tok)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove configured API keys (and anything key-shaped) from text that may be
    shown to users or logged: upstreams sometimes echo a key back in errors."""
    from django.conf import settings

    for options in getattr(settings, "CHATSITE_PROVIDERS", {}).values():
        key = options.get("API_KEY") or ""
        if len(key) >= 8:
            text = text.replace(key, "[redacted]").replace(key[:8], "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


class ProviderError(Exception):
    """An upstream failure with a named kind (see ``protocol.ERROR_KINDS``).

    ``message`` is for logs and tests (technical); the words a user reads are
    made from ``kind``, ``cause``, ``detail`` and ``status_code`` by
    ``conversations.errors``. ``cause`` is a finer reason within the kind
    (for ``upstream_connect``: ``errors.CONNECT_CAUSES``); ``detail`` is what
    the upstream itself said. Both texts are redacted.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status_code: int | None = None,
        cause: str = "",
        detail: str = "",
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code
        self.cause = cause
        self.detail = redact(detail)


class BaseProvider:
    """Subclass and implement :meth:`list_models` and :meth:`stream`."""

    #: Shown in the model picker next to each model.
    label = "Provider"
    #: The API continues a final assistant message ("prefill"); otherwise a
    #: continuation asks the model in words to go on.
    supports_prefill = False

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.options = options

    @property
    def host(self) -> str:
        """Where the provider's server is, for the words of an error: ``host[:port]``
        of its base URL, without any user info; "" for a provider with no server."""
        base_url = getattr(self, "base_url", "") or ""
        try:
            parts = urlsplit(base_url)
            port = parts.port
        except ValueError:
            return ""
        if not parts.hostname:
            return ""
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{hostname}:{port}" if port else hostname

    async def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError

    async def _list_remote_models(
        self, url: str, headers: dict[str, str], configured: list[str]
    ) -> list[ModelInfo]:
        """Configured models plus those the server lists at ``url`` (OpenAI-style
        ``{"data": [{"id", "display_name"?}]}``). A server that cannot be listed
        raises :class:`ProviderError`; ``catalog`` keeps the last good list."""
        from django.conf import settings

        from .http import get_client

        timeout = settings.CHATSITE_MODELS_TIMEOUT
        try:
            response = await get_client().get(url, headers=headers, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ProviderError(
                "upstream_connect", f"could not connect to list models ({type(exc).__name__})"
            ) from None
        except httpx.TimeoutException:
            raise ProviderError(
                "upstream_timeout", f"listing models got no answer within {timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                "upstream_connect", f"the connection broke while listing models ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise http_error(response.status_code, response.text, response.headers.get("retry-after"))
        try:
            items = response.json().get("data", [])
            if not isinstance(items, list):
                raise ValueError("'data' is not a list")
        except (ValueError, AttributeError):
            raise ProviderError("upstream_malformed", "the model list is not the JSON expected") from None
        found: dict[str, str] = {name: name for name in configured}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                found.setdefault(item["id"], str(item.get("display_name") or item["id"]))
        return [ModelInfo(self.name, name, label) for name, label in found.items()]

    def configured_models(self) -> list[ModelInfo]:
        """The models offered before the first listing succeeds (``MODELS``)."""
        return [ModelInfo(self.name, name, name) for name in self.options.get("MODELS") or []]

    def stream(
        self,
        *,
        model: str,
        messages: list[ChatMessage],
        result: StreamResult,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        raise NotImplementedError

    async def aclose(self) -> None:  # pragma: no cover - optional hook
        return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from datetime import UTC, datetime
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)


def http_error(status_code: int, detail: str, retry_after: str | None = None) -> ProviderError:
    """Map an upstream HTTP error status to a ProviderError."""
    detail = detail.strip()[:300]
    if status_code == 429:
        return ProviderError(
            "rate_limited",
            f"the upstream is rate limiting requests (HTTP 429){': ' + detail if detail else ''}",
            retryable=True,
            retry_after=parse_retry_after(retry_after),
            status_code=429,
            detail=detail,
        )
    retryable = status_code >= 500 or status_code in (408, 409)
    return ProviderError(
        "upstream_http",
        f"the upstream answered HTTP {status_code}{': ' + detail if detail else ''}",
        retryable=retryable,
        retry_after=parse_retry_after(retry_after),
        status_code=status_code,
        detail=detail,
    )
