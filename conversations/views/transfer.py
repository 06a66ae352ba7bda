"""Export and import over HTTP: downloads of one or all conversations, and the upload.

Another user's conversation id answers exactly like a missing one (404).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.multipartparser import MultiPartParserError
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from conversations import selectors
from conversations.exceptions import ImportRejected, NotAuthenticated
from conversations.models import Conversation
from conversations.transfer import exporting, importing
from conversations.views.errors import json_methods, json_refusal

#: Room for the multipart framing around the file when checking Content-Length.
MULTIPART_SLACK = 64 * 1024

JSON_TYPE = "application/json; charset=utf-8"
MARKDOWN_TYPE = "text/markdown; charset=utf-8"


def _download(response: HttpResponse | StreamingHttpResponse, filename: str):
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response


def _own_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    conversation = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    if conversation is None:  # missing, or someone else's: the same answer
        raise Http404("No such conversation")
    return conversation


@require_GET
@login_required
def conversation_export_json(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _own_conversation(request, conversation_id)
    body = exporting.conversation_export_json(conversation=conversation)
    response = HttpResponse(body, content_type=JSON_TYPE)
    return _download(response, exporting.conversation_filename(conversation, "json"))


@require_GET
@login_required
def conversation_export_markdown(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _own_conversation(request, conversation_id)
    body = exporting.conversation_export_markdown(conversation=conversation)
    response = HttpResponse(body, content_type=MARKDOWN_TYPE)
    return _download(response, exporting.conversation_filename(conversation, "md"))


ZIP_TYPE = "application/zip"


def _zip_download(write, filename: str) -> FileResponse:
    """A zip written to a temporary file (on disk past a few MB), then sent from it."""
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    write(out)
    out.seek(0)
    response = FileResponse(out, content_type=ZIP_TYPE)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
@login_required
def conversation_export_zip(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The conversation's JSON export as ``conversations.json``, with its attachments' files beside it."""
    conversation = _own_conversation(request, conversation_id)
    return _zip_download(
        lambda out: exporting.conversation_export_zip(conversation=conversation, out=out),
        exporting.conversation_filename(conversation, "zip"),
    )


@require_GET
@login_required
def user_export_zip(request: HttpRequest) -> HttpResponse:
    """Every conversation of the user, with every attachment's file."""
    return _zip_download(
        lambda out: exporting.user_export_zip(user=request.user, out=out),
        exporting.user_filename(request.user, "zip"),
    )


async def _stream(make: Callable[[], Iterator[str]]) -> AsyncIterator[bytes]:
    """Run a synchronous chunk generator (it queries the database) a chunk at a time."""
    chunks = await sync_to_async(make)()
    while True:
        chunk = await sync_to_async(_next_chunk)(chunks)
        if chunk is None:
            return
        yield chunk.encode()


def _next_chunk(chunks: Iterator[str]) -> str | None:
    """The next chunk, or None once there are no more."""
    return next(chunks, None)


async def _export_all(request: HttpRequest, extension: str, content_type: str, make) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    response = StreamingHttpResponse(_stream(lambda: make(user=user)), content_type=content_type)
    return _download(response, exporting.user_filename(user, extension))


@require_GET
async def user_export_json(request: HttpRequest) -> HttpResponse:
    return await _export_all(request, "json", JSON_TYPE, exporting.user_export_json_chunks)


@require_GET
async def user_export_markdown(request: HttpRequest) -> HttpResponse:
    return await _export_all(request, "md", MARKDOWN_TYPE, exporting.user_export_markdown_chunks)


@json_methods("POST")
def conversations_import(request: HttpRequest) -> JsonResponse:
    """Multipart upload, field ``file``: a chatsite export or a ChatGPT conversations.json."""
    if not request.user.is_authenticated:
        return json_refusal(NotAuthenticated("Log in to import conversations."))
    limit = settings.CHATSITE_MAX_IMPORT_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if limit and length > limit + MULTIPART_SLACK:  # refused before parsing the upload
        return json_refusal(
            ImportRejected(
                "The file is larger than the largest file this server imports "
                f"({importing.megabytes(limit)}).",
                "too_large",
            )
        )
    try:
        upload = request.FILES.get("file")
    except MultiPartParserError:
        return json_refusal(
            ImportRejected(
                "The upload could not be read; send the file as multipart form data.", "bad_upload"
            )
        )
    if upload is None:
        return json_refusal(ImportRejected("Choose a file to import (form field 'file').", "no_file"))
    if limit and upload.size > limit:
        return json_refusal(
            ImportRejected(
                f"The file is {importing.megabytes(upload.size)}; the largest file this server imports is "
                f"{importing.megabytes(limit)}.",
                "too_large",
            )
        )
    try:
        result = importing.conversations_import(user=request.user, data=upload.read())
    except ImportRejected as exc:
        return json_refusal(exc)
    return JsonResponse(
        {
            "imported": len(result.conversations),
            "conversations": [str(c.pk) for c in result.conversations],
            "skipped": len(result.skipped),
            "skipped_conversations": [
                {**s.as_dict(), "message": f"Skipped {importing.skipped_name(s)}: {s.reason}."}
                for s in result.skipped
            ],
            "source": result.source,
        }
    )
