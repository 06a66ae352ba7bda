"""Moderation, configured by settings and picked by them, like Django's session backends.

This module alone reads settings: ``CHATSITE_MODERATION_RULES`` (the operator's
word and regular-expression lists, :mod:`~conversations.moderation.rules`) and
``CHATSITE_MODERATION_URL`` (an OpenAI-compatible ``POST /v1/moderations``,
:mod:`~conversations.moderation.endpoint`), each optional. With neither,
:func:`moderation_on` is False and a reply gets no :class:`Screen`: its hot path
is the unmoderated one. The rules file is read when the app starts
(:func:`moderation_load`, from ``apps.py``): a bad file stops the process there,
saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from conversations.moderation.base import Flagged, Moderator, Verdict
from conversations.moderation.endpoint import EndpointModerator
from conversations.moderation.rules import RulesError, RulesModerator, rules_load
from conversations.moderation.screen import Screen

__all__ = ["Flagged", "Screen", "Verdict", "moderation_load", "moderation_on", "prompt_check", "screen_for"]

MODERATION_SETTINGS = frozenset(
    {
        "CHATSITE_MODERATION_RULES",
        "CHATSITE_MODERATION_URL",
        "CHATSITE_MODERATION_API_KEY",
        "CHATSITE_MODERATION_MODEL",
        "CHATSITE_MODERATION_TIMEOUT",
        "CHATSITE_MODERATION_FAIL",
        "CHATSITE_MODERATION_HOLD_CHARS",
    }
)

_moderators: list[Moderator] | None = None


def moderation_load() -> list[Moderator]:
    """The configured backends (built once; again after a test changes a setting).
    Raises ImproperlyConfigured for a rules file that cannot be used."""
    global _moderators
    if _moderators is None:
        built: list[Moderator] = []
        path = settings.CHATSITE_MODERATION_RULES
        if path:
            try:
                built.append(RulesModerator(rules=rules_load(path=Path(path))))
            except RulesError as exc:
                raise ImproperlyConfigured(
                    f"CHATSITE_MODERATION_RULES: {exc} (docs/configuration.md, 'Moderation')"
                ) from None
        if settings.CHATSITE_MODERATION_URL:
            built.append(
                EndpointModerator(
                    url=settings.CHATSITE_MODERATION_URL,
                    api_key=settings.CHATSITE_MODERATION_API_KEY,
                    model=settings.CHATSITE_MODERATION_MODEL,
                    timeout=settings.CHATSITE_MODERATION_TIMEOUT,
                    fail_closed=settings.CHATSITE_MODERATION_FAIL == "closed",
                )
            )
        _moderators = built
    return _moderators


def moderation_on() -> bool:
    return bool(moderation_load())


async def prompt_check(*, text: str) -> Verdict | None:
    """The first backend's verdict on a user's message (None: clear, or moderation is off)."""
    for moderator in moderation_load():
        verdict = await moderator.prompt_check(text=text)
        if verdict is not None:
            return verdict
    return None


def screen_for(
    *,
    release: Callable[[str, bool], object],
    stop: Callable[[Verdict], object],
    context: str = "",
    reasoning_context: str = "",
) -> Screen | None:
    """A reply's screen (None when moderation is off: nothing to check)."""
    moderators = moderation_load()
    if not moderators:
        return None
    return Screen(
        moderators=moderators,
        hold=settings.CHATSITE_MODERATION_HOLD_CHARS,
        release=release,
        stop=stop,
        context=context,
        reasoning_context=reasoning_context,
    )


def _reset(*, setting: str, **kwargs: object) -> None:
    global _moderators
    if setting in MODERATION_SETTINGS:
        _moderators = None


setting_changed.connect(_reset, dispatch_uid="chatsite-moderation-settings")
