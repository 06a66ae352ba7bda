"""Import conversations from chatsite's own JSON export or a ChatGPT ``conversations.json``.

The file is decoded and checked completely before anything is written, then
everything is written in one transaction. A file that cannot be read as a whole
(not JSON, not either shape, over a limit, or a chatsite export with any
problem) raises ``ImportRejected`` with a message for the user, naming where in
the file it is, and nothing is written. A ChatGPT-shaped file (other tools write
it too) is read leniently, and a conversation in it that still cannot be read is
skipped with its reason (:class:`Skipped`) while the rest are imported. The rules
are in ``docs/export-format.md``.

Imported conversations and messages always get new ids (the ids in the file
only link messages to their parents): an import never collides with, replaces
or reveals anything already stored, and importing a file twice gives two copies.
"""

from __future__ import annotations

import io
import json
import math
import re
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, overload

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, models, router, transaction
from django.utils import timezone

from conversations import tree
from conversations.exceptions import AttachmentRejected, ImportRejected
from conversations.models import Attachment, Conversation, Message
from conversations.services import attachments as attachment_services
from conversations.services.conversations import TITLE_MAX_CHARS, title_auto, title_shorten
from conversations.transfer.exporting import FORMAT, VERSION

# Limits on what one file may hold, beyond its size (CHATSITE_MAX_IMPORT_BYTES).
MAX_CONVERSATIONS = 20_000
MAX_MESSAGES_PER_CONVERSATION = 20_000
MAX_MESSAGES = 200_000
MAX_TEXT_CHARS = 1_000_000  # one message's text, or a system prompt
MAX_ID_CHARS = 200  # a message or node id in the file
MAX_PARTS = 1_000  # parts of one ChatGPT message
MAX_SEGMENTS = 1_000
MAX_ATTACHMENTS = 100  # on one message
MAX_ZIP_ENTRIES = 100_000
MAX_INT = 2_147_483_647  # PositiveIntegerField on every database
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

STATUSES = {"complete", "stopped", "error", "interrupted"}


@dataclass(slots=True)
class ParsedMessage:
    parent: int | None  # index into ParsedConversation.messages, always earlier
    role: str
    content: str
    created_at: datetime
    reply: dict = field(default_factory=dict)  # Message fields of an assistant reply
    #: A user message's attachments: {"key", "name", "file", "text", "where"} each.
    attachments: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class ParsedConversation:
    title: str
    title_is_auto: bool
    model: str
    created_at: datetime
    updated_at: datetime
    messages: list[ParsedMessage]
    active_leaf: int | None
    pinned: bool = False
    archived: bool = False
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    thinking_budget: int | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A conversation of a ChatGPT file that was not imported, and why."""

    index: int  # its place in the file, counted from 1
    title: str  # its title in the file ("" when it has none)
    reason: str  # for people
    code: str  # "empty" (nothing to show), "invalid" (could not be read) or "too_many"

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "title": self.title, "reason": self.reason, "code": self.code}


@dataclass(frozen=True, slots=True)
class ParsedFile:
    source: str  # "chatsite" or "chatgpt"
    conversations: list[ParsedConversation]
    skipped: list[Skipped]  # ChatGPT conversations left out


@dataclass(frozen=True, slots=True)
class ImportResult:
    source: str
    conversations: list[Conversation]
    skipped: list[Skipped]


# --- Entry points ---------------------------------------------------------------


def conversations_import(*, user: AbstractBaseUser, data: bytes) -> ImportResult:
    """Import the conversations in ``data`` for ``user`` in one transaction.

    Raises ``ImportRejected`` (and writes nothing) for a file that cannot be read
    as a whole; the ChatGPT conversations it skips are in ``ImportResult.skipped``.
    """
    archive = None
    if data[:4] == b"PK\x03\x04":
        data, archive = _unzip(data)
    parsed = parse_file(data)
    written: list[uuid.UUID] = []
    try:
        with transaction.atomic():
            conversations = _store(user, parsed.conversations)
            _store_attachments(user, parsed.conversations, conversations, archive, written)
    except BaseException:
        attachment_services.attachment_files_delete(ids=written)  # nothing was stored: nor are their files
        raise
    return ImportResult(parsed.source, conversations, parsed.skipped)


def _zip_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, reading no more than ``limit`` (whatever its header claims)."""
    try:
        with archive.open(name) as member:
            data = member.read(limit + 1) if limit else member.read()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError):
        raise ImportRejected(
            f"{name} in the ZIP archive could not be read: the archive is damaged.", "zip"
        ) from None
    if limit and len(data) > limit:
        raise ImportRejected(f"{name} in the ZIP archive is larger than {megabytes(limit)}.", "too_large")
    return data


