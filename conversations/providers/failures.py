"""How an upstream fails: :class:`ProviderError`, with a named ``kind``, made from
HTTP statuses and the words upstreams use for a prompt over the window; and the
redaction of API keys from any text an upstream sends back."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Things that look like API keys in upstream error text ("sk-...", "sk-ant-...").
_KEY_LIKE = re.compile(r"\b(sk|key|api|tok)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)
#: The configured API keys (see :func:`secrets_set`).
_secrets: tuple[str, ...] = ()


def secrets_set(*, keys: Iterable[str]) -> None:
    """The API keys :func:`redact` removes: every configured provider's
    (``providers/__init__.py`` sets them whenever the providers' settings change)."""
    global _secrets
    _secrets = tuple(key for key in keys if len(key) >= 8)


def redact(text: str) -> str:
    """Remove configured API keys (and anything key-shaped) from text that may be
    shown to users or logged: upstreams sometimes echo a key back in errors."""
    for key in _secrets:
        text = text.replace(key, "[redacted]").replace(key[:8], "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


class ProviderError(Exception):
    """An upstream failure with a named kind (see ``protocol.ERROR_KINDS``).

    ``message`` is for logs and tests (technical); the words a user reads are
    made from ``kind``, ``cause``, ``detail``, ``status_code`` and the window
    figures by ``conversations.errors``. ``cause`` is a finer reason within the
    kind (for ``upstream_connect``: ``errors.CONNECT_CAUSES``); ``detail`` is what
    the upstream itself said. Both texts are redacted.

    ``empty_stream``: the upstream answered 200 and then sent no event at all
    (llama.cpp's answer to a prompt longer than its window). ``context_tokens``:
    the model's window, when known (an overflow error may name it);
    ``prompt_tokens``: how long the prompt was counted to be.
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
        empty_stream: bool = False,
        context_tokens: int | None = None,
        prompt_tokens: int | None = None,
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
        self.empty_stream = empty_stream
        self.context_tokens = context_tokens
        self.prompt_tokens = prompt_tokens


def context_length_error(
    *, context_tokens: int | None, prompt_tokens: int | None = None, upstream: bool = False
) -> ProviderError:
    """The ``context_length`` error: the prompt does not fit the model's window.

    ``upstream``: the upstream refused it (chatsite's count said it fits; the
    window it learns from the refusal leaves out more of the history next time);
    its cause is ``conversation``, else ``message`` (the newest turn alone is too
    long). The words are ``errors``'."""
    return ProviderError(
        "context_length",
        f"the prompt ({prompt_tokens or '?'} tokens) does not fit the window "
        f"({context_tokens or '?'} tokens)",
        cause="conversation" if upstream else "message",
        context_tokens=context_tokens,
        prompt_tokens=prompt_tokens,
    )


#: How upstreams word a prompt over the window (OpenAI, vLLM, llama.cpp,
#: llama-cpp-python, Anthropic, Ollama).
_CONTEXT_ERROR = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens"
    r"|exceeds? (the )?(model'?s? )?(context|maximum)",
    re.IGNORECASE,
)
_WINDOW_IN_ERROR = re.compile(r"(?:maximum context length is|context window of)\s+(\d+)", re.IGNORECASE)


def context_error_from(detail: str) -> ProviderError | None:
    """A ``context_length`` error if an upstream's error text says the prompt is over the window."""
    if not _CONTEXT_ERROR.search(detail):
        return None
    found = _WINDOW_IN_ERROR.search(detail)
    error = context_length_error(context_tokens=int(found.group(1)) if found else None, upstream=True)
    error.detail = redact(detail)[:300]
    return error


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
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
    if status_code in (400, 413, 422):
        overflow = context_error_from(detail)
        if overflow is not None:
            overflow.status_code = status_code
            return overflow
    retryable = status_code >= 500 or status_code in (408, 409)
    return ProviderError(
        "upstream_http",
        f"the upstream answered HTTP {status_code}{': ' + detail if detail else ''}",
        retryable=retryable,
        retry_after=parse_retry_after(retry_after),
        status_code=status_code,
        detail=detail,
    )
