"""The dicts the app answers with, built once: a message, a conversation, a
list item, and a reply's usage and metrics.

Selectors read; these shape what they read for JSON (the HTTP reads, the chat
page's embedded data, the socket's ``reply_finished`` from the database, and the
export file's usage and metrics). ``usage_dict`` and ``metrics_dict`` take the
values themselves, for a live reply that is not read from the database.
"""

from __future__ import annotations

from decimal import Decimal

from conversations import errors
from conversations.models import Attachment, Conversation, Message, Share
from conversations.realtime.protocol import ReplyEnd
from conversations.selectors import ConversationItem, ConversationUsage, UsageTotals


def usage_dict(*, prompt_tokens: int | None, completion_tokens: int | None, counted: bool) -> dict:
    """A reply's token counts (``counted``: the provider reported them, not estimated)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "counted": counted}


def metrics_dict(
    *,
    ttft_ms: float | None,
    tokens_per_s: float | None,
    total_ms: float | None,
    first_answer_ms: float | None = None,
    reasoning_ms: float | None = None,
) -> dict:
    """A reply's timings: to the first token, tokens a second, in all; to the
    first token of the answer and how long it reasoned (a reply that reasons)."""
    return {
        "ttft_ms": ttft_ms,
        "tokens_per_s": tokens_per_s,
        "total_ms": total_ms,
        "first_answer_ms": first_answer_ms,
        "reasoning_ms": reasoning_ms,
    }


def usage_to_dict(message: Message) -> dict:
    """:func:`usage_dict` of a stored reply."""
    return usage_dict(
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        counted=message.usage_counted,
    )


def metrics_to_dict(message: Message) -> dict:
    """:func:`metrics_dict` of a stored reply."""
    return metrics_dict(
        ttft_ms=message.ttft_ms,
        tokens_per_s=message.tokens_per_s,
        total_ms=message.total_ms,
        first_answer_ms=message.first_answer_ms,
        reasoning_ms=message.reasoning_ms,
    )


def message_error_words(message: Message, *, staff: bool = False) -> str | None:
    """What a reply's failure says to a person: the words saved with it, else
    (an imported reply with a kind and no words) the words of its kind. ``staff``
    (the reader is): the moderation rule that stopped it, too."""
    note = errors.moderation_rule_note(rule=message.moderation_rule) if staff else ""
    if message.error_message:
        return message.error_message + note
    if message.status != Message.Status.ERROR:
        return None
    return (
        errors.error_describe(kind=message.error_kind or "internal", has_text=bool(message.content.strip()))
        + note
    )


def attachment_to_dict(attachment: Attachment) -> dict:
    """An attachment as a message shows it: what it is, and where its bytes are
    served (to its owner only). ``text_chars``: the text a model is sent of a
    file (0 for an image, and for a PDF with no text in it)."""
    return {
        "id": str(attachment.id),
        "kind": attachment.kind,
        "name": attachment.name,
        "media_type": attachment.media_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "pages": attachment.pages,
        "text_chars": len(attachment.text),
        "url": f"/api/attachments/{attachment.id}/file",
    }


def message_to_dict(message: Message, *, staff: bool = False) -> dict:
    """A message as the chat shows it; ``versions`` when the read set ``sibling_ids``
    (``selectors.message_list``). ``staff``: the reader is (a moderated reply names its rule)."""
    data: dict = {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "parent": str(message.parent_id) if message.parent_id else None,
    }
    sibling_ids = getattr(message, "sibling_ids", None)
    if sibling_ids is not None:
        data["versions"] = [str(pk) for pk in sibling_ids]
    if message.role == Message.Role.USER:
        data["attachments"] = [attachment_to_dict(a) for a in message.attachments.all()]
    if message.role == Message.Role.ASSISTANT:
        data.update(
            status=message.status,
            error_kind=message.error_kind or None,
            error=message_error_words(message, staff=staff),
            last_seq=message.last_seq,
            provider=message.provider,
            model=message.model,
            finish_reason=message.finish_reason or None,
            usage=usage_to_dict(message),
            metrics=metrics_to_dict(message),
            segments=message.segments,
            omitted_messages=message.omitted_messages,
            context_tokens=message.context_tokens,
            # The model's reasoning, apart from its answer (`content`), and
            # whether the provider hid some of it.
            reasoning=message.reasoning,
            reasoning_redacted=message.reasoning_redacted,
        )
    return data


def message_to_reply_end(*, message: Message, staff: bool = False) -> ReplyEnd:
    """A saved reply's final state, as its ``reply_finished`` tells it (the
    frame's builder applies the same rules to it as to a live reply's end)."""
    return ReplyEnd(
        conversation=str(message.conversation_id),
        reply=str(message.pk),
        status=message.status,
        error_kind=message.error_kind or None,
        error=message_error_words(message, staff=staff),
        last_seq=message.last_seq,
        finish_reason=message.finish_reason or None,
        usage=usage_to_dict(message),
        metrics=metrics_to_dict(message),
        omitted_messages=message.omitted_messages,
        context_tokens=message.context_tokens,
    )


def conversation_summary_dict(conversation: Conversation) -> dict:
    """What the list shows of a conversation (``selectors.LIST_FIELDS``)."""
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "updated_at": conversation.updated_at.isoformat(),
        "pinned": conversation.pinned,
        "archived": conversation.archived,
    }


def conversation_to_dict(conversation: Conversation) -> dict:
    """A conversation with its settings (system prompt, sampling)."""
    return {
        **conversation_summary_dict(conversation),
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "thinking_budget": conversation.thinking_budget,
    }


def conversation_item_to_dict(item: ConversationItem) -> dict:
    """A conversation as the list shows it: LIST_FIELDS and its sidebar group
    (not its settings: a page of the list stays small)."""
    return {**conversation_summary_dict(item.conversation), "group": item.group}


def share_url(share: Share) -> str:
    """The path of a share's page (the token is the only secret in it)."""
    return f"/s/{share.token}/"


def share_to_dict(share: Share) -> dict:
    """A shared link as its owner manages it (never shown to anyone else)."""
    return {
        "id": str(share.pk),
        "url": share_url(share),
        "conversation": str(share.conversation_id),
        "title": share.title,
        "show_owner_name": share.show_owner_name,
        "created_at": share.created_at.isoformat(),
    }


def cost_text(cost: Decimal | None) -> str | None:
    """An estimated cost as JSON carries it: a decimal string, exact (no float)."""
    return None if cost is None else format(cost, "f")


def usage_totals_dict(totals: UsageTotals) -> dict:
    """Usage of a group of replies (GET /api/conversations/<id>/usage/, docs/protocol.md)."""
    return {
        "model": totals.model or None,
        "replies": totals.replies,
        "by_status": dict(sorted(totals.by_status.items())),
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "counted_replies": totals.counted_replies,
        "cost": cost_text(totals.cost),
        "stopped": {
            "replies": totals.stopped_replies,
            "prompt_tokens": totals.stopped_prompt_tokens,
            "completion_tokens": totals.stopped_completion_tokens,
            "cost": cost_text(totals.stopped_cost),
        },
    }


def conversation_usage_dict(*, conversation_id: str, usage: ConversationUsage) -> dict:
    """A conversation's usage: in all, and per model; costs are estimates."""
    return {
        "conversation": conversation_id,
        **usage_totals_dict(usage.total),
        "cost_is_estimate": True,
        "unpriced_models": sorted(usage.total.unpriced_models),
        "models": [usage_totals_dict(row) for row in usage.models],
    }
