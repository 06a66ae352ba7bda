"""Shared links: make one (a frozen snapshot of the shown branch), change whether
it names its owner, revoke it, and continue one as a copy of one's own.

A snapshot holds what the chat shows of each message of the branch
(``serializers.message_to_dict``), with new ids (the owner's message ids, and
the other versions of each message, are not in it) and each message's parent
the one before it. A reply still streaming is kept as it was last saved and
marked ``"partial": true``. The conversation's settings (system prompt,
sampling) are the owner's and are not in it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations import selectors, serializers
from conversations.exceptions import NotFound, TooManyShares
from conversations.models import Conversation, Message, Share
from conversations.transfer import exporting, importing

#: Random bytes in a link's token (``secrets.token_urlsafe``: 32 characters).
TOKEN_BYTES = 24
#: Shared links one conversation may have at once.
MAX_SHARES_PER_CONVERSATION = 20
#: The version of a snapshot's shape.
SNAPSHOT_VERSION = 1


def share_snapshot(*, conversation: Conversation) -> dict:
    """The shown branch of ``conversation`` as a share keeps it."""
    messages = selectors.message_list(conversation=conversation)
    shown: list[dict] = []
    parent: str | None = None
    for message in messages:
        data = serializers.message_to_dict(message)
        data.pop("versions", None)
        data["id"] = str(uuid.uuid4())
        if "attachments" in data:
            # Files stay their owner's: a snapshot names them, never links them.
            data["attachments"] = [
                {key: a[key] for key in ("kind", "name", "size", "pages")} for a in data["attachments"]
            ]
        data["parent"] = parent
        if message.role == Message.Role.ASSISTANT and message.status == Message.Status.STREAMING:
            data["partial"] = True
        shown.append(data)
        parent = data["id"]
    return {
        "version": SNAPSHOT_VERSION,
        "title": conversation.title,
        "model": conversation.model,
        "messages": shown,
    }


def share_create(
    *, user: AbstractBaseUser, conversation_id: uuid.UUID, show_owner_name: bool = False
) -> Share:
    """A new shared link to what the user's conversation shows now.

    Raises :class:`NotFound` (a missing id and another user's alike) and
    :class:`TooManyShares`; nothing is written then.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id, user=user).first()
        if conversation is None:
            raise NotFound("no such conversation")
        if conversation.shares.count() >= MAX_SHARES_PER_CONVERSATION:
            raise TooManyShares(limit=MAX_SHARES_PER_CONVERSATION)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        return Share.objects.create(
            owner=user,
            conversation=conversation,
            token=token,
            token_hash=selectors.share_token_hash(token=token),
            title=conversation.title,
            snapshot=share_snapshot(conversation=conversation),
            show_owner_name=bool(show_owner_name),
        )


def share_update(*, user: AbstractBaseUser, share_id: uuid.UUID, show_owner_name: bool) -> Share:
    """Show or hide the owner's name on a share's page. Raises :class:`NotFound`."""
    if not Share.objects.filter(pk=share_id, owner=user).update(show_owner_name=bool(show_owner_name)):
        raise NotFound("no such shared link")
    share = selectors.share_get(user=user, share_id=share_id)
    if share is None:  # revoked in between
        raise NotFound("no such shared link")
    return share


def share_revoke(*, user: AbstractBaseUser, share_id: uuid.UUID) -> None:
    """Revoke one of the user's shares: its link answers like one that never
    existed from now on. Raises :class:`NotFound`."""
    deleted, _ = Share.objects.filter(pk=share_id, owner=user).delete()
    if not deleted:
        raise NotFound("no such shared link")


def share_continue(*, user: AbstractBaseUser, token: str, now: datetime | None = None) -> Conversation:
    """A new conversation of ``user``'s with the messages of the share ``token``
    names, to go on with (through the importer's checks, as a file would be).
    Raises :class:`NotFound` for a revoked or unknown token."""
    share = selectors.share_by_token(token=token)
    if share is None:
        raise NotFound("no such shared link")
    snapshot = share.snapshot
    messages = list(snapshot.get("messages") or [])
    moment = (now or timezone.now()).isoformat()
    document = {
        "format": exporting.FORMAT,
        "version": exporting.VERSION,
        "conversations": [
            {
                "title": snapshot.get("title") or "",
                "title_is_auto": False,
                "model": snapshot.get("model") or "",
                "created_at": moment,
                "updated_at": moment,
                "messages": messages,
                "active_leaf": messages[-1]["id"] if messages else None,
            }
        ],
    }
    return importing.conversation_import_document(user=user, document=document)
