"""The one shape of an HTTP error: ``{"error": code, "message": text}``.

``code`` is for machines (stable, the same codes as the socket's ``error``
frame where the two meet: ``not_found``, ``invalid_title``...); ``message`` is
for people: what happened and what to do. Every JSON endpoint answers its
errors through :func:`json_error` or, for a refusal the domain raised,
:func:`json_refusal` (``docs/protocol.md``, "Errors over HTTP").
"""

from __future__ import annotations

from django.http import JsonResponse

from conversations.exceptions import (
    NotAuthenticated,
    NotFound,
    Refusal,
    ReplyRunning,
    SignupClosed,
    TooManyMessages,
    TooManyReplies,
    refusal_answer,
)

#: The HTTP status of a refusal, by its class (the nearest in its bases); 400 otherwise.
HTTP_STATUS: dict[type[Refusal], int] = {
    NotAuthenticated: 401,
    SignupClosed: 403,
    NotFound: 404,
    ReplyRunning: 409,
    TooManyMessages: 429,
    TooManyReplies: 429,
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
