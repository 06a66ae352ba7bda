"""Writes on one conversation: rename, pin, archive, its settings, delete, the
branch it shows; and the one rule for its titles."""

from __future__ import annotations

import re
import unicodedata
import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from conversations import tree
from conversations.exceptions import InvalidTitle, NotFound
from conversations.models import Attachment, Conversation, Message
from conversations.services.attachments import attachment_files_delete, attachments_orphans_delete

# --- Titles ----------------------------------------------------------------------

#: The longest title a conversation holds (``Conversation.title``'s max_length).
TITLE_MAX_CHARS = 200
#: The longest automatic title (made from the first message), so it fits the sidebar.
AUTO_TITLE_CHARS = 60


def _one_line(text: str) -> str:
    return " ".join(text.split())


def title_shorten(*, text: str, limit: int = TITLE_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis, if it is longer."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def title_auto(*, text: str) -> str:
    """The automatic title of a conversation whose first message is ``text``:
    its words on one line, at most AUTO_TITLE_CHARS characters."""
    return title_shorten(text=_one_line(text), limit=AUTO_TITLE_CHARS)


def title_clean(*, title: str) -> str:
    """A title a person typed, as stored: control characters dropped, runs of
    whitespace (newlines included) made one space, trimmed. Raises
    :class:`~conversations.exceptions.InvalidTitle`."""
    text = "".join(ch for ch in title if not unicodedata.category(ch).startswith("C") or ch in "\t\n\r")
    text = _one_line(text)
    if not text:
        raise InvalidTitle("the title is empty")
    if len(text) > TITLE_MAX_CHARS:
        raise InvalidTitle(f"the title is longer than {TITLE_MAX_CHARS} characters")
    return text


# --- Titles made by a model ------------------------------------------------------

#: The longest title a model's answer may give; a longer "title" is not one (the
#: model wrote a sentence, or went on): the first-line title stays.
GENERATED_TITLE_MAX_CHARS = 100
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_END = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)
#: "Title:", "Title -", "Chat title:" (a full-width colon, an en or em dash too).
_LABEL = re.compile(
    r"^(?:(?:suggested|conversation|chat)\s+)?title\s*[:\uff1a\-\u2013\u2014]\s*", re.IGNORECASE
)
_MARKUP_START = re.compile(r"^(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,2}[.)]\s+)")
_EMPHASIS = ("__", "*", "_")
_QUOTES = {'"': '"', "'": "'", "“": "”", "„": "“", "\u2018": "\u2019", "«": "»", "「": "」", "`": "`"}
#: A line that only announces the title on the next one ("Here is a title:").
_PREAMBLE = re.compile(r"^(?:sure|okay|ok|here|certainly|of course)\b.*:$|^.*\btitle\b.*:$", re.IGNORECASE)


def _strip_title_markup(line: str) -> str:
    """One line of a model's answer without its label, markdown and quotes."""
    line = line.replace("**", "").replace("`", "")  # emphasis and code marks, anywhere
    previous = None
    while line != previous:
        previous = line
        line = _LABEL.sub("", line).strip()
        line = _MARKUP_START.sub("", line).strip()
        for mark in _EMPHASIS:
            if len(line) > 2 * len(mark) and line.startswith(mark) and line.endswith(mark):
                line = line[len(mark) : -len(mark)].strip()
        if len(line) >= 2 and _QUOTES.get(line[0]) == line[-1]:
            line = line[1:-1].strip()
        line = line.rstrip(".").strip()
    return line


def title_from_model(*, text: str) -> str | None:
    """The title in a model's answer to the title request, cleaned; None when
    the answer holds no title (then the first-line title stays).

    The answer is untrusted text: reasoning (``<think>…</think>``) is dropped,
    then the first line that is not a preamble ("Here is a title:") is taken,
    without a "Title:" label, markdown, surrounding quotes or a final period;
    control characters go, white space becomes single spaces. Something with
    no letter or digit, or longer than GENERATED_TITLE_MAX_CHARS, is not a title;
    the rest is cut to AUTO_TITLE_CHARS like a first-line title.
    """
    text = _THINK.sub("", text)
    ends = list(_THINK_END.finditer(text))
    if ends:  # reasoning whose opening tag the server kept to itself
        text = text[ends[-1].end() :]
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C") or ch in "\t\n")
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    while len(lines) > 1 and _PREAMBLE.match(lines[0]):
        lines.pop(0)
    if not lines:
        return None
    title = _one_line(_strip_title_markup(lines[0]))
    if not any(unicodedata.category(ch)[0] in "LN" for ch in title) or len(title) > GENERATED_TITLE_MAX_CHARS:
        return None
    return title_shorten(text=title, limit=AUTO_TITLE_CHARS)


