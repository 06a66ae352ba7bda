"""The one shape of an HTTP error: ``{"error": code, "message": text}``.

``code`` is for machines (stable, the same codes as the socket's ``error``
frame where the two meet: ``not_found``, ``invalid_title``...); ``message`` is
for people: what happened and what to do. Every JSON endpoint answers its
errors through :func:`json_error` or, for a refusal the domain raised,
:func:`json_refusal` (``docs/protocol.md``, "Errors over HTTP"); its
:func:`json_methods` answers a wrong method the same way, and
:func:`csrf_failure` a missing CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf

from conversations.exceptions import (
    AttachmentInUse,
    AttachmentTooLarge,
    NotAuthenticated,
    NotFound,
    Refusal,
    ReplyRunning,
    SignupClosed,
    TooManyMessages,
    TooManyReplies,
    TooManyShares,
    refusal_answer,
)

#: The HTTP status of a refusal, by its class (the nearest in its bases); 400 otherwise.
HTTP_STATUS: dict[type[Refusal], int] = {
    NotAuthenticated: 401,
    SignupClosed: 403,
    NotFound: 404,
    ReplyRunning: 409,
    AttachmentInUse: 409,
    AttachmentTooLarge: 413,
    TooManyMessages: 429,
    TooManyReplies: 429,
    TooManyShares: 409,
}


def json_error(*, code: str, message: str, status: int) -> JsonResponse:
    """An error answer: ``{"error": code, "message": message}`` with ``status``."""
    return JsonResponse({"error": code, "message": message}, status=status)


def refusal_status(exc: Refusal) -> int:
    """The HTTP status for ``exc``."""
    return next((HTTP_STATUS[kind] for kind in type(exc).__mro__ if kind in HTTP_STATUS), 400)


def json_refusal(exc: Refusal) -> JsonResponse:
    """The error answer for a refusal: its code and words, and its status."""
    code, message = refusal_answer(exc)
    return json_error(code=code, message=message, status=refusal_status(exc))


def _wrong_method(request: HttpRequest, methods: tuple[str, ...]) -> JsonResponse:
    response = json_error(
        code="method_not_allowed",
        message=f"{request.method} is not allowed here; use {' or '.join(methods)}",
        status=405,
    )
    response["Allow"] = ", ".join(methods)
    return response


def json_methods(*methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like Django's ``require_http_methods``, for a JSON endpoint: a request
    of another method gets the error envelope (405). It also marks the view as
    a JSON endpoint, so that :func:`csrf_failure` answers it in JSON too."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        if iscoroutinefunction(view):

            @wraps(view)
            async def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if request.method not in methods:
                    return _wrong_method(request, methods)
                return await view(request, *args, **kwargs)

        else:

            @wraps(view)
            def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if request.method not in methods:
                    return _wrong_method(request, methods)
                return view(request, *args, **kwargs)

        inner.json_endpoint = True  # type: ignore[attr-defined]
        return inner

    return decorator


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: the error envelope for a JSON endpoint, Django's page for the others."""
    match = request.resolver_match
    if match is not None and getattr(match.func, "json_endpoint", False):
        return json_error(
            code="csrf_failed",
            message="the request has no valid CSRF token (send the csrftoken cookie's value in an "
            "X-CSRFToken header); reload the page and try again",
            status=403,
        )
    return csrf.csrf_failure(request, reason=reason)
