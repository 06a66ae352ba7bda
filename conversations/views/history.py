"""JSON endpoints of the history: the conversation list, actions on one
conversation (rename, pin, archive, delete), and search.

Documented in ``docs/protocol.md`` ("HTTP: history and search"). Every
endpoint needs a logged-in session (401 otherwise); the POST ones are CSRF
protected (Django's middleware: send the ``X-CSRFToken`` header). Another
user's conversation id answers exactly like a missing one (404).
"""

from __future__ import annotations

import json
import logging
import uuid

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from conversations import search, selectors, serializers
from conversations.exceptions import (
    Invalid,
    InvalidCursor,
    InvalidTitle,
    NotAuthenticated,
    NotFound,
    QueryTooLong,
)
from conversations.realtime import cluster, commands, protocol
from conversations.realtime.registry import registry
from conversations.services import conversations as conversation_services
from conversations.views.errors import json_methods, json_refusal

log = logging.getLogger(__name__)

#: The largest request body an action accepts (room for the longest system
#: prompt, MAX_SYSTEM_PROMPT_CHARS, even written as JSON \u escapes).
MAX_BODY_BYTES = 256 * 1024


def _not_found() -> JsonResponse:
    return json_refusal(NotFound("no such conversation"))


async def _user(request: HttpRequest):
    user = await request.auser()
    return user if user.is_authenticated else None


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def _tz_offset(request: HttpRequest) -> int:
    limit = selectors.TZ_OFFSET_MAX
    return _int_param(request, "tz_offset", 0, -limit, limit)


@json_methods("GET")
async def conversation_index(request: HttpRequest) -> JsonResponse:
    """``GET /api/history/?archived=0|1&cursor=&tz_offset=&limit=``: one page of
    the list, pinned first, then newest activity first."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    archived_raw = request.GET.get("archived", "0")
    if archived_raw not in ("0", "1", "false", "true"):
        return json_refusal(Invalid("archived must be 0 or 1"))
    try:
        tz_offset = _tz_offset(request)
        limit = _int_param(request, "limit", 50, 1, selectors.LIST_MAX_LIMIT)
        page = await sync_to_async(selectors.conversation_list)(
            user=user,
            archived=archived_raw in ("1", "true"),
            cursor=request.GET.get("cursor") or None,
            limit=limit,
            tz_offset=tz_offset,
        )
    except InvalidCursor as exc:
        return json_refusal(exc)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    return JsonResponse(
        {
            "conversations": [serializers.conversation_item_to_dict(item) for item in page.items],
            "next_cursor": page.next_cursor,
        }
    )


def _read_json_object(request: HttpRequest) -> dict:
    if len(request.body) > MAX_BODY_BYTES:
        raise ValueError("the body is too large")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


@json_methods("POST")
async def conversation_update(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """``POST /api/conversations/<id>/update/`` with any of ``{"title": str,
    "pinned": bool, "archived": bool, "system_prompt": str, "temperature": number|null,
    "max_tokens": int|null}``: rename, pin/unpin, archive/unarchive, settings."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    try:
        body = _read_json_object(request)
        tz_offset = _tz_offset(request)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    unknown = sorted(set(body) - {"title", "pinned", "archived", *OPTION_FIELDS})
    if unknown:
        return json_refusal(Invalid(f"unknown field {unknown[0][:40]!r}"))
    if not body:
        return json_refusal(Invalid("nothing to change: send title, pinned or archived"))
    try:
        options = _options(body)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    if "title" in body and not isinstance(body["title"], str):
        return json_refusal(Invalid("title must be a string"))
    for flag in ("pinned", "archived"):
        if flag in body and not isinstance(body[flag], bool):
            return json_refusal(Invalid(f"{flag} must be true or false"))
    try:
        conversation = await sync_to_async(conversation_services.conversation_update)(
            user=user,
            conversation_id=conversation_id,
            title=body.get("title"),
            pinned=body.get("pinned"),
            archived=body.get("archived"),
            options=options,
        )
    except NotFound:
        return _not_found()
    except InvalidTitle as exc:
        return json_refusal(exc)
    if "title" in body:
        # The user's other tabs (in any process) show the new title at once.
        frame = protocol.frame_conversation_updated(
            conversation=str(conversation.pk), title=conversation.title
        )
        await cluster.user_frame_send(user_id=user.pk, frame=frame)
    item = selectors.conversation_item(conversation=conversation, tz_offset=tz_offset)
    return JsonResponse({"conversation": serializers.conversation_item_to_dict(item)})