def conversation_title_claim(*, conversation_id: uuid.UUID, user_id: int) -> bool:
    """Mark the user's conversation as having its title asked of a model, if its
    title is still automatic and none was asked before; False otherwise (then
    nobody asks). One conditional write, so two askers never both win."""
    claimed = Conversation.objects.filter(
        pk=conversation_id, user_id=user_id, title_is_auto=True, title_generated=False
    ).update(title_generated=True)
    return bool(claimed)


def conversation_title_release(*, conversation_id: uuid.UUID, user_id: int) -> None:
    """Undo :func:`conversation_title_claim` (the title work gave way to a reply,
    or the server is stopping): a later exchange may ask again."""
    Conversation.objects.filter(pk=conversation_id, user_id=user_id).update(title_generated=False)


def conversation_title_generated(*, conversation_id: uuid.UUID, user_id: int, title: str) -> bool:
    """Store a title made by a model, only if the title is still automatic: the
    write is conditional (``UPDATE … WHERE title_is_auto``), so a rename, even
    one made while the title was being generated, always wins. Like a rename it
    is no activity (``updated_at`` stays). False if nothing was written."""
    return bool(
        Conversation.objects.filter(pk=conversation_id, user_id=user_id, title_is_auto=True).update(
            title=title_shorten(text=_one_line(title))
        )
    )


# --- The conversation list: rename, pin, archive, settings, delete ---------------


def conversation_update(
    *,
    user: AbstractBaseUser,
    conversation_id: uuid.UUID,
    title: str | None = None,
    pinned: bool | None = None,
    archived: bool | None = None,
    options: dict | None = None,
) -> Conversation:
    """Rename, pin or unpin, archive or unarchive one of the user's conversations
    (any of them at once; None leaves a field as it is). A new title is the
    user's: automatic titles never overwrite it. The last activity time is not
    changed, so none of this moves the conversation in the list by date.

    Raises :class:`NotFound` (a missing id and another user's alike) and
    :class:`InvalidTitle`; nothing is changed then.
    """
    fields: dict = {}
    if title is not None:
        fields.update(title=title_clean(title=title), title_is_auto=False)
    if pinned is not None:
        fields["pinned"] = bool(pinned)
    if archived is not None:
        fields["archived"] = bool(archived)
    # The conversation's own system prompt and sampling (validated by the caller;
    # None for temperature / max_tokens means the provider's default).
    fields.update(options or {})
    with transaction.atomic():
        mine = Conversation.objects.filter(pk=conversation_id, user=user)
        if fields and not mine.update(**fields):
            raise NotFound("no such conversation")
        conversation = mine.first()
    if conversation is None:
        raise NotFound("no such conversation")
    return conversation


def conversation_delete(*, user: AbstractBaseUser, conversation_id: uuid.UUID) -> None:
    """Delete one of the user's conversations with all its messages.

    A reply still streaming in it must be stopped first (the HTTP view does:
    :func:`conversations.views.history.conversation_delete`). Raises
    :class:`NotFound`.
    """
    with transaction.atomic():
        attached = list(
            Attachment.objects.filter(user=user, messages__conversation_id=conversation_id)
            .values_list("pk", flat=True)
            .distinct()
        )
        deleted, _ = Conversation.objects.filter(pk=conversation_id, user=user).delete()
        # Its files go with it (those on no other conversation's message).
        gone = attachments_orphans_delete(ids=attached)
    if not deleted:
        raise NotFound("no such conversation")
    attachment_files_delete(ids=gone)


def conversation_select_branch(*, user: AbstractBaseUser, message_id: uuid.UUID) -> Conversation:
    """Show the branch through ``message_id``: its newest descendants down to a leaf."""
    with transaction.atomic():
        message = Message.objects.filter(pk=message_id, conversation__user=user).first()
        if message is None:
            raise NotFound("no such message")
        conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
        rows = list(conversation.messages.values_list("pk", "parent_id", "created_at"))
        parents = {pk: parent_id for pk, parent_id, _ in rows}
        created = {pk: created_at for pk, _, created_at in rows}
        conversation.active_leaf_id = tree.newest_leaf(
            parents=parents, key=lambda pk: (created[pk], pk), start=message.pk
        )
        conversation.save(update_fields=["active_leaf"])
    return conversation
