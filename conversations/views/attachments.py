"""Attachments over HTTP: the upload, the file served to its owner, the delete.

Documented in ``docs/protocol.md`` ("Attachments"). Every endpoint needs a
logged-in session; the POST ones are CSRF protected. Another user's attachment
id answers exactly like a missing one (404).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.http import content_disposition_header

from conversations import selectors, serializers
from conversations.exceptions import (
    AttachmentRejected,
    AttachmentTooLarge,
    NotAuthenticated,
    NotFound,
    Refusal,
)
from conversations.models import Attachment
from conversations.services import attachments as attachment_services
from conversations.views.errors import json_methods, json_refusal

#: Room for the multipart framing around the file when checking Content-Length.
MULTIPART_SLACK = 64 * 1024
#: What a served file may do in the browser: nothing (no script, no style, no
#: request of its own; an image still shows, a PDF is downloaded).
FILE_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def _not_found() -> JsonResponse:
    return json_refusal(NotFound("no such attachment"))


@json_methods("POST")
def attachment_upload(request: HttpRequest) -> JsonResponse:
    """Multipart upload, field ``file``: checked from its content and kept, bound
    to no message until a ``send`` names its id. Answers 201 with the attachment."""
    if not request.user.is_authenticated:
        return json_refusal(NotAuthenticated())
    limit = settings.CHATSITE_ATTACHMENT_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if limit and length > limit + MULTIPART_SLACK:  # refused before parsing the upload
        return json_refusal(AttachmentTooLarge(max_bytes=limit))
    try:
        upload = request.FILES.get("file")
    except MultiPartParserError:
        return json_refusal(
            AttachmentRejected(
                "the upload could not be read; send the file as multipart form data", "no_file"
            )
        )
    if upload is None:
        return json_refusal(AttachmentRejected("choose a file to attach (form field 'file')", "no_file"))
    if limit and upload.size > limit:
        return json_refusal(AttachmentTooLarge(max_bytes=limit))
    try:
        attachment = attachment_services.attachment_create(
            user=request.user, name=upload.name or "", data=upload.read()
        )
    except Refusal as exc:
        return json_refusal(exc)
    return JsonResponse({"attachment": serializers.attachment_to_dict(attachment)}, status=201)


@json_methods("GET")
def attachment_file(request: HttpRequest, attachment_id: uuid.UUID) -> HttpResponse:
    """The attachment's bytes, to its owner: typed as checked on upload, never sniffed,
    an image shown inline, any other file downloaded, under a policy that lets it do nothing."""
    if not request.user.is_authenticated:
        return json_refusal(NotAuthenticated())
    attachment = selectors.attachment_get(user=request.user, attachment_id=attachment_id)
    if attachment is None:
        return _not_found()
    try:
        handle = attachment_services.attachment_path(attachment_id=attachment.pk).open("rb")
    except FileNotFoundError:
        return _not_found()
    image = attachment.kind == Attachment.Kind.IMAGE
    content_type = attachment.media_type + (
        "; charset=utf-8" if attachment.kind == Attachment.Kind.TEXT else ""
    )
    response = FileResponse(handle, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(not image, attachment.name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_POLICY
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    # The bytes of an id never change; only its owner's browser keeps them.
    response["Cache-Control"] = "private, max-age=86400"
    return response


@json_methods("POST")
def attachment_delete(request: HttpRequest, attachment_id: uuid.UUID) -> JsonResponse:
    """Remove an upload that was not sent yet (one on a sent message: 409)."""
    if not request.user.is_authenticated:
        return json_refusal(NotAuthenticated())
    try:
        attachment_services.attachment_delete(user=request.user, attachment_id=attachment_id)
    except Refusal as exc:
        return json_refusal(exc)
    return JsonResponse({"deleted": str(attachment_id)})
