"""Shared by the provider tests."""

from __future__ import annotations

from conversations.prompt import ChatMessage
from conversations.providers import ProviderError, StreamResult


async def collect(provider, model: str, messages: list[ChatMessage], **kwargs):
    """Stream to the end: (text pieces, StreamResult, ProviderError or None)."""
    result = StreamResult()
    pieces: list[str] = []
    try:
        async for piece in provider.stream(model=model, messages=messages, result=result, **kwargs):
            pieces.append(piece)
    except ProviderError as exc:
        return pieces, result, exc
    return pieces, result, None