def _unzip(data: bytes) -> tuple[bytes, zipfile.ZipFile]:
    """A zip export: its ``conversations.json``, and the archive to read attachments from."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        raise ImportRejected("The ZIP archive is damaged; export it again.", "zip") from None
    if len(names) > MAX_ZIP_ENTRIES:
        raise ImportRejected(f"The ZIP archive holds more than {MAX_ZIP_ENTRIES:,} files.", "too_many")
    if "conversations.json" not in names:
        raise ImportRejected(
            "This ZIP archive has no conversations.json at its top: upload a chatsite export (.zip or "
            ".json), or the conversations.json of a ChatGPT export.",
            "zip",
        )
    return _zip_member(archive, "conversations.json", settings.CHATSITE_MAX_IMPORT_BYTES), archive


def _chatsite_attachments(item: dict, at: str) -> list[dict]:
    """A user message's ``attachments``: each with a ``name``, and a ``file`` in the zip or its ``text``."""
    raw = item.get("attachments")
    if raw is None:
        return []
    found = []
    for k, entry in enumerate(_list(raw, f"{at}.attachments", MAX_ATTACHMENTS)):
        where = f"{at}.attachments[{k}]"
        entry = _object(entry, where)
        found.append(
            {
                "key": _text(entry, "id", where, limit=MAX_ID_CHARS, default="") or where,
                "name": _text(entry, "name", where, limit=attachment_services.NAME_MAX_CHARS, default=""),
                "file": _text(entry, "file", where, limit=MAX_ID_CHARS, nullable=True, default=None),
                "text": _text(entry, "text", where, limit=MAX_TEXT_CHARS, nullable=True, default=None),
                "where": where,
            }
        )
    return found


def _attachment_from(entry: dict, archive: zipfile.ZipFile | None) -> attachment_services.Checked | None:
    """What an exported attachment is, checked as an upload is: its file's bytes from
    the zip, else (a JSON-only export) its text; None when neither came along."""
    name = entry["file"]
    if archive is not None and name and name in archive.namelist():
        data = _zip_member(archive, name, settings.CHATSITE_ATTACHMENT_MAX_BYTES)
        try:
            return attachment_services.attachment_check(data=data)
        except AttachmentRejected as exc:
            raise ImportRejected(f"{entry['where']} ({name}): {exc.message}.", "bad_attachment") from None
    text = entry["text"]
    if text:
        return attachment_services.Checked("text", "text/plain", text.encode("utf-8"), text=text)
    return None


def _default_name(checked: attachment_services.Checked) -> str:
    return f"{checked.kind}.{attachment_services.EXTENSIONS.get(checked.media_type, 'bin')}"


def _store_attachments(
    user: AbstractBaseUser,
    parsed: list[ParsedConversation],
    stored: list[Conversation],
    archive: zipfile.ZipFile | None,
    written: list[uuid.UUID],
) -> None:
    """The attachments of the imported user messages (new ids; one per exported id,
    so a file on two versions of a message is one attachment on both)."""
    links = []
    made: dict[str, Attachment | None] = {}
    attachments: list[Attachment] = []
    for item, conversation in zip(parsed, stored, strict=True):
        ids = [m.pk for m in conversation.imported_messages]  # type: ignore[attr-defined]
        for n, message in enumerate(item.messages):
            for entry in message.attachments:
                if entry["key"] not in made:
                    checked = _attachment_from(entry, archive)
                    attachment = None
                    if checked is not None:
                        attachment = Attachment(
                            user=user,
                            kind=checked.kind,
                            media_type=checked.media_type,
                            name=entry["name"] or _default_name(checked),
                            size=len(checked.data),
                            width=checked.width,
                            height=checked.height,
                            text=checked.text,
                            pages=checked.pages,
                        )
                        written.append(attachment.pk)
                        attachment_services.attachment_write(
                            attachment_id=attachment.pk, data=checked.data, kind=checked.kind
                        )
                        attachments.append(attachment)
                    made[entry["key"]] = attachment
                attachment = made[entry["key"]]
                if attachment is not None:
                    links.append(Attachment.messages.through(attachment_id=attachment.pk, message_id=ids[n]))
    Attachment.objects.bulk_create(attachments)
    Attachment.messages.through.objects.bulk_create(links, ignore_conflicts=True)


def conversation_import_document(*, user: AbstractBaseUser, document: dict) -> Conversation:
    """Store the one conversation of a chatsite export document that is already
    decoded (a shared link's snapshot, continued as a copy), checked by the same
    rules as an uploaded file. Raises ``ImportRejected`` and writes nothing then."""
    parsed = _chatsite_file(document)
    if len(parsed.conversations) != 1:
        raise ImportRejected("The document must hold exactly one conversation.")
    with transaction.atomic():
        return _store(user, parsed.conversations)[0]


