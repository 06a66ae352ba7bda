"""Export conversations as chatsite JSON (``docs/export-format.md``) or Markdown.

The JSON holds the whole message tree of each conversation, branches included,
and goes back in through ``conversations.transfer.importing``. Markdown is for reading:
the branch the user is looking at, with a note where a reply did not finish and
where other versions of a message exist.

Exports of all of a user's conversations are produced in chunks (a few hundred
conversations per query), so a user with a million messages never has them all
in memory at once.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.text import slugify

from conversations import tree
from conversations.models import Attachment, Conversation, Message
from conversations.serializers import metrics_to_dict, usage_to_dict
from conversations.services.attachments import EXTENSIONS, attachment_path

FORMAT = "chatsite"
VERSION = 1

#: Conversations fetched per query when exporting all of a user's.
CHUNK = 200


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def tree_order(messages: Iterable[Message]) -> list[Message]:
    """Every message after its parent, otherwise oldest first (ties by id)."""
    by_id = {m.pk: m for m in messages}
    order = tree.tree_order(
        parents={pk: m.parent_id for pk, m in by_id.items()},
        key=lambda pk: (by_id[pk].created_at, str(pk)),
    )
    return [by_id[pk] for pk in order]


def attachment_file_name(attachment: Attachment) -> str:
    """Where an attachment's bytes are in a zip export: ``attachments/<id>.<ext>``."""
    return f"attachments/{attachment.pk}.{EXTENSIONS.get(attachment.media_type, 'bin')}"


def attachment_to_export(attachment: Attachment) -> dict:
    data: dict = {
        "id": str(attachment.pk),
        "kind": attachment.kind,
        "name": attachment.name,
        "media_type": attachment.media_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "pages": attachment.pages,
        "file": attachment_file_name(attachment),
    }
    if attachment.kind != Attachment.Kind.IMAGE:
        # The text the model reads: kept even by an export without the files.
        data["text"] = attachment.text
    return data


def message_to_export(message: Message) -> dict:
    data: dict = {
        "id": str(message.pk),
        "parent": str(message.parent_id) if message.parent_id else None,
        "role": message.role,
        "content": message.content,
        "created_at": _iso(message.created_at),
    }
    attached = getattr(message, "export_attachments", [])
    if attached:  # user messages only; none: no field (the shape of version 1)
        data["attachments"] = [attachment_to_export(a) for a in attached]
    if message.role == Message.Role.ASSISTANT:
        data.update(
            status=message.status,
            error_kind=message.error_kind or None,
            error=message.error_message or None,
            provider=message.provider or None,
            model=message.model or None,
            finish_reason=message.finish_reason or None,
            finished_at=_iso(message.finished_at),
            last_seq=message.last_seq,
            metrics=metrics_to_dict(message),
            usage=usage_to_dict(message),
            segments=message.segments or [],
            reasoning=message.reasoning,
            reasoning_redacted=message.reasoning_redacted,
            reasoning_signature=message.reasoning_signature or None,
        )
    return data


def conversation_to_export(*, conversation: Conversation, messages: Iterable[Message]) -> dict:
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "title_is_auto": conversation.title_is_auto,
        "model": conversation.model,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "thinking_budget": conversation.thinking_budget,
        "active_leaf": str(conversation.active_leaf_id) if conversation.active_leaf_id else None,
        "messages": [message_to_export(m) for m in tree_order(messages)],
    }


def _header() -> str:
    head = json.dumps({"format": FORMAT, "version": VERSION, "exported_at": _iso(timezone.now())})
    return head[:-1] + ', "conversations": [\n'


def _json_chunks(pairs: Iterable[tuple[Conversation, list[Message]]]) -> Iterator[str]:
    """The export document, one conversation per line."""
    yield _header()
    first = True
    for conversation, messages in pairs:
        line = json.dumps(
            conversation_to_export(conversation=conversation, messages=messages), ensure_ascii=False
        )
        yield line if first else ",\n" + line
        first = False
    yield "\n]}\n"


