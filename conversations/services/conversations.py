"""Writes on one conversation: rename, pin, archive, its settings, delete, the
branch it shows; and the one rule for its titles."""

from __future__ import annotations

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