def parse_file(data: bytes) -> ParsedFile:
    """Decode and check a whole file; touches no database."""
    document = _decode(data)
    if isinstance(document, dict) and "format" in document:
        if document["format"] != FORMAT:
            raise ImportRejected(f"Unknown export format {_show(document['format'])}; expected {FORMAT!r}.")
        parsed = _chatsite_file(document)
    elif isinstance(document, list):
        parsed = _chatgpt_file(document)
    elif isinstance(document, dict) and "mapping" in document:  # one ChatGPT conversation
        parsed = _chatgpt_file([document])
    else:
        raise ImportRejected(
            "This is not a chatsite export or a ChatGPT conversations.json: "
            'expected {"format": "chatsite", …} or a list of conversations.',
            "unknown_format",
        )
    if not parsed.conversations:
        raise ImportRejected("The file contains no conversations to import.", "empty")
    return parsed


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _decode(data: bytes) -> Any:
    limit = settings.CHATSITE_MAX_IMPORT_BYTES
    if limit and len(data) > limit:
        raise ImportRejected(
            f"The file is {megabytes(len(data))}; the largest file this server imports is "
            f"{megabytes(limit)}.",
            "too_large",
        )
    if data[:4] == b"PK\x03\x04":
        raise ImportRejected(
            "This is a ZIP archive. Unpack your ChatGPT export and upload the conversations.json inside it.",
            "zip",
        )
    if not data.strip():
        raise ImportRejected("The file is empty.", "empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRejected("The file is not UTF-8 text, so it is not a JSON export.", "not_json") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ImportRejected("The file's JSON is nested too deeply.", "too_deep") from None
    except json.JSONDecodeError as exc:
        raise ImportRejected(
            f"The file is not valid JSON ({exc.msg}; line {exc.lineno}, column {exc.colno}).", "not_json"
        ) from None
    except _NotANumber as exc:
        raise ImportRejected(
            f"The file is not valid JSON ({exc} is not a JSON number).", "not_json"
        ) from None
    except ValueError:  # an integer with more digits than Python converts
        raise ImportRejected(
            "The file is not valid JSON (a number in it has too many digits).", "not_json"
        ) from None


class _NotANumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotANumber(name)


# --- Checking values --------------------------------------------------------------

_MISSING = object()


def _show(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a value from the file, for an error message."""
    if not _small(value):
        return _type_name(value)
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def _small(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _fail(where: str, problem: str) -> ImportRejected:
    return ImportRejected(f"{where}: {problem}.")


def _get(obj: dict, key: str, where: str, required: bool) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING and required:
        raise _fail(f"{where}.{key}", "missing")
    return value


@overload
def _text(
    obj: dict,
    key: str,
    where: str,
    *,
    limit: int,
    default: str | None = None,
    nullable: Literal[False] = False,
) -> str: ...
@overload
def _text(
    obj: dict, key: str, where: str, *, limit: int, default: str | None = None, nullable: Literal[True]
) -> str | None: ...
def _text(
    obj: dict, key: str, where: str, *, limit: int, default: str | None = None, nullable: bool = False
) -> str | None:
    """A text field; missing, it is ``default`` (required when there is none); ``None``
    only when ``nullable`` (a null in the file, or missing without a default)."""
    value = _get(obj, key, where, required=default is None and not nullable)
    if value is _MISSING or (value is None and nullable):
        return default if value is _MISSING else None
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", f"must be text, not {_type_name(value)}")
    if len(value) > limit:
        raise _fail(f"{where}.{key}", f"is {len(value):,} characters long; the limit is {limit:,}")
    return value


def _flag(obj: dict, key: str, where: str, default: bool) -> bool:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail(f"{where}.{key}", f"must be true or false, not {_type_name(value)}")
    return value


@overload
def _number(
    obj: dict, key: str, where: str, *, low: float, high: float, integer: Literal[False] = False
) -> float | None: ...
@overload
def _number(
    obj: dict, key: str, where: str, *, low: float, high: float, integer: Literal[True]
) -> int | None: ...
def _number(
    obj: dict, key: str, where: str, *, low: float, high: float, integer: bool = False
) -> float | int | None:
    value = obj.get(key)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise _fail(f"{where}.{key}", f"must be {'a whole number' if integer else 'a number'} or null")
    if not math.isfinite(value) or not low <= value <= high:
        raise _fail(f"{where}.{key}", f"must be between {_figure(low)} and {_figure(high)}")
    return value if integer else float(value)


def _figure(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


@overload
def _moment(obj: dict, key: str, where: str, *, required: Literal[True]) -> datetime: ...
@overload
def _moment(obj: dict, key: str, where: str, *, required: Literal[False]) -> datetime | None: ...
def _moment(obj: dict, key: str, where: str, *, required: bool) -> datetime | None:
    value = _get(obj, key, where, required)
    if value is _MISSING or (value is None and not required):
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _fail(f"{where}.{key}", "must be an ISO 8601 date and time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{where}.{key}", f"{_show(value)} is not an ISO 8601 date and time") from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:
        raise _fail(f"{where}.{key}", f"{_show(value)} is not a plausible date")
    return moment


def _epoch(obj: dict, key: str, where: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{where}.{key}", "must be a number of seconds since 1970 or null")
    try:
        moment = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise _fail(f"{where}.{key}", f"{value!r} is not a plausible time") from None
    if not EARLIEST <= moment <= LATEST:
        raise _fail(f"{where}.{key}", f"{value!r} is not a plausible time")
    return moment


@overload
def _object(value: Any, where: str, *, nullable: Literal[False] = False) -> dict: ...
@overload
def _object(value: Any, where: str, *, nullable: Literal[True]) -> dict | None: ...
def _object(value: Any, where: str, *, nullable: bool = False) -> dict | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise _fail(where, f"must be an object, not {_type_name(value)}")
    return value


def _list(value: Any, where: str, limit: int) -> list:
    if not isinstance(value, list):
        raise _fail(where, f"must be a list, not {_type_name(value)}")
    if len(value) > limit:
        raise ImportRejected(f"{where}: {len(value):,} entries; the limit is {limit:,}.", "too_many")
    return value


def _tree_order(
    parents: dict[str, str | None], where: Callable[[str], str], key: Callable[[str], Any]
) -> list[str]:
    """Ids ordered so that each comes after its parent (oldest first otherwise).

    Raises for a parent that is not in ``parents`` and for parent links that loop.
    """
    for node, parent in parents.items():
        if parent is not None and parent not in parents:
            raise _fail(where(node), f"its parent {_show(parent)} is not in this conversation")
    order = tree.tree_order(parents=parents, key=key)
    if len(order) != len(parents):
        reached = set(order)
        stuck = next(node for node in parents if node not in reached)
        raise _fail(where(stuck), "its parent links form a cycle (it is its own ancestor)")
    return order


class _FileRejected(ImportRejected):
    """A problem with the file as a whole, even inside one ChatGPT conversation."""


class _Counter:
    """Counts messages across the whole file."""

    def __init__(self) -> None:
        self.messages = 0

    def add(self, n: int) -> None:
        self.messages += n
        if self.messages > MAX_MESSAGES:
            raise _FileRejected(
                f"The file holds more than {MAX_MESSAGES:,} messages; import it in parts.", "too_many"
            )


def _auto_title(messages: list[ParsedMessage]) -> str:
    first = next((m.content for m in messages if m.role == "user" and m.content.strip()), "")
    return title_auto(text=first)


def _join_prompts(parts: list[str]) -> str:
    unique: list[str] = []
    seen: set[str] = set()
    for part in parts:
        key = part.strip()
        if key and key not in seen:
            seen.add(key)
            unique.append(part)
    return "\n\n".join(unique)


# --- chatsite's own format ---------------------------------------------------------


def _chatsite_file(document: dict) -> ParsedFile:
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ImportRejected("version: must be a whole number (this is format version 1).")
    if version > VERSION:
        raise ImportRejected(
            f"This export uses format version {version}, made by a newer chatsite; "
            f"this one reads version {VERSION}.",
            "version",
        )
    if version < 1:
        raise ImportRejected(f"version: {version} is not a chatsite format version.")
    raw = _list(_get(document, "conversations", "file", True), "conversations", MAX_CONVERSATIONS)
    counter = _Counter()
    conversations = [
        _chatsite_conversation(item, f"conversations[{i}]", counter) for i, item in enumerate(raw)
    ]
    return ParsedFile("chatsite", conversations, [])


def _chatsite_conversation(raw: Any, where: str, counter: _Counter) -> ParsedConversation:
    raw = _object(raw, where)
    title = _text(raw, "title", where, limit=TITLE_MAX_CHARS, default="")
    created_at = _moment(raw, "created_at", where, required=True)
    messages_raw = _list(
        _get(raw, "messages", where, True), f"{where}.messages", MAX_MESSAGES_PER_CONVERSATION
    )
    counter.add(len(messages_raw))
    found: dict[str, tuple[str, str | None, str, str, datetime, dict]] = {}
    attached: dict[str, list[dict]] = {}
    for j, item in enumerate(messages_raw):
        at = f"{where}.messages[{j}]"
        item = _object(item, at)
        message_id = _text(item, "id", at, limit=MAX_ID_CHARS)
        if not message_id:
            raise _fail(f"{at}.id", "must not be empty")
        if message_id in found:
            raise _fail(f"{at}.id", f"{_show(message_id)} is used by another message too")
        parent = _text(item, "parent", at, limit=MAX_ID_CHARS, nullable=True, default=None)
        role = _get(item, "role", at, True)
        if role not in ("user", "assistant", "system"):
            raise _fail(f"{at}.role", f"must be 'user', 'assistant' or 'system', not {_show(role)}")
        content = _text(item, "content", at, limit=MAX_TEXT_CHARS, default="")
        moment = _moment(item, "created_at", at, required=True)
        reply = _chatsite_reply(item, at) if role == "assistant" else {}
        found[message_id] = (at, parent, role, content, moment, reply)
        if role == "user":
            attached[message_id] = _chatsite_attachments(item, at)

    order = _tree_order(
        {k: v[1] for k, v in found.items()},
        where=lambda k: found[k][0],
        key=lambda k: found[k][4],
    )
    messages: list[ParsedMessage] = []
    index: dict[str, int | None] = {}
    system: list[str] = [_text(raw, "system_prompt", where, limit=MAX_TEXT_CHARS, default="")]
    for key in order:
        _, parent, role, content, moment, reply = found[key]
        parent_index = index[parent] if parent is not None else None
        if role == "system":  # chatsite keeps it on the conversation; its children move up
            system.append(content)
            index[key] = parent_index
            continue
        index[key] = len(messages)
        messages.append(ParsedMessage(parent_index, role, content, moment, reply, attached.get(key, [])))

    active = _text(raw, "active_leaf", where, limit=MAX_ID_CHARS, nullable=True, default=None)
    if active is not None and active not in found:
        raise _fail(f"{where}.active_leaf", f"{_show(active)} is not a message of this conversation")
    system_prompt = _join_prompts(system)
    if len(system_prompt) > MAX_TEXT_CHARS:
        raise _fail(f"{where}.system_prompt", f"is longer than {MAX_TEXT_CHARS:,} characters")
    return ParsedConversation(
        title=title,
        title_is_auto=_flag(raw, "title_is_auto", where, default=not title),
        model=_text(raw, "model", where, limit=200, default=""),
        created_at=created_at,
        updated_at=_moment(raw, "updated_at", where, required=False) or created_at,
        messages=messages,
        active_leaf=index[active] if active is not None else None,
        pinned=_flag(raw, "pinned", where, default=False),
        archived=_flag(raw, "archived", where, default=False),
        system_prompt=system_prompt,
        temperature=_number(raw, "temperature", where, low=0, high=2),
        max_tokens=_number(raw, "max_tokens", where, low=1, high=MAX_INT, integer=True),
        thinking_budget=_number(raw, "thinking_budget", where, low=0, high=MAX_INT, integer=True),
    )


def _chatsite_reply(item: dict, at: str) -> dict:
    status = _text(item, "status", at, limit=16, default="complete")
    if status == "streaming":  # exported mid-stream: it will never finish now
        status = "interrupted"
    if status not in STATUSES:
        raise _fail(f"{at}.status", f"must be one of {', '.join(sorted(STATUSES))}, not {_show(status)}")
    metrics = _object(item.get("metrics"), f"{at}.metrics", nullable=True) or {}
    usage = _object(item.get("usage"), f"{at}.usage", nullable=True) or {}
    return {
        "status": status,
        "error_kind": _text(item, "error_kind", at, limit=32, nullable=True, default="") or "",
        "error_message": _text(item, "error", at, limit=500, nullable=True, default="") or "",
        "provider": _text(item, "provider", at, limit=64, nullable=True, default="") or "",
        "model": _text(item, "model", at, limit=200, nullable=True, default="") or "",
        "finish_reason": _text(item, "finish_reason", at, limit=64, nullable=True, default="") or "",
        "finished_at": _moment(item, "finished_at", at, required=False),
        "last_seq": _number(item, "last_seq", at, low=0, high=MAX_INT, integer=True) or 0,
        "ttft_ms": _number(metrics, "ttft_ms", f"{at}.metrics", low=0, high=1e12),
        "tokens_per_s": _number(metrics, "tokens_per_s", f"{at}.metrics", low=0, high=1e12),
        "total_ms": _number(metrics, "total_ms", f"{at}.metrics", low=0, high=1e12),
        "prompt_tokens": _number(usage, "prompt_tokens", f"{at}.usage", low=0, high=MAX_INT, integer=True),
        "completion_tokens": _number(
            usage, "completion_tokens", f"{at}.usage", low=0, high=MAX_INT, integer=True
        ),
        "usage_counted": _flag(usage, "counted", f"{at}.usage", default=False),
        "segments": _segments(item.get("segments"), f"{at}.segments"),
        "first_answer_ms": _number(metrics, "first_answer_ms", f"{at}.metrics", low=0, high=1e12),
        "reasoning_ms": _number(metrics, "reasoning_ms", f"{at}.metrics", low=0, high=1e12),
        "reasoning": _text(item, "reasoning", at, limit=MAX_TEXT_CHARS, nullable=True, default="") or "",
        "reasoning_redacted": _flag(item, "reasoning_redacted", at, default=False),
        "reasoning_signature": _text(
            item, "reasoning_signature", at, limit=MAX_TEXT_CHARS, nullable=True, default=""
        )
        or "",
    }


def _segments(value: Any, where: str) -> list[dict]:
    """The metrics of earlier parts of a continued reply: flat objects of plain values."""
    if value is None:
        return []
    out: list[dict] = []
    for i, segment in enumerate(_list(value, where, MAX_SEGMENTS)):
        segment = _object(segment, f"{where}[{i}]")
        if len(segment) > 32:
            raise _fail(f"{where}[{i}]", "has too many fields")
        for key, item in segment.items():
            if len(key) > 64 or not _small(item):
                raise _fail(f"{where}[{i}]", f"field {_show(key)} must hold a plain value")
            if isinstance(item, str) and len(item) > 1000:
                raise _fail(f"{where}[{i}].{key}", "is too long")
            if isinstance(item, float) and not math.isfinite(item):
                raise _fail(f"{where}[{i}].{key}", "must be a finite number")
        out.append(segment)
    return out


# --- ChatGPT's conversations.json ----------------------------------------------------

#: What a non-text part of a ChatGPT message becomes.
PLACEHOLDERS = {
    "image_asset_pointer": "[image]",
    "audio_asset_pointer": "[audio]",
    "real_time_user_audio_video_asset_pointer": "[audio]",
    "video_container_asset_pointer": "[video]",
}
#: Content types that are the model's reasoning (kept as the next reply's
#: ``reasoning``, never shown as a reply of their own).
REASONING_CONTENT = {"thoughts", "reasoning_recap"}
#: "Thought for 1m 5s", "Thought for 12 seconds": the parts of a reasoning recap.
RECAP_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(h|hours?|m|min|minutes?|s|sec|seconds?)\b", re.IGNORECASE)


@dataclass(slots=True)
class _Node:
    key: str
    parent: str | None
    at: str  # where, for messages
    kind: str  # "user", "assistant", "system", "reasoning" or "skip"
    text: str = ""
    created_at: datetime | None = None
    reply: dict = field(default_factory=dict)
    reasoning_ms: float | None = None  # a reasoning recap's figure


NOTHING_TO_SHOW = "it has no messages to show (only hidden, empty or tool messages)"


def _chatgpt_file(raw: list) -> ParsedFile:
    """Every conversation that can be read; the others are skipped with their reason.

    The file as a whole is refused when it is over a limit, or when none of its
    conversations can be read.
    """
    _list(raw, "The file's list of conversations", MAX_CONVERSATIONS)
    counter = _Counter()
    conversations: list[ParsedConversation] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(raw):
        title = item.get("title") if isinstance(item, dict) else None
        title = " ".join(title.split())[:80] if isinstance(title, str) else ""
        if not isinstance(item, dict):
            reason = f"it is {_type_name(item)}, not a conversation (an object)"
            skipped.append(Skipped(i + 1, title, reason, "invalid"))
            continue
        try:
            conversation = _chatgpt_conversation(item, counter)
        except _FileRejected:
            raise
        except ImportRejected as exc:
            reason = f"it could not be read ({str(exc).rstrip('.')})"
            skipped.append(Skipped(i + 1, title, reason, "too_many" if exc.code == "too_many" else "invalid"))
            continue
        if conversation is None:
            skipped.append(Skipped(i + 1, title, NOTHING_TO_SHOW, "empty"))
        else:
            conversations.append(conversation)
    unreadable = [s for s in skipped if s.code != "empty"]
    if not conversations and unreadable:
        if not any(isinstance(item, dict) and "mapping" in item for item in raw):
            raise ImportRejected(
                "This is not a chatsite export or a ChatGPT conversations.json: it is a list, "
                'but none of its entries is a conversation (an object with a "mapping" of messages).',
                "unknown_format",
            )
        first = unreadable[0]
        name = skipped_name(first)
        raise ImportRejected(
            f"None of the file's {len(raw):,} conversations could be read. "
            f"{name[0].upper()}{name[1:]}: {first.reason}.",
            first.code,
        )
    return ParsedFile("chatgpt", conversations, skipped)


def skipped_name(skipped: Skipped) -> str:
    """How a skipped conversation is named for people: "conversation 3 ('Title')"."""
    name = f"conversation {skipped.index}"
    return f"{name} ({_show(skipped.title, 40)})" if skipped.title else name


def _chatgpt_conversation(raw: dict, counter: _Counter) -> ParsedConversation | None:
    """One conversation; ImportRejected (its message naming no conversation) if it cannot be read."""
    where = "conversation"
    title = raw.get("title")
    if not isinstance(title, str):  # a tool that wrote something else: no title
        title = None
    if "mapping" not in raw:
        raise ImportRejected('it has no "mapping" (the object that holds its messages)')
    mapping = _object(raw["mapping"], f"{where}.mapping")
    if len(mapping) > MAX_MESSAGES_PER_CONVERSATION:
        raise ImportRejected(
            f"it has {len(mapping):,} messages; the limit is {MAX_MESSAGES_PER_CONVERSATION:,}.", "too_many"
        )
    counter.add(len(mapping))
    created = _epoch(raw, "create_time", where)
    updated = _epoch(raw, "update_time", where)

    nodes: dict[str, _Node] = {}
    for key, node in mapping.items():
        if len(key) > MAX_ID_CHARS:
            raise _fail(f"{where}.mapping", f"node id {_show(key)} is too long")
        nodes[key] = _chatgpt_node(key, node, f"node {_show(key)}")
    order = _tree_order(
        {k: n.parent for k, n in nodes.items()},
        where=lambda k: nodes[k].at,
        key=lambda k: (nodes[k].created_at or EARLIEST, k),
    )

    # Keep user and assistant messages; everything else is left out and its
    # children hang from its nearest kept ancestor.
    kept_parent: dict[str, str | None] = {}  # node -> nearest kept ancestor-or-self
    system: list[str] = []
    parent_of: dict[str, str | None] = {}
    child_count: dict[str | None, int] = defaultdict(int)
    # The reasoning (thoughts, a recap) on the way down to a node since the
    # last kept message: the next reply's.
    thought: dict[str, tuple[str, float | None]] = {}
    for key in order:
        node = nodes[key]
        above = kept_parent[node.parent] if node.parent is not None else None
        carried = thought.get(node.parent) if node.parent is not None else None
        if node.kind == "system":
            system.append(node.text)
        if node.kind in ("user", "assistant"):
            kept_parent[key] = key
            parent_of[key] = above
            child_count[above] += 1
            if node.kind == "assistant" and carried is not None:
                text, ms = carried
                node.reply = {**node.reply, "reasoning": text, "reasoning_ms": ms}
        else:
            kept_parent[key] = above
            if node.kind == "reasoning":
                text, ms = carried or ("", None)
                text = f"{text}\n\n{node.text}".strip() if node.text else text
                if len(text) > MAX_TEXT_CHARS:
                    raise _fail(node.at, f"the reasoning is longer than {MAX_TEXT_CHARS:,} characters")
                thought[key] = (text, node.reasoning_ms if node.reasoning_ms is not None else ms)
            elif carried is not None:
                thought[key] = carried

    # A reply that ran a tool (assistant → tool → assistant) is one reply here:
    # an assistant message that is the only child of another is merged into it.
    alias: dict[str, str] = {}
    messages: list[ParsedMessage] = []
    index: dict[str, int] = {}
    for key in order:
        if key not in parent_of:
            continue
        node = nodes[key]
        parent = parent_of[key]
        parent = alias.get(parent, parent) if parent is not None else None
        if node.kind == "assistant" and parent is not None and child_count[parent_of[key]] == 1:
            target = messages[index[parent]]
            if target.role == "assistant":
                target.content = f"{target.content}\n\n{node.text}"
                if len(target.content) > MAX_TEXT_CHARS:
                    raise _fail(node.at, f"the reply is longer than {MAX_TEXT_CHARS:,} characters")
                target.reply = {**target.reply, **{k: v for k, v in node.reply.items() if v}}
                alias[key] = parent
                continue
        inherited = messages[index[parent]].created_at if parent is not None else created
        moment = node.created_at or inherited
        index[key] = len(messages)
        messages.append(
            ParsedMessage(
                index[parent] if parent is not None else None,
                node.kind,
                node.text,
                moment or timezone.now(),
                node.reply,
            )
        )
    if not messages:
        return None

    current = raw.get("current_node")
    if current is not None and not isinstance(current, str):
        raise _fail(f"{where}.current_node", f"must be a node id, not {_type_name(current)}")
    if current is not None and current not in nodes:
        raise _fail(f"{where}.current_node", f"{_show(current)} is not a node of this conversation")
    if current is None:  # no current branch recorded: the newest path
        leaf = None
        for n, message in enumerate(messages):
            if leaf is None or message.created_at >= messages[leaf].created_at:
                leaf = n
        active = leaf
    else:
        shown = kept_parent[current]
        active = index[alias.get(shown, shown)] if shown is not None else None

    system_prompt = _join_prompts(system)
    if len(system_prompt) > MAX_TEXT_CHARS:
        raise _fail("its system messages", f"are longer than {MAX_TEXT_CHARS:,} characters")
    last_model = next((m.reply.get("model") for m in reversed(messages) if m.reply.get("model")), "")
    default_model = raw.get("default_model_slug")
    model = default_model if isinstance(default_model, str) and default_model else last_model
    title = title_shorten(text=(title or "").strip())
    first = min(m.created_at for m in messages)
    last = max(m.created_at for m in messages)
    return ParsedConversation(
        title=title or _auto_title(messages),
        title_is_auto=not title,
        model=f"chatgpt/{model}"[:200] if model else "",
        created_at=created or first,
        updated_at=updated or max(last, created or first),
        messages=messages,
        active_leaf=active,
        archived=raw.get("is_archived") is True,
        system_prompt=system_prompt,
    )


def _chatgpt_node(key: str, node: Any, where: str) -> _Node:
    node = _object(node, where)
    parent = node.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise _fail(f"{where}.parent", f"must be a node id or null, not {_type_name(parent)}")
    children = node.get("children")
    if children is not None and not isinstance(children, list):
        raise _fail(f"{where}.children", f"must be a list, not {_type_name(children)}")
    message = _object(node.get("message"), f"{where}.message", nullable=True)
    if message is None:  # the root of every ChatGPT conversation
        return _Node(key, parent, where, "skip")
    at = f"{where}.message"
    author = message.get("author")
    if author is None:
        raise _fail(where, "its message has no author, so who wrote it is not known")
    author = _object(author, f"{at}.author")
    role = author.get("role")
    if not isinstance(role, str):
        raise _fail(where, f"its message's author has no role (user or assistant), but {_type_name(role)}")
    if message.get("content") is None:  # nothing to show
        return _Node(key, parent, where, "skip")
    content = _object(message["content"], f"{at}.content")
    metadata = _object(message.get("metadata") or {}, f"{at}.metadata")
    created_at = _epoch(message, "create_time", at)
    content_type = content.get("content_type")
    if content_type is None:  # other tools leave it out: their parts (or text) are text
        content_type = "text"
    if not isinstance(content_type, str):
        raise _fail(f"{at}.content.content_type", f"must be text, not {_type_name(content_type)}")

    if content_type == "user_editable_context":  # custom instructions: the system prompt in effect
        parts = [
            _text(content, name, f"{at}.content", limit=MAX_TEXT_CHARS, nullable=True, default="") or ""
            for name in ("user_profile", "user_instructions")
        ]
        return _Node(key, parent, where, "system", _join_prompts(parts), created_at)
    hidden = metadata.get("is_visually_hidden_from_conversation") is True
    recipient = message.get("recipient")
    if content_type in REASONING_CONTENT and role == "assistant":
        return _chatgpt_reasoning(key, parent, where, content, content_type, created_at)
    if (
        role not in ("user", "assistant", "system")  # "tool": search results, code output, …
        or hidden
        or content_type in REASONING_CONTENT
        or (role == "assistant" and recipient not in (None, "all") and content_type != "code")
    ):
        return _Node(key, parent, where, "skip")
    text = _chatgpt_text(content, content_type, f"{at}.content")
    if not text.strip():
        return _Node(key, parent, where, "skip")
    if role == "system":
        return _Node(key, parent, where, "system", text, created_at)
    reply = _chatgpt_reply(message, metadata, at) if role == "assistant" else {}
    return _Node(key, parent, where, role, text, created_at, reply)


def _chatgpt_reasoning(
    key: str, parent: str | None, where: str, content: dict, content_type: str, created_at: datetime | None
) -> _Node:
    """A ``thoughts`` node (its summaries and contents are the reasoning) or a
    ``reasoning_recap`` ("Thought for 12 seconds": how long it took)."""
    at = f"{where}.message.content"
    if content_type == "reasoning_recap":
        recap = _text(content, "content", at, limit=200, nullable=True, default="") or ""
        scale = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0}
        parts = RECAP_PART_RE.findall(recap)
        ms = sum(float(n) * scale[unit[0].lower()] for n, unit in parts) if parts else None
        return _Node(key, parent, where, "reasoning", "", created_at, reasoning_ms=ms)
    pieces: list[str] = []
    for n, item in enumerate(_list(content.get("thoughts") or [], f"{at}.thoughts", MAX_PARTS)):
        here = f"{at}.thoughts[{n}]"
        item = _object(item, here)
        summary = _text(item, "summary", here, limit=MAX_TEXT_CHARS, nullable=True, default="")
        body = _text(item, "content", here, limit=MAX_TEXT_CHARS, nullable=True, default="")
        if summary and summary.strip():
            pieces.append(f"**{summary.strip()}**")
        if body and body.strip():
            pieces.append(body.strip())
    return _Node(key, parent, where, "reasoning", "\n\n".join(pieces), created_at)


def _chatgpt_text(content: dict, content_type: str, where: str) -> str:
    if content_type == "code":
        code = _text(content, "text", where, limit=MAX_TEXT_CHARS, default="") or ""
        language = content.get("language")
        language = language if isinstance(language, str) and language.isidentifier() else ""
        fence = "```"
        while fence in code:
            fence += "`"
        return f"{fence}{'' if language == 'unknown' else language}\n{code}\n{fence}"
    if "parts" in content:
        pieces: list[str] = []
        parts = _list(content["parts"], f"{where}.parts", MAX_PARTS)
        # A voice message carries its transcription and the recording: keep the words only.
        transcribed = any(
            isinstance(p, dict) and p.get("content_type") == "audio_transcription" for p in parts
        )
        for n, part in enumerate(parts):
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict):
                kind = part.get("content_type")
                if isinstance(part.get("text"), str):  # a text part, a transcription
                    pieces.append(part["text"])
                elif transcribed and kind in (
                    "audio_asset_pointer",
                    "real_time_user_audio_video_asset_pointer",
                ):
                    continue
                else:
                    pieces.append(
                        PLACEHOLDERS.get(kind, "[attachment]") if isinstance(kind, str) else "[attachment]"
                    )
            elif part is not None:
                raise _fail(f"{where}.parts[{n}]", f"must be text or an object, not {_type_name(part)}")
        text = "\n\n".join(p for p in pieces if p)
    else:
        text = _text(content, "text", where, limit=MAX_TEXT_CHARS, default="") or ""
    if len(text) > MAX_TEXT_CHARS:
        raise _fail(where, f"the message is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
    return text


def _chatgpt_reply(message: dict, metadata: dict, at: str) -> dict:
    status = message.get("status")
    finish = metadata.get("finish_details")
    finish_type = finish.get("type") if isinstance(finish, dict) else None
    finish_type = finish_type if isinstance(finish_type, str) else ""
    if finish_type == "interrupted" or status == "finished_partial_completion":
        status = "stopped"  # the user pressed stop
    elif status == "in_progress":
        status = "interrupted"
    else:
        status = "complete"
    model = metadata.get("model_slug")
    model = model[:200] if isinstance(model, str) else ""
    finished_at = _epoch(message, "update_time", at) or _epoch(message, "create_time", at)
    return {
        "status": status,
        "provider": "chatgpt",
        "model": model,
        "finish_reason": finish_type[:64],
        "finished_at": finished_at,
    }


# --- Writing --------------------------------------------------------------------------

_REPLY_DEFAULTS: dict[str, object] = {
    "status": "complete",
    "error_kind": "",
    "error_message": "",
    "provider": "",
    "model": "",
    "finish_reason": "",
    "finished_at": None,
    "last_seq": 0,
    "ttft_ms": None,
    "tokens_per_s": None,
    "total_ms": None,
    "prompt_tokens": None,
    "completion_tokens": None,
    "usage_counted": False,
    "segments": [],
    "reasoning": "",
    "reasoning_ms": None,
    "first_answer_ms": None,
    "reasoning_redacted": False,
    "reasoning_signature": "",
}


def _insert_as_is(model: type[models.Model], objs: list) -> None:
    """Insert rows with exactly the values given.

    ``bulk_create`` would replace ``created_at``/``updated_at`` (auto_now_add,
    auto_now) with the current time; the ORM's raw insert, which ``loaddata``
    uses for the same reason, keeps the file's times. Foreign keys are checked
    at commit (Django creates them DEFERRABLE INITIALLY DEFERRED), so the rows
    may go in in any order within the transaction.
    """
    if not objs:
        return
    alias = router.db_for_write(model)
    fields = list(model._meta.concrete_fields)
    size = max(1, min(500, connections[alias].ops.bulk_batch_size(fields, objs)))
    for start in range(0, len(objs), size):
        model._base_manager._insert(objs[start : start + size], fields=fields, raw=True, using=alias)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias


def _store(user: AbstractBaseUser, parsed: list[ParsedConversation]) -> list[Conversation]:
    """Write everything with a few bulk inserts (call inside a transaction)."""
    conversations: list[Conversation] = []
    messages: list[Message] = []
    for item in parsed:
        ids = [uuid.uuid4() for _ in item.messages]
        conversation = Conversation(
            id=uuid.uuid4(),
            user=user,
            client_id=f"import-{uuid.uuid4().hex}",
            title=item.title,
            title_is_auto=item.title_is_auto,
            model=item.model,
            created_at=item.created_at,
            updated_at=item.updated_at,
            pinned=item.pinned,
            archived=item.archived,
            system_prompt=item.system_prompt,
            temperature=item.temperature,
            max_tokens=item.max_tokens,
            thinking_budget=item.thinking_budget,
            active_leaf_id=ids[item.active_leaf] if item.active_leaf is not None else None,
        )
        conversations.append(conversation)
        conversation.imported_messages = []  # type: ignore[attr-defined]
        for n, message in enumerate(item.messages):
            fields = {**_REPLY_DEFAULTS, **message.reply} if message.role == "assistant" else {}
            messages.append(
                Message(
                    id=ids[n],
                    conversation=conversation,
                    parent_id=ids[message.parent] if message.parent is not None else None,
                    role=message.role,
                    content=message.content,
                    created_at=message.created_at,
                    **fields,
                )
            )
            conversation.imported_messages.append(messages[-1])  # type: ignore[attr-defined]
    _insert_as_is(Conversation, conversations)
    _insert_as_is(Message, messages)
    return conversations