def _with_messages(conversations: list[Conversation]) -> list[tuple[Conversation, list[Message]]]:
    """The conversations with their messages; each user message carries its
    attachments as ``export_attachments`` (one more query for them all)."""
    by_conversation: dict[uuid.UUID, list[Message]] = defaultdict(list)
    by_id: dict[uuid.UUID, Message] = {}
    for message in Message.objects.filter(conversation__in=conversations).defer("worker"):
        by_conversation[message.conversation_id].append(message)
        by_id[message.pk] = message
    rows = Attachment.messages.through.objects.filter(message__conversation__in=conversations)
    for row in rows.select_related("attachment").order_by("attachment__created_at"):
        message = by_id.get(row.message_id)
        if message is not None:
            if not hasattr(message, "export_attachments"):
                message.export_attachments = []  # type: ignore[attr-defined]
            message.export_attachments.append(row.attachment)  # type: ignore[attr-defined]
    return [(c, by_conversation.get(c.pk, [])) for c in conversations]


def _user_conversations(user: AbstractBaseUser) -> Iterator[tuple[Conversation, list[Message]]]:
    """All of the user's conversations, oldest first, with their messages, a chunk at a time."""
    ids = list(
        Conversation.objects.filter(user=user).order_by("created_at", "id").values_list("id", flat=True)
    )
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        conversations = list(Conversation.objects.filter(pk__in=chunk).order_by("created_at", "id"))
        yield from _with_messages(conversations)


def _zip(pairs: Iterable[tuple[Conversation, list[Message]]], out: IO[bytes]) -> None:
    """The export document as ``conversations.json`` in a zip, with each attachment's
    bytes beside it (``attachments/<id>.<ext>``), written to ``out``."""
    seen: dict[uuid.UUID, Attachment] = {}

    def noting(
        items: Iterable[tuple[Conversation, list[Message]]],
    ) -> Iterator[tuple[Conversation, list[Message]]]:
        for conversation, messages in items:
            for message in messages:
                for attachment in getattr(message, "export_attachments", []):
                    seen[attachment.pk] = attachment
            yield conversation, messages

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("conversations.json", "w") as document:
            for chunk in _json_chunks(noting(pairs)):
                document.write(chunk.encode("utf-8"))
        for attachment in seen.values():
            path = attachment_path(attachment_id=attachment.pk)
            if path.exists():
                # Images and PDFs are compressed already.
                stored = attachment.kind != Attachment.Kind.TEXT
                archive.write(
                    path,
                    attachment_file_name(attachment),
                    compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
                )


def conversation_export_zip(*, conversation: Conversation, out: IO[bytes]) -> None:
    """One conversation and its attachments' files, as a zip written to ``out``."""
    _zip(_with_messages([conversation]), out)


def user_export_zip(*, user: AbstractBaseUser, out: IO[bytes]) -> None:
    """All of the user's conversations and their attachments' files, as a zip written to ``out``."""
    _zip(_user_conversations(user), out)


def conversation_export_json(*, conversation: Conversation) -> str:
    """One conversation as a complete export document."""
    return "".join(_json_chunks(_with_messages([conversation])))


def user_export_json_chunks(*, user: AbstractBaseUser) -> Iterator[str]:
    """All of the user's conversations as one export document, in pieces to write or stream."""
    return _json_chunks(_user_conversations(user))


# --- Markdown -----------------------------------------------------------------

