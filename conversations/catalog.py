"""The models every provider offers, listed in the background.

Listing a server's models never happens on a request's path: one task per
process (started by the first reader, on its event loop) asks each provider
every ``CHATSITE_MODELS_REFRESH`` seconds, and readers get the last good list
at once. A failed listing keeps that list and records the provider's state
(unreachable since when, the error's kind), which ``/api/models/`` shows. A
provider with the ``SINGLE_STREAM`` option (a server that serves one request
at a time and interrupts a running stream for the next one, like
llama-cpp-python's) is not listed while this process streams from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.core.signals import setting_changed

from conversations.errors import error_describe
from conversations.providers import BaseProvider, ModelInfo, ProviderError, get_providers
from conversations.realtime.registry import registry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProviderListing:
    """One provider's last good model list and how its last listing went."""

    provider: BaseProvider
    models: list[ModelInfo]
    #: None until the first listing ends; then whether the last one succeeded.
    reachable: bool | None = None
    unreachable_since: datetime | None = None
    error_kind: str | None = None
    error: str | None = None
    listed_at: datetime | None = None
    checked_at: datetime | None = None
    #: ``time.monotonic()`` of the last attempt (or skip), for scheduling.
    attempted: float | None = None
    skipped: int = 0

    def as_dict(self) -> dict:
        def iso(when: datetime | None) -> str | None:
            return when.isoformat(timespec="seconds") if when else None

        return {
            "label": self.provider.label,
            "reachable": self.reachable,
            "unreachable_since": iso(self.unreachable_since),
            "error_kind": self.error_kind,
            "error": self.error,
            "listed_at": iso(self.listed_at),
            "checked_at": iso(self.checked_at),
        }


@dataclass(slots=True)
class _Catalog:
    providers: dict[str, BaseProvider]
    listings: dict[str, ProviderListing] = field(default_factory=dict)
    task: asyncio.Task | None = None
    first_round: asyncio.Future | None = None


_catalog: _Catalog | None = None


def _current() -> _Catalog:
    global _catalog
    providers = get_providers()
    if _catalog is None or _catalog.providers is not providers:
        if _catalog is not None:
            _stop(_catalog)
        _catalog = _Catalog(
            providers=providers,
            listings={
                name: ProviderListing(provider=p, models=p.configured_models())
                for name, p in providers.items()
            },
        )
    return _catalog


def _streaming(provider: BaseProvider) -> bool:
    return any(r.provider is provider and not r.finished for r in list(registry.by_id.values()))


async def _refresh_one(listing: ProviderListing, *, due_only: bool) -> None:
    provider = listing.provider
    now = time.monotonic()
    interval = settings.CHATSITE_MODELS_REFRESH
    if due_only and listing.attempted is not None and now - listing.attempted < interval:
        return
    if provider.options.get("SINGLE_STREAM") and _streaming(provider):
        # The server would drop the running stream for this request: keep the last list.
        listing.attempted = now
        listing.skipped += 1
        return
    listing.attempted = now
    try:
        models = await provider.list_models()
    except ProviderError as exc:
        log.info("%s: listing models failed: %s (%s)", provider.name, exc.message, exc.kind)
        words = error_describe(
            kind=exc.kind, host=provider.host, cause=exc.cause, detail=exc.detail, status_code=exc.status_code
        )
        failure: tuple[str, str] | None = (exc.kind, words)
    except Exception:  # a provider bug must not end the refresher
        log.exception("%s: listing models failed", provider.name)
        failure = ("internal", error_describe(kind="internal"))
    else:
        failure = None
    when = datetime.now(UTC)
    listing.checked_at = when
    if failure is None:
        listing.models = list(models)
        listing.reachable = True
        listing.unreachable_since = None
        listing.error_kind = listing.error = None
        listing.listed_at = when
        return
    if listing.reachable is not False:
        listing.unreachable_since = when
        log.warning("%s: listing models failed: %s (%s)", provider.name, failure[1], failure[0])
    listing.reachable = False
    listing.error_kind, listing.error = failure


async def model_refresh(*, due_only: bool = False) -> None:
    """List every provider's models now (``due_only``: only those not listed for
    ``CHATSITE_MODELS_REFRESH`` seconds)."""
    catalog = _current()
    await asyncio.gather(*(_refresh_one(listing, due_only=due_only) for listing in catalog.listings.values()))


async def _refresh_loop(catalog: _Catalog) -> None:
    first = catalog.first_round
    try:
        while True:
            await model_refresh(due_only=True)
            if first is not None and not first.done():
                first.set_result(None)
            await asyncio.sleep(max(0.05, settings.CHATSITE_MODELS_REFRESH or 60.0))
    finally:
        if first is not None and not first.done():
            first.cancel()


def _ensure_refresher() -> _Catalog:
    catalog = _current()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return catalog  # a sync caller: the next async reader starts it
    task = catalog.task
    if task is None or task.done() or task.get_loop() is not loop:
        catalog.first_round = loop.create_future()
        catalog.task = loop.create_task(_refresh_loop(catalog), name="model-catalog")
    return catalog


def model_list() -> list[ModelInfo]:
    """Every provider's last good model list, at once (starts the refresher)."""
    catalog = _ensure_refresher()
    return [m for listing in catalog.listings.values() for m in listing.models]


def provider_state_list() -> dict[str, dict]:
    """Each provider's listing state, by provider name (see ``ProviderListing.as_dict``)."""
    catalog = _ensure_refresher()
    return {name: listing.as_dict() for name, listing in catalog.listings.items()}


async def model_list_settled(*, timeout: float) -> list[ModelInfo]:
    """The model list, after waiting (up to ``timeout`` s) for a first listing if
    none has ended yet: for a send that names no model on a fresh process."""
    catalog = _ensure_refresher()
    first = catalog.first_round
    if first is not None and any(listing.reachable is None for listing in catalog.listings.values()):
        await asyncio.wait({first}, timeout=timeout)
    return model_list()


def _reset(*, setting: str, **kwargs: object) -> None:
    global _catalog
    if setting == "CHATSITE_PROVIDERS" and _catalog is not None:
        _stop(_catalog)
        _catalog = None


def _stop(catalog: _Catalog) -> None:
    task = catalog.task
    if task is not None and not task.done() and not task.get_loop().is_closed():
        task.get_loop().call_soon_threadsafe(task.cancel)


setting_changed.connect(_reset)
