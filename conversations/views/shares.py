"""Shared links: the owner's JSON endpoints (make, list, change, revoke), the
shared page, and continuing it as a copy.

Documented in ``docs/protocol.md`` ("HTTP: shared links"). The owner's
endpoints need a logged-in session and answer another user's conversation or
share id exactly like a missing one (404). The shared page (``/s/<token>/``)
needs a login unless ``CHATSITE_PUBLIC_SHARES`` is on; a revoked token answers
exactly like one that never existed. Every answer of the page's routes carries
``Referrer-Policy: no-referrer`` and ``X-Robots-Tag: noindex`` so the token
leaks neither through the links on it nor into a search engine, and
``Cache-Control: no-store`` so a revoked page is not served from a cache.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from conversations import errors, selectors, serializers
from conversations.exceptions import Invalid, NotAuthenticated, NotFound, TooManyShares
from conversations.models import Share
from conversations.services import shares as share_services
from conversations.views.errors import json_methods, json_refusal

#: The largest body the owner's POST endpoints read.
MAX_BODY_BYTES = 4096

PRIVATE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow, noarchive",
    "Cache-Control": "private, no-store",
}


def _private(response: HttpResponse) -> HttpResponse:
    for name, value in PRIVATE_HEADERS.items():
        response[name] = value
    return response


async def _user(request: HttpRequest):
    user = await request.auser()
    return user if user.is_authenticated else None


def _options(request: HttpRequest) -> dict:
    """``{"show_owner_name": bool}`` from the body (an empty body: none)."""
    if len(request.body) > MAX_BODY_BYTES:
        raise ValueError("the body is too large")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(body) - {"show_owner_name"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0][:40]!r}")
    if "show_owner_name" in body and not isinstance(body["show_owner_name"], bool):
        raise ValueError("show_owner_name must be true or false")
    return body


# --- the owner's endpoints ------------------------------------------------------


@json_methods("GET")
async def share_index(request: HttpRequest) -> JsonResponse:
    """``GET /api/shares/?conversation=<id>``: the user's shared links, newest first."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    conversation_id = None
    raw = request.GET.get("conversation", "").strip()
    if raw:
        try:
            conversation_id = uuid.UUID(raw)
        except ValueError:
            return json_refusal(Invalid("conversation must be a conversation id"))
    shares = await sync_to_async(selectors.share_list)(user=user, conversation_id=conversation_id)
    return JsonResponse({"shares": [serializers.share_to_dict(s) for s in shares]})


@json_methods("POST")
async def share_create(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """``POST /api/conversations/<id>/share/`` with ``{"show_owner_name": bool}``
    (optional): a new link to what the conversation shows now."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    try:
        options = _options(request)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    try:
        share = await sync_to_async(share_services.share_create)(
            user=user,
            conversation_id=conversation_id,
            show_owner_name=options.get("show_owner_name", False),
        )
    except (NotFound, TooManyShares) as exc:
        return json_refusal(exc)
    return JsonResponse({"share": serializers.share_to_dict(share)}, status=201)


@json_methods("POST")
async def share_update(request: HttpRequest, share_id: uuid.UUID) -> JsonResponse:
    """``POST /api/shares/<id>/update/`` with ``{"show_owner_name": bool}``."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    try:
        options = _options(request)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    if "show_owner_name" not in options:
        return json_refusal(Invalid("nothing to change: send show_owner_name"))
    try:
        share = await sync_to_async(share_services.share_update)(
            user=user, share_id=share_id, show_owner_name=options["show_owner_name"]
        )
    except NotFound as exc:
        return json_refusal(exc)
    return JsonResponse({"share": serializers.share_to_dict(share)})


@json_methods("POST")
async def share_revoke(request: HttpRequest, share_id: uuid.UUID) -> JsonResponse:
    """``POST /api/shares/<id>/revoke/``: the link stops working at once."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    try:
        await sync_to_async(share_services.share_revoke)(user=user, share_id=share_id)
    except NotFound as exc:
        return json_refusal(exc)
    return JsonResponse({"revoked": str(share_id)})


# --- the shared page ----------------------------------------------------------------


def _missing(request: HttpRequest) -> HttpResponse:
    """The one answer for a token that never existed and for a revoked one."""
    return _private(render(request, "share_missing.html", status=404))


def _owner_name(share: Share) -> str | None:
    if not share.show_owner_name:
        return None
    owner = share.owner
    return owner.get_full_name().strip() or owner.get_username()


@require_GET
async def share_page(request: HttpRequest, token: str) -> HttpResponse:
    """``GET /s/<token>/``: the snapshot, read-only."""
    user = await _user(request)
    if user is None and not settings.CHATSITE_PUBLIC_SHARES:
        return _private(redirect_to_login(request.get_full_path()))
    share = await sync_to_async(selectors.share_by_token)(token=token)
    if share is None:
        return await sync_to_async(_missing)(request)
    snapshot = share.snapshot
    context = {
        "title": snapshot.get("title") or "Untitled",
        "shared_at": share.created_at,
        "owner_name": _owner_name(share),
        "viewer": user,
        "continue_url": reverse("share-continue", kwargs={"token": token}),
        "login_url": f"{reverse('login')}?{urlencode({'next': request.path}, safe='/')}",
        "share_data": {
            "messages": snapshot.get("messages") or [],
            "error_labels": errors.ERROR_LABELS,
        },
    }
    response = await sync_to_async(render)(request, "share.html", context)
    return _private(response)


@require_POST
def share_continue(request: HttpRequest, token: str) -> HttpResponse:
    """``POST /s/<token>/continue/`` (CSRF protected): a copy of the snapshot as a
    new conversation of the viewer's. A form post is redirected (303) to it in the
    chat; a request that accepts JSON (the shared page's script) gets
    ``201 {"conversation": id, "url": "/c/<id>/"}``, and its errors in the envelope.

    The page's ``no-referrer`` policy makes a browser send ``Origin: null`` with a
    form post, which Django's CSRF check refuses; so the page's script posts with a
    ``same-origin`` referrer policy of its own (the token goes to this server only).
    """
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not request.user.is_authenticated:
        if wants_json:
            return _private(json_refusal(NotAuthenticated("log in to continue this conversation")))
        return _private(redirect_to_login(reverse("share", kwargs={"token": token})))
    try:
        conversation = share_services.share_continue(user=request.user, token=token)
    except NotFound as exc:
        return _private(json_refusal(exc)) if wants_json else _missing(request)
    url = reverse("conversation", kwargs={"conversation_id": conversation.pk})
    if wants_json:
        return _private(JsonResponse({"conversation": str(conversation.pk), "url": url}, status=201))
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return _private(response)
