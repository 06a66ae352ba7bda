"""What a failed reply says to a person: the one place for its words.

A reply that ends in ``error`` keeps a machine-readable kind (one of
``protocol.ERROR_KINDS``) in its data; what the user reads, the sentence under
the reply and the short badge on it, is made here, from the kind and the facts
the failure came with (the provider's host, the HTTP status, what the upstream
said, the timeout that ran out). The page shows these words as the server
sends them and keeps no copy of its own.

The host is the provider's ``host:port`` (never the user info of its URL), and
whatever the upstream said has been redacted (``providers.failures.redact``): no
sentence made here contains a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: The short badge on a failed reply, by error kind. The full sentence is
#: :func:`error_describe`'s; the kind itself is the badge's tooltip.
ERROR_LABELS: dict[str, str] = {
    "rate_limited": "Rate limited",
    "upstream_http": "Server error",
    "upstream_connect": "Can't connect",
    "upstream_stream": "Connection broke",
    "upstream_error": "Model error",
    "timeout_first_token": "No answer",
    "timeout_idle": "Stalled",
    "timeout_total": "Took too long",
    "length_limit": "Cut off",
    "context_length": "Too long",
    "model_unavailable": "Model unavailable",
    "overloaded": "Busy",
    "moderation": "Stopped by a rule",
    "internal": "Failed",
}

#: Why a connection could not be made, as ``providers.sse`` classifies it.
CONNECT_CAUSES = ("refused", "dns", "timeout", "tls", "unreachable", "disconnected", "pool", "other")


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one failure; every field may be empty."""

    host: str = ""  # "127.0.0.1:9", "api.openai.com"; "" for the offline model
    cause: str = ""  # a finer reason within the kind, e.g. "refused"
    detail: str = ""  # what the upstream said (redacted)
    status_code: int | None = None
    retry_after: float | None = None
    limit: float | None = None  # the timeout, the length limit or the window that was reached
    tokens: int | None = None  # how long the prompt was counted to be
    model: str = ""
    has_text: bool = False  # the reply kept some text
    waiting: int | None = None  # how many others waited for the model


def _server(f: Facts) -> str:
    return f"the model server at {f.host}" if f.host else "the model"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _said(f: Facts) -> str:
    detail = " ".join(f.detail.split()).rstrip(".")
    return f" It said: “{detail[:300]}”." if detail else ""


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g} s" if value < 120 else f"{value / 60:g} min"


def _again(f: Facts) -> str:
    """What to do next, depending on whether the reply kept any text."""
    if f.has_text:
        return " The text so far is kept: press Continue to go on, or Regenerate to start over."
    return " Press Regenerate to try again."


def _rate_limited(f: Facts) -> str:
    wait = f" (it asked to wait {_seconds(f.retry_after)})" if f.retry_after else ""
    return f"{_cap(_server(f))} is limiting how many requests it takes{wait}. Wait a minute, then try again."


def _upstream_http(f: Facts) -> str:
    code = f.status_code
    server = _cap(_server(f))
    if code in (401, 403):
        return (
            f"{server} refused the request (HTTP {code}): the API key is missing, wrong or not "
            f"allowed to use this model.{_said(f)} Check the provider's API key setting."
        )
    if code == 404:
        return (
            f"{server} has no such model or endpoint (HTTP 404).{_said(f)} "
            "Check the model name and the provider's base URL."
        )
    if code is not None and code >= 500:
        return f"{server} had a problem of its own (HTTP {code}).{_said(f)} Try again in a moment."
    shown = f"HTTP {code}" if code is not None else "an HTTP error"
    return f"{server} refused the request ({shown}).{_said(f)} Try another model, or a shorter message."


def _upstream_connect(f: Facts) -> str:
    host = f.host or "the model server"
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    words = {
        "refused": f"Couldn't reach the model server at {host}. Is it running?",
        "dns": f"Couldn't find the model server “{name}”: the name does not resolve. "
        "Check the provider's base URL and your network.",
        "timeout": f"The model server at {host} did not answer the connection in time. "
        "Is it up, and is the address right?",
        "tls": f"Couldn't open a secure (TLS) connection to {host}. Check whether the provider's base URL "
        "should start with http:// or https://, and the server's certificate.",
        "unreachable": f"The network has no route to {host}. Check the address and your network.",
        "disconnected": f"The model server at {host} closed the connection before answering. "
        "Try again; if it keeps happening, look at the server's log.",
        "pool": f"Every connection to {host} is busy. Wait for a reply to finish, then try again.",
    }
    return words.get(f.cause, f"Couldn't connect to the model server at {host}. Is it running?")


def _upstream_stream(f: Facts) -> str:
    server = _server(f)
    what = {
        "ended": f"{_cap(server)} ended the reply before it was finished.",
        "malformed": f"{_cap(server)} sent something that is not a valid reply stream.",
        "not_sse": f"{_cap(server)} did not answer with a reply stream. Is the provider's base URL right?",
        "empty": f"{_cap(server)} answered with an empty reply.",
    }.get(f.cause, f"The connection to {server} broke in the middle of the reply.")
    return what + _again(f)


