"""Providers, configured by ``settings.CHATSITE_PROVIDERS`` and picked by dotted path.

This module alone reads Django settings: each backend is built with its own
options (its ``CHATSITE_PROVIDERS`` entry) and the :class:`CommonOptions` every
backend shares; the shared HTTP client gets its timeout and pool size here too,
and redaction the configured API keys. When a test changes one of those
settings, the providers are built again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from conversations.providers.base import BaseProvider, CommonOptions, ModelInfo, StreamResult
from conversations.providers.failures import ProviderError, secrets_set
from conversations.providers.http import HttpOptions, http_configure

__all__ = [
    "BaseProvider",
    "CommonOptions",
    "ModelInfo",
    "ProviderError",
    "StreamResult",
    "common_options",
    "get_provider",
    "get_providers",
    "split_model_id",
]

#: The settings the built providers depend on.
PROVIDER_SETTINGS = frozenset(
    {
        "CHATSITE_PROVIDERS",
        "CHATSITE_CONTEXT_TOKENS",
        "CHATSITE_CONTEXT_TOKENS_MODELS",
        "CHATSITE_MODELS_TIMEOUT",
        "CHATSITE_NON_STREAMING_MODELS",
        "CHATSITE_THINKING_BUDGET_MODELS",
        "CHATSITE_VISION_MODELS",
    }
)
#: The settings of the shared HTTP client.
HTTP_SETTINGS = frozenset({"CHATSITE_HTTP_TIMEOUT", "CHATSITE_HTTP_MAX_CONNECTIONS"})

_providers: dict[str, BaseProvider] | None = None


def common_options() -> CommonOptions:
    """What every backend is told, from settings."""
    return CommonOptions(
        context_tokens=settings.CHATSITE_CONTEXT_TOKENS,
        context_tokens_models=dict(settings.CHATSITE_CONTEXT_TOKENS_MODELS),
        list_timeout=settings.CHATSITE_MODELS_TIMEOUT,
        thinking_budget_models=dict(settings.CHATSITE_THINKING_BUDGET_MODELS),
        vision_models=tuple(settings.CHATSITE_VISION_MODELS),
        non_streaming_models=tuple(settings.CHATSITE_NON_STREAMING_MODELS),
    )


def _configure() -> None:
    configured: dict[str, dict[str, Any]] = settings.CHATSITE_PROVIDERS
    secrets_set(keys=[str(options.get("API_KEY") or "") for options in configured.values()])
    http_configure(
        options=HttpOptions(
            timeout=settings.CHATSITE_HTTP_TIMEOUT, max_connections=settings.CHATSITE_HTTP_MAX_CONNECTIONS
        )
    )


def get_providers() -> dict[str, BaseProvider]:
    global _providers
    if _providers is None:
        _configure()
        common = common_options()
        built: dict[str, BaseProvider] = {}
        for name, options in settings.CHATSITE_PROVIDERS.items():
            backend = import_string(options["BACKEND"])
            built[name] = backend(name, options, common)
        _providers = built
    return _providers


def get_provider(name: str) -> BaseProvider | None:
    return get_providers().get(name)


def split_model_id(model_id: str) -> tuple[str, str]:
    provider, _, name = model_id.partition("/")
    return provider, name


def _reset(*, setting: str, **kwargs: object) -> None:
    global _providers
    if setting in PROVIDER_SETTINGS:
        _providers = None
    if setting in PROVIDER_SETTINGS | HTTP_SETTINGS:
        _configure()


setting_changed.connect(_reset)
