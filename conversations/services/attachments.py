"""Attachments: an upload checked from its content and stored, bound to the
message it is sent with, deleted, purged; and what the model is sent of it.

What a file is comes from its bytes, never from its name or the browser's
word: an image is decoded by Pillow and re-encoded (its metadata, EXIF and GPS
included, and anything riding after its pixels stay behind), a PDF's text is
taken out with pypdf, anything else must be UTF-8 text. The bytes are kept
under ``CHATSITE_ATTACHMENTS_DIR`` in a file named by the attachment's id.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations.exceptions import (
    AttachmentInUse,
    AttachmentRejected,
    AttachmentTooLarge,
    NotFound,
    TooManyAttachments,
)
from conversations.models import Attachment, Message
from conversations.prompt import ImagePart

log = logging.getLogger(__name__)

#: Pillow's format name -> the media type the file is stored and sent as.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
#: The file extension each stored type is exported with.
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
    "text/plain": "txt",
}
WHAT_CAN_BE_ATTACHED = (
    "attach an image (PNG, JPEG, WebP, GIF), a text file (text, markdown, source code, CSV, JSON) or a PDF"
)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
NAME_MAX_CHARS = 255


def attachments_dir() -> Path:
    path = Path(settings.CHATSITE_ATTACHMENTS_DIR)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def attachment_path(*, attachment_id: uuid.UUID | str) -> Path:
    """Where an attachment's bytes are: a file named by its id (a UUID), nothing the user chose."""
    return attachments_dir() / str(uuid.UUID(str(attachment_id)))


def _model_copy_path(attachment_id: uuid.UUID | str) -> Path:
    """A large image's smaller copy, the one models are sent (``<id>.model``)."""
    return attachments_dir() / f"{uuid.UUID(str(attachment_id))}.model"


def attachment_files_delete(*, ids: list[uuid.UUID]) -> None:
    """Remove the files of these attachments (the rows are gone already)."""
    for pk in ids:
        attachment_path(attachment_id=pk).unlink(missing_ok=True)
        _model_copy_path(pk).unlink(missing_ok=True)