_NOTES = {
    Message.Status.STOPPED: "**Stopped:** this reply was stopped before it finished.",
    Message.Status.INTERRUPTED: (
        "**Interrupted:** this reply was cut off while it was being written; it is incomplete."
    ),
    Message.Status.STREAMING: "**Still being written** when this export was made; it is incomplete.",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reply_note(message: Message) -> str | None:
    if message.status == Message.Status.ERROR:
        kind = f" ({message.error_kind})" if message.error_kind else ""
        detail = _one_line(message.error_message) or "the reply failed"
        if detail[-1] not in ".!?":
            detail += "."
        return f"**Error{kind}:** {detail} This reply is incomplete."
    return _NOTES.get(message.status)


def _versions_note(others: int, role: str) -> str:
    what = "reply" if role == Message.Role.ASSISTANT else "message"
    versions = "1 other version" if others == 1 else f"{others} other versions"
    verb = "is" if others == 1 else "are"
    return f"_({versions} of this {what} {verb} in the JSON export.)_"


def _reasoning_markdown(message: Message) -> list[str]:
    """A reply's reasoning, quoted above its answer under "Thought for 12 s"."""
    took = f" for {message.reasoning_ms / 1000:.0f} s" if message.reasoning_ms is not None else ""
    lines = [f"> **Thought{took}**", ">"]
    lines += ["> " + line if line else ">" for line in message.reasoning.strip("\n").splitlines()]
    if message.reasoning_redacted:
        lines += [">", "> _(Part of the reasoning was hidden by the provider.)_"]
    return [*lines, ""]


def _markdown(conversation: Conversation, messages: list[Message]) -> str:
    title = _one_line(conversation.title) or "Untitled conversation"
    lines = [f"# {title}", ""]
    created = conversation.created_at.strftime("%Y-%m-%d %H:%M UTC")
    meta = f"_Started {created}"
    if conversation.model:
        meta += f" · model {conversation.model}"
    lines += [meta + "_", ""]
    if conversation.system_prompt.strip():
        lines += ["**System prompt:**", ""]
        lines += ["> " + line if line else ">" for line in conversation.system_prompt.splitlines()]
        lines.append("")

    branch = tree.branch_path(messages=messages, leaf_id=conversation.active_leaf_id)
    siblings: dict[uuid.UUID | None, int] = defaultdict(int)
    if branch:
        for m in messages:
            siblings[m.parent_id] += 1
    else:  # no branch recorded: what the chat page shows, every message in order
        branch = tree.written_order(messages=messages)

    for message in branch:
        if message.role == Message.Role.ASSISTANT:
            model = message.model or conversation.model.partition("/")[2] or conversation.model
            lines.append(f"## Assistant ({model})" if model else "## Assistant")
        else:
            lines.append("## You")
        lines.append("")
        thought = message.reasoning.strip() or message.reasoning_redacted
        if message.role == Message.Role.ASSISTANT and thought:
            lines += _reasoning_markdown(message)
        content = message.content.strip("\n")
        files = getattr(message, "export_attachments", [])
        if files:
            lines += ["_Attached: " + ", ".join(_one_line(a.name) for a in files) + "_", ""]
        if content.strip() or not files:
            lines.append(content if content.strip() else "_(no text)_")
            lines.append("")
        if message.role == Message.Role.ASSISTANT:
            note = _reply_note(message)
            if note:
                lines += [f"> {note}", ""]
        others = siblings[message.parent_id] - 1 if siblings else 0
        if others > 0:
            lines += [_versions_note(others, message.role), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def conversation_export_markdown(*, conversation: Conversation) -> str:
    ((_, messages),) = _with_messages([conversation])
    return _markdown(conversation, messages)


def user_export_markdown_chunks(*, user: AbstractBaseUser) -> Iterator[str]:
    """All of the user's conversations as one Markdown document, separated by rules."""
    first = True
    for conversation, messages in _user_conversations(user):
        yield _markdown(conversation, messages) if first else "\n---\n\n" + _markdown(conversation, messages)
        first = False
    if first:
        yield "_No conversations._\n"


# --- File names -----------------------------------------------------------------


def conversation_filename(conversation: Conversation, extension: str) -> str:
    """A safe download name: ASCII letters, digits and dashes only."""
    slug = slugify(conversation.title)[:60].strip("-") or "conversation"
    return f"{slug}-{str(conversation.pk)[:8]}.{extension}"


def user_filename(user: AbstractBaseUser, extension: str) -> str:
    slug = slugify(user.get_username())[:40].strip("-") or "user"
    return f"chatsite-{slug}-{timezone.now():%Y-%m-%d}.{extension}"