OPTION_FIELDS = ("system_prompt", "temperature", "max_tokens", "thinking_budget")
#: Anthropic's least and the largest budget taken (0 is off).
THINKING_BUDGET_RANGE = (1024, 128_000)
MAX_SYSTEM_PROMPT_CHARS = 20_000


def _options(body: dict) -> dict:
    """The conversation settings in ``body``, validated."""
    options: dict = {}
    if "system_prompt" in body:
        prompt = body["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > MAX_SYSTEM_PROMPT_CHARS:
            raise ValueError(f"system_prompt must be text of at most {MAX_SYSTEM_PROMPT_CHARS} characters")
        options["system_prompt"] = prompt.strip()
    if "temperature" in body:
        value = body["temperature"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2
        ):
            raise ValueError("temperature must be a number from 0 to 2, or null for the default")
        options["temperature"] = None if value is None else float(value)
    if "max_tokens" in body:
        value = body["max_tokens"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 200_000
        ):
            raise ValueError("max_tokens must be a whole number from 1 to 200000, or null for the default")
        options["max_tokens"] = value
    if "thinking_budget" in body:
        value = body["thinking_budget"]
        low, high = THINKING_BUDGET_RANGE
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or low <= value <= high)
        ):
            raise ValueError(
                f"thinking_budget must be 0 (off), a whole number from {low} to {high}, "
                "or null for the model's default"
            )
        options["thinking_budget"] = value
    return options


@json_methods("POST")
async def conversation_delete(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """``POST /api/conversations/<id>/delete/``: stop its streaming reply, if
    any (here or in another process), then delete it with all its messages."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    conversation = await sync_to_async(selectors.conversation_get)(user=user, conversation_id=conversation_id)
    if conversation is None:
        return _not_found()
    reply_ids: list[uuid.UUID] = []
    live = registry.for_conversation(conversation_id)
    if live is not None and live.user_id == user.pk and not live.finished:
        reply_ids.append(live.id)
    for reply_id in await sync_to_async(selectors.conversation_streaming_reply_ids)(
        user=user, conversation_id=conversation_id
    ):
        if reply_id not in reply_ids:
            reply_ids.append(reply_id)
    for reply_id in reply_ids:
        # Here: waits until the reply is saved. Elsewhere: routed to its process.
        try:
            await commands.reply_stop(user=user, reply_id=reply_id)
        except protocol.ProtocolError:
            pass  # gone in between
    try:
        await sync_to_async(conversation_services.conversation_delete)(
            user=user, conversation_id=conversation_id
        )
    except NotFound:
        return _not_found()
    return JsonResponse({"deleted": str(conversation_id)})


@json_methods("GET")
async def search_index(request: HttpRequest) -> JsonResponse:
    """``GET /api/search/?q=&limit=&offset=``: ranked hits with snippets."""
    user = await _user(request)
    if user is None:
        return json_refusal(NotAuthenticated())
    query = request.GET.get("q", "")
    try:
        limit = _int_param(request, "limit", 20, 1, search.MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, search.MAX_RESULTS)
    except ValueError as exc:
        return json_refusal(Invalid(str(exc)))
    try:
        hits = await sync_to_async(search.search_messages)(user=user, query=query, limit=limit, offset=offset)
    except QueryTooLong as exc:
        return json_refusal(exc)
    more = len(hits) == limit and offset + limit < search.MAX_RESULTS
    return JsonResponse(
        {
            "query": query,
            "results": [hit.as_dict() for hit in hits],
            "next_offset": offset + limit if more else None,
        }
    )