def _upstream_error(f: Facts) -> str:
    if f.cause == "malformed":
        return f"{_cap(_server(f))} answered with something chatsite cannot read.{_said(f)}"
    if f.cause == "overloaded":
        return f"{_cap(_server(f))} is overloaded right now.{_said(f)} Wait a moment, then try again."
    return f"{_cap(_server(f))} reported an error while writing this reply.{_said(f)}" + _again(f)


def _timeout_first_token(f: Facts) -> str:
    within = f" within {_seconds(f.limit)}" if f.limit else " in time"
    return (
        f"{_cap(_server(f))} sent no text{within}. It may be busy or still loading the model: "
        "try again, or raise CHATSITE_FIRST_TOKEN_TIMEOUT."
    )


def _timeout_idle(f: Facts) -> str:
    pause = f" for {_seconds(f.limit)}" if f.limit else ""
    return f"{_cap(_server(f))} stopped sending text{pause}, so the reply was ended." + _again(f)


def _timeout_total(f: Facts) -> str:
    limit = f" of {_seconds(f.limit)}" if f.limit else ""
    return (
        f"The reply reached the time limit{limit} for one reply (CHATSITE_TOTAL_TIMEOUT) and was ended."
        + (" The text so far is kept: press Continue to go on." if f.has_text else "")
    )


def _length_limit(f: Facts) -> str:
    if f.cause == "chars":
        size = f" of {int(f.limit):,} characters" if f.limit else ""
        return f"The reply reached chatsite's length limit{size} (CHATSITE_MAX_REPLY_CHARS)."
    if f.cause == "window":
        window = f"{int(f.limit):,}-token " if f.limit else ""
        return (
            f"The reply filled the model's {window}context window and was cut short. Press Continue "
            "to go on, or start a new conversation for a long answer."
        )
    if f.cause == "server_cut":
        return (
            f"{_cap(_server(f))} cut the reply short before any length limit that was set (its context "
            "window is probably full). Press Continue to go on, or start a new conversation."
        )
    size = f" ({int(f.limit):,} tokens)" if f.limit else ""
    return f"The model stopped at its length limit{size}: the reply is cut short. Press Continue to go on."


def _context_length(f: Facts) -> str:
    window = f"its {int(f.limit):,}-token context window" if f.limit else "its context window"
    size = f" (about {f.tokens:,} tokens)" if f.tokens else ""
    if f.cause == "conversation":
        return (
            f"This conversation is too long for the model{size}: it does not fit {window}. Send the "
            "message again (older messages will be left out), shorten it, or start a new conversation."
        )
    return (
        f"The message is too long for the model{size}: it does not fit {window}. "
        "Shorten the message, or start a new conversation."
    )


def _model_unavailable(f: Facts) -> str:
    name = f"“{f.model}”" if f.model else "this model"
    return f"The model {name} is not available on this server. Pick another model and try again."


def _overloaded(f: Facts) -> str:
    waiting = f" ({f.waiting} waiting)" if f.waiting else ""
    return f"The model is busy right now{waiting}. Try again in a minute."


def _moderation(f: Facts) -> str:
    if f.cause == "unavailable":
        return (
            "This reply was stopped because the content check of this server did not answer, and its "
            "operator lets no reply through unchecked. Try again in a moment."
        )
    return "This reply was stopped because it matched a content rule set by the operator."


def moderation_rule_note(*, rule: str) -> str:
    """What staff read after a moderated reply's words: which rule stopped it
    (never in what other users see: a share, a frame to a user who is not staff)."""
    return f" (Staff only: the rule was “{rule}”.)" if rule else ""


def _internal(f: Facts) -> str:
    return (
        "Something went wrong inside chatsite while writing this reply. Try again; "
        "if it keeps happening, the server's log has the details."
    )


_WORDS: dict[str, Callable[[Facts], str]] = {
    "rate_limited": _rate_limited,
    "upstream_http": _upstream_http,
    "upstream_connect": _upstream_connect,
    "upstream_stream": _upstream_stream,
    "upstream_error": _upstream_error,
    "timeout_first_token": _timeout_first_token,
    "timeout_idle": _timeout_idle,
    "timeout_total": _timeout_total,
    "length_limit": _length_limit,
    "context_length": _context_length,
    "model_unavailable": _model_unavailable,
    "overloaded": _overloaded,
    "moderation": _moderation,
    "internal": _internal,
}

#: Every error kind that has words (a test checks these are ``protocol.ERROR_KINDS``).
DESCRIBED_KINDS = frozenset(_WORDS)


def error_describe(
    *,
    kind: str,
    host: str = "",
    cause: str = "",
    detail: str = "",
    status_code: int | None = None,
    retry_after: float | None = None,
    limit: float | None = None,
    tokens: int | None = None,
    model: str = "",
    has_text: bool = False,
    waiting: int | None = None,
) -> str:
    """The sentence a person reads for a failed reply: what happened and what to do.

    An unknown kind (an imported reply, say) gets the words of ``internal``.
    """
    facts = Facts(
        host=host,
        cause=cause,
        detail=detail,
        status_code=status_code,
        retry_after=retry_after,
        limit=limit,
        tokens=tokens,
        model=model,
        has_text=has_text,
        waiting=waiting,
    )
    return _WORDS.get(kind, _internal)(facts)


def error_label(*, kind: str) -> str:
    """The short badge for a failed reply of ``kind``."""
    return ERROR_LABELS.get(kind, ERROR_LABELS["internal"])
