"""Providers, configured by ``settings.CHATSITE_PROVIDERS`` and picked by dotted path."""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from conversations.providers.base import BaseProvider, ChatMessage, ModelInfo, ProviderError, StreamResult

__all__ = [
    "BaseProvider",
    "ChatMessage",
    "ModelInfo",
    "ProviderError",
    "StreamResult",
    "get_provider",
    "get_providers",
    "split_model_id",
]

_providers: dict[str, BaseProvider] | None = None


def get_providers() -> dict[str, BaseProvider]:
    global _providers
    if _providers is None:
        built: dict[str, BaseProvider] = {}
        for name, options in settings.CHATSITE_PROVIDERS.items():
            backend = import_string(options["BACKEND"])
            built[name] = backend(name, options)
        _providers = built
    return _providers


def get_provider(name: str) -> BaseProvider | None:
    return get_providers().get(name)


def split_model_id(model_id: str) -> tuple[str, str]:
    provider, _, name = model_id.partition("/")
    return provider, name


def _reset(*, setting: str, **kwargs: object) -> None:
    global _providers
    if setting == "CHATSITE_PROVIDERS":
        _providers = None


setting_changed.connect(_reset)
