"""The prompt's types, shared by the services that assemble a prompt and the
providers that send it (no Django here).

A prompt is a list of :class:`ChatMessage`; a provider counts it
(:class:`PromptCount`) and ``providers.base.prompt_fit`` fits it into the model's
window (:class:`PromptFit`: what is sent, and what was left out).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image sent with a user message: its bytes (re-encoded on upload) and type."""

    media_type: str  # "image/png" | "image/jpeg" | "image/webp" | "image/gif"
    data: bytes


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str  # the text, attached files' text included
    #: Images, after the text (user messages only; only to a model that takes them).
    images: tuple[ImagePart, ...] = ()


#: What one image counts against the context window: about what the APIs
#: charge for a large one (Anthropic: width x height / 750, at most ~1600).
IMAGE_TOKENS = 1600


@dataclass(frozen=True, slots=True)
class PromptCount:
    tokens: int
    exact: bool  # counted with the model's own tokenizer and template


@dataclass(frozen=True, slots=True)
class PromptFit:
    """What is sent: the prompt after leaving out what does not fit."""

    messages: list[ChatMessage]
    omitted: int  # earlier messages left out
    prompt_tokens: int
    exact: bool  # prompt_tokens counted with the model's tokenizer (else estimated)
    context_tokens: int  # the model's window
    max_tokens: int | None  # to request (None: the server's own default)
    capped: bool  # max_tokens was lowered so the reply fits the window