def attachments_orphans_delete(*, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Delete those of these attachments that are on no message now; their ids
    (delete their files with :func:`attachment_files_delete` once committed)."""
    if not ids:
        return []
    orphans = list(Attachment.objects.filter(pk__in=ids, messages=None).values_list("pk", flat=True))
    Attachment.objects.filter(pk__in=orphans).delete()
    return orphans


#: The longest side and the most bytes of an image as models are sent it; a
#: larger one is sent as a smaller copy made on upload (the APIs refuse or
#: shrink large images anyway: Anthropic takes up to 5 MB, and works best at
#: about 1.15 megapixels).
MODEL_IMAGE_EDGE = 2048
MODEL_IMAGE_BYTES = 4 * 1024 * 1024


def _model_copy(data: bytes) -> bytes | None:
    """A copy of a (checked, re-encoded) image small enough for every API; None
    when the image is small enough as it is."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= MODEL_IMAGE_EDGE and len(data) <= MODEL_IMAGE_BYTES:
            return None
        image.seek(0)
        if image.format == "JPEG":
            image.draft("RGB", (MODEL_IMAGE_EDGE, MODEL_IMAGE_EDGE))  # decoded at a smaller scale: faster
        frame = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    frame.thumbnail((MODEL_IMAGE_EDGE, MODEL_IMAGE_EDGE), reducing_gap=3.0)
    out = io.BytesIO()
    if frame.mode == "RGBA":
        frame.save(out, format="PNG", optimize=True)
    if frame.mode != "RGBA" or out.tell() > MODEL_IMAGE_BYTES:
        out = io.BytesIO()
        frame.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Checked:
    """What an upload turned out to be, and the bytes to keep of it."""

    kind: str
    media_type: str
    data: bytes
    width: int | None = None
    height: int | None = None
    text: str = ""
    pages: int | None = None


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _image(data: bytes) -> Checked:
    from PIL import Image, ImageOps, UnidentifiedImageError

    max_pixels = settings.CHATSITE_ATTACHMENT_MAX_PIXELS
    bad = AttachmentRejected(
        "the image could not be read: it is damaged or not really an image; attach another one", "bad_image"
    )
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (MAX_IMAGE_PIXELS) is an error here too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                if image.format not in IMAGE_TYPES:
                    raise AttachmentRejected(
                        f"{image.format or 'this'} images cannot be attached; {WHAT_CAN_BE_ATTACHED}"
                    )
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
                if width * height > max_pixels or width * height * frames > 4 * max_pixels:
                    raise AttachmentRejected(
                        f"the image is too large: {width} x {height} pixels"
                        + (f" x {frames} frames" if frames > 1 else "")
                        + f"; images of up to {max_pixels / 1e6:g} million pixels can be attached",
                        "too_many_pixels",
                    )
                media_type = IMAGE_TYPES[image.format]
                out = io.BytesIO()
                if frames > 1:
                    # An animation: every frame re-encoded, its timing kept, nothing else.
                    keep = {k: image.info[k] for k in ("duration", "loop") if k in image.info}
                    image.load()
                    image.save(out, format=image.format, save_all=True, **keep)
                else:
                    image.load()  # decodes: a damaged file fails here
                    clean = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
                    if image.format == "JPEG":
                        if clean.mode not in ("RGB", "L"):
                            clean = clean.convert("RGB")
                        clean.save(out, format="JPEG", quality=90)
                    else:
                        still: dict[str, object] = {}
                        if "transparency" in image.info:
                            still["transparency"] = image.info["transparency"]
                        clean.info = {}
                        if image.format == "WEBP":
                            clean.save(out, format="WEBP", quality=90, **still)
                        else:
                            clean.save(out, format=image.format, **still)
                    width, height = clean.size
    except AttachmentRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise AttachmentRejected(
            f"the image is too large; images of up to {max_pixels / 1e6:g} million pixels can be attached",
            "too_many_pixels",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise bad from None
    return Checked("image", media_type, out.getvalue(), width=width, height=height)


def _pdf(data: bytes) -> Checked:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    limit = settings.CHATSITE_ATTACHMENT_MAX_TEXT_CHARS
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise AttachmentRejected(
                "the PDF is protected by a password; attach a copy without one", "bad_pdf"
            )
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > limit:
                raise AttachmentRejected(
                    f"the PDF has more than {limit:,} characters of text; attach a shorter one", "too_large"
                )
            pages.append(text.strip())
    except AttachmentRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError):
        raise AttachmentRejected(
            "the PDF could not be read: it is damaged; attach another one", "bad_pdf"
        ) from None
    text = "\n\n".join(p for p in pages if p)
    return Checked("pdf", "application/pdf", data, text=text, pages=len(pages))


def _text(data: bytes) -> Checked:
    if b"\x00" in data[:8192]:
        raise AttachmentRejected(f"this kind of file cannot be attached; {WHAT_CAN_BE_ATTACHED}")
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentRejected(
            f"the file is neither UTF-8 text nor a supported image or PDF; {WHAT_CAN_BE_ATTACHED}", "bad_text"
        ) from None
    if "\x00" in text:
        raise AttachmentRejected(f"this kind of file cannot be attached; {WHAT_CAN_BE_ATTACHED}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    limit = settings.CHATSITE_ATTACHMENT_MAX_TEXT_CHARS
    if len(text) > limit:
        raise AttachmentRejected(
            f"the text file has {len(text):,} characters; files of up to {limit:,} can be attached",
            "too_large",
        )
    return Checked("text", "text/plain", text.encode("utf-8"), text=text)


def attachment_check(*, data: bytes) -> Checked:
    """What ``data`` is, from its content alone; raises :class:`AttachmentRejected`."""
    if not data:
        raise AttachmentRejected("the file is empty", "no_file")
    if _looks_like_image(data):
        return _image(data)
    if data.startswith(b"%PDF-"):
        return _pdf(data)
    return _text(data)


def _clean_name(name: str, checked: Checked) -> str:
    name = "".join(ch for ch in os.path.basename(name.replace("\\", "/")) if ch.isprintable()).strip()
    if not name:
        name = f"{checked.kind}.{EXTENSIONS.get(checked.media_type, 'bin')}"
    return name[:NAME_MAX_CHARS]


def _write(path: Path, data: bytes) -> None:
    """Write the whole file or nothing (a temporary file, then renamed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def attachment_write(*, attachment_id: uuid.UUID, data: bytes, kind: str) -> None:
    """Keep an attachment's (checked) bytes under its id, and a large image's copy for models."""
    _write(attachment_path(attachment_id=attachment_id), data)
    if kind == Attachment.Kind.IMAGE:
        try:
            copy = _model_copy(data)
        except (OSError, ValueError):  # pragma: no cover - the bytes were just decoded
            copy = None
        if copy is not None:
            _write(_model_copy_path(attachment_id), copy)


def attachment_create(*, user: AbstractBaseUser, name: str, data: bytes) -> Attachment:
    """Check an upload from its content, keep its bytes, and record it (bound to no message yet)."""
    max_bytes = settings.CHATSITE_ATTACHMENT_MAX_BYTES
    if max_bytes and len(data) > max_bytes:
        raise AttachmentTooLarge(max_bytes=max_bytes)
    pending = Attachment.objects.filter(user=user, messages=None).count()
    if pending >= settings.CHATSITE_ATTACHMENTS_PENDING_MAX:
        raise AttachmentRejected(
            f"{pending} uploaded files are waiting to be sent; send or remove some first", "too_many_pending"
        )
    checked = attachment_check(data=data)
    attachment = Attachment(
        user=user,
        kind=checked.kind,
        media_type=checked.media_type,
        name=_clean_name(name, checked),
        size=len(checked.data),
        width=checked.width,
        height=checked.height,
        text=checked.text,
        pages=checked.pages,
    )
    attachment_write(attachment_id=attachment.pk, data=checked.data, kind=checked.kind)
    try:
        attachment.save(force_insert=True)
    except BaseException:
        attachment_files_delete(ids=[attachment.pk])
        raise
    return attachment


def attachment_delete(*, user: AbstractBaseUser, attachment_id: uuid.UUID) -> None:
    """Delete an upload that is on no message yet (another user's: as if missing)."""
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, user=user).first()
        if attachment is None:
            raise NotFound("no such attachment")
        if attachment.messages.exists():
            raise AttachmentInUse()
        attachment.delete()
    attachment_files_delete(ids=[attachment_id])


def attachments_for_send(*, user: AbstractBaseUser, ids: tuple[uuid.UUID, ...]) -> list[Attachment]:
    """The user's attachments named by a send, in the order named; a missing id,
    or another user's, is refused alike (:class:`NotFound`)."""
    if not ids:
        return []
    limit = settings.CHATSITE_ATTACHMENTS_PER_MESSAGE
    unique = list(dict.fromkeys(ids))
    if len(unique) > limit:
        raise TooManyAttachments(limit=limit)
    found = {a.pk: a for a in Attachment.objects.filter(pk__in=unique, user=user)}
    if len(found) != len(unique):
        raise NotFound("no such attachment: it was removed, or it is not yours; attach the file again")
    return [found[pk] for pk in unique]


def attachments_bind(*, message: Message, attachments: list[Attachment]) -> None:
    """Put the attachments on the user's message (inside the transaction that stores it)."""
    if attachments:
        message.attachments.add(*attachments)


def attachment_image(*, attachment: Attachment) -> ImagePart:
    """An image's bytes, as the model is sent them: the image, or the smaller copy
    a large one has (a JPEG, or a PNG where it is transparent)."""
    try:
        data = _model_copy_path(attachment.pk).read_bytes()
    except FileNotFoundError:
        return ImagePart(attachment.media_type, attachment_path(attachment_id=attachment.pk).read_bytes())
    return ImagePart("image/png" if data.startswith(b"\x89PNG") else "image/jpeg", data)


def attachment_prompt_text(*, attachment: Attachment, sees_images: bool) -> str:
    """What the model reads of an attachment besides an image itself: a file's
    text under a header with its name; for an image a model cannot see, a note."""
    if attachment.kind == Attachment.Kind.IMAGE:
        return (
            "" if sees_images else f"[An image, {attachment.name}, was attached; this model cannot see it.]"
        )
    if attachment.kind == Attachment.Kind.PDF and not attachment.text.strip():
        return f"[A PDF, {attachment.name}, was attached; no text could be taken out of it.]"
    return f"<file name={json.dumps(attachment.name, ensure_ascii=False)}>\n{attachment.text}\n</file>"


def attachments_purge(*, older_than: timedelta = timedelta(days=1), dry_run: bool = False) -> int:
    """Delete uploads that were never sent (or whose messages are all gone) and
    are older than ``older_than``, and their files; returns how many."""
    cutoff = timezone.now() - older_than
    stale = Attachment.objects.filter(messages=None, created_at__lt=cutoff)
    ids = list(stale.values_list("pk", flat=True))
    if dry_run or not ids:
        return len(ids)
    Attachment.objects.filter(pk__in=ids, messages=None).delete()
    gone = set(ids) - set(Attachment.objects.filter(pk__in=ids).values_list("pk", flat=True))
    attachment_files_delete(ids=list(gone))
    return len(gone)
