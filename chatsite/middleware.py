"""A strict Content Security Policy on every response."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from chatsite import importmap


@functools.cache
def content_security_policy() -> str:
    """``settings.CONTENT_SECURITY_POLICY`` with the page's import map allowed by its hash."""
    directives = [d.strip() for d in settings.CONTENT_SECURITY_POLICY.split(";") if d.strip()]
    for i, directive in enumerate(directives):
        if directive.split()[0] == "script-src":
            directives[i] = f"{directive} {importmap.script_hash()}"
            break
    else:
        raise ValueError("CONTENT_SECURITY_POLICY has no script-src directive")
    return "; ".join(directives)


def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in {"CONTENT_SECURITY_POLICY", "STORAGES", "STATIC_URL", "STATIC_ROOT", "STATICFILES_DIRS"}:
        content_security_policy.cache_clear()


setting_changed.connect(_reset)


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy`` unless a view already chose one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", content_security_policy())
        return response
