"""What an operator scrapes at ``/metrics`` (Prometheus' text format, by
``prometheus-client``): replies started and ended, their timings, Stop's
latency to the upstream's close, live replies and the queue, upstream errors,
WebSocket connections.

Nothing here runs per token: a reply is counted when it starts and when it
ends (its timings and token counts come from its finish), a stop once, a
socket when it opens and closes; gauges are read when scraped. With
``CHATSITE_METRICS`` off every hook returns at its first line and ``/metrics``
answers 404.

Each process counts its own replies: scrape every daphne on its own port
(docs/deploy.md, "Metrics").
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

#: This module's registry (not the library's global one, so tests and a second
#: import see only chatsite's metrics), with the process' CPU and memory.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

MODEL = ("provider", "model")

replies_started = Counter(
    "chatsite_replies_started", "Replies started, by provider and model.", MODEL, registry=REGISTRY
)
replies_ended = Counter(
    "chatsite_replies_ended",
    "Replies ended, by status (complete, stopped, error, interrupted; abandoned: never stored), error kind.",
    (*MODEL, "status", "error_kind"),
    registry=REGISTRY,
)
prompt_tokens = Counter(
    "chatsite_prompt_tokens",
    "Prompt tokens of ended replies (as the upstream reported or as counted).",
    MODEL,
    registry=REGISTRY,
)
completion_tokens = Counter(
    "chatsite_completion_tokens",
    "Completion tokens of ended replies; a stopped reply's are what was generated until the stop.",
    MODEL,
    registry=REGISTRY,
)
time_to_first_token = Histogram(
    "chatsite_time_to_first_token_seconds",
    "From a reply's start to its first token (reasoning or answer).",
    MODEL,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
    registry=REGISTRY,
)
tokens_per_second = Histogram(
    "chatsite_tokens_per_second",
    "A reply's completion tokens a second after its first.",
    MODEL,
    buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000),
    registry=REGISTRY,
)
stop_close = Histogram(
    "chatsite_stop_to_upstream_close_seconds",
    "From a user's stop to the upstream stream's close.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
upstream_errors = Counter(
    "chatsite_upstream_errors",
    "Upstream failures by kind (each try counts, retried or not).",
    ("provider", "kind"),
    registry=REGISTRY,
)
websocket_connections = Gauge("chatsite_websocket_connections", "Open chat WebSockets.", registry=REGISTRY)
live_replies = Gauge("chatsite_live_replies", "Replies streaming in this process.", registry=REGISTRY)
queue_length = Gauge("chatsite_queue_length", "Replies waiting for capacity.", registry=REGISTRY)

#: Where each read-when-scraped gauge gets its value.
_GAUGES = {"live_replies": live_replies, "queue_length": queue_length}
live_replies.set_function(lambda: 0)
queue_length.set_function(lambda: 0)


def gauge_source(*, name: str, source: Callable[[], float]) -> None:
    """Read gauge ``name`` ("live_replies", "queue_length") from ``source`` at each scrape,
    e.g. ``gauge_source(name="queue_length", source=capacity.capacity_waiting)``."""
    _GAUGES[name].set_function(source)


#: Distinct ``model`` label values kept; a model id past them is counted as "other".
#: A user may name any model id a provider accepts, and every distinct label value
#: is a series held in memory until the process ends: this bounds them.
MAX_MODELS = 100
_models: set[tuple[str, str]] = set()


def _model(provider: str, model: str) -> str:
    key = (provider, model)
    if key in _models:
        return model
    if len(_models) >= MAX_MODELS:
        return "other"
    _models.add(key)
    return model


def metrics_on() -> bool:
    return bool(settings.CHATSITE_METRICS)


def reply_started(*, provider: str, model: str) -> None:
    if not settings.CHATSITE_METRICS:
        return
    replies_started.labels(provider, _model(provider, model)).inc()


def reply_ended(
    *,
    provider: str,
    model: str,
    status: str,
    error_kind: str,
    ttft_ms: float | None,
    tokens_per_s: float | None,
    prompt: int | None,
    completion: int | None,
) -> None:
    if not settings.CHATSITE_METRICS:
        return
    model = _model(provider, model)
    replies_ended.labels(provider, model, status, error_kind).inc()
    if prompt:
        prompt_tokens.labels(provider, model).inc(prompt)
    if completion:
        completion_tokens.labels(provider, model).inc(completion)
    if ttft_ms is not None:
        time_to_first_token.labels(provider, model).observe(ttft_ms / 1000)
    if tokens_per_s is not None:
        tokens_per_second.labels(provider, model).observe(tokens_per_s)


def stop_closed(*, seconds: float) -> None:
    if settings.CHATSITE_METRICS:
        stop_close.observe(seconds)


def upstream_error(*, provider: str, kind: str) -> None:
    if settings.CHATSITE_METRICS:
        upstream_errors.labels(provider, kind).inc()


def socket_opened() -> bool:
    """Count an accepted socket; True if it was counted (then call :func:`socket_closed`)."""
    if not settings.CHATSITE_METRICS:
        return False
    websocket_connections.inc()
    return True


def socket_closed() -> None:
    websocket_connections.dec()


def metrics_text() -> bytes:
    """Everything, in Prometheus' text format."""
    return generate_latest(REGISTRY)
