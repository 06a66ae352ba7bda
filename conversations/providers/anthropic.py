"""Anthropic's Messages API, streamed (or, with streaming off, answered whole)."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from conversations.prompt import ChatMessage
from conversations.providers.base import BaseProvider, CommonOptions, ModelInfo, StreamResult
from conversations.providers.failures import ProviderError, context_error_from
from conversations.providers.reasoning import Reasoning, RedactedReasoning
from conversations.providers.sse import JsonAnswer, load_object, sse_events

log = logging.getLogger(__name__)
API_VERSION = "2023-06-01"
#: The smallest thinking budget the API takes.
MIN_THINKING_BUDGET = 1024


def anthropic_message(message: ChatMessage) -> dict[str, Any]:
    """A message in the Messages API's shape: images as ``image`` blocks (base64
    sources) before the text, as Anthropic advises; plain text as a string."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": image.media_type,
                "data": base64.b64encode(image.data).decode("ascii"),
            },
        }
        for image in message.images
    ]
    if message.content.strip():  # the API refuses an empty text block
        blocks.append({"type": "text", "text": message.content})
    return {"role": message.role, "content": blocks}


def anthropic_error(err: Any) -> ProviderError:
    """The ``error`` the API reports in an ``error`` event or a JSON answer, as its kind."""
    err_type = err.get("type") if isinstance(err, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    overflow = context_error_from(str(msg or ""))
    if err_type == "invalid_request_error" and overflow is not None:
        return overflow
    if err_type == "rate_limit_error":
        return ProviderError(
            "rate_limited",
            f"the upstream is rate limiting: {msg}"[:300],
            retryable=True,
            detail=str(msg or "")[:300],
        )
    return ProviderError(
        "upstream_error",
        f"the upstream reported {err_type or 'an error'}: {msg or ''}".strip()[:300],
        retryable=err_type == "overloaded_error",
        cause="overloaded" if err_type == "overloaded_error" else "",
        detail=str(msg or "")[:300],
    )


def anthropic_answer(data: Any, result: StreamResult) -> list[str]:
    """The pieces of a whole Messages answer (streaming off, or a server that
    answered a stream request with JSON), block by block as a stream yields
    them: ``thinking`` as reasoning (its signature kept), ``redacted_thinking``
    as hidden reasoning, ``text`` as the answer; usage and the stop reason
    onto ``result``."""
    if not isinstance(data, dict):
        raise ProviderError("upstream_error", "the upstream's answer is not a JSON object", cause="malformed")
    if data.get("type") == "error" or "error" in data:
        raise anthropic_error(data.get("error"))
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        raise ProviderError("upstream_error", "the upstream's answer is not a message", cause="malformed")
    result.streamed = False
    usage = data.get("usage")
    if isinstance(usage, dict):
        if usage.get("input_tokens") is not None:
            result.prompt_tokens = usage["input_tokens"]
        if usage.get("output_tokens") is not None:
            result.completion_tokens = usage["output_tokens"]
    if data.get("stop_reason"):
        result.finish_reason = data["stop_reason"]
    pieces: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            pieces.append(block["text"])
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str) and block["thinking"]:
                pieces.append(Reasoning(block["thinking"]))
            if isinstance(block.get("signature"), str):
                result.extra["reasoning_signature"] = block["signature"]
        elif kind == "redacted_thinking":
            pieces.append(RedactedReasoning())
    return pieces


class AnthropicProvider(BaseProvider):
    label = "Anthropic"
    supports_prefill = True
    #: Every current Claude model's window; CHATSITE_CONTEXT_TOKENS_MODELS overrides it.
    default_context_tokens = 200_000

    def __init__(self, name: str, options: Mapping[str, Any], common: CommonOptions | None = None) -> None:
        super().__init__(name, options, common)
        self.base_url = options["BASE_URL"].rstrip("/")
        self._api_key = options.get("API_KEY") or ""
        self._configured = list(options.get("MODELS") or [])
        self.default_max_tokens = int(options.get("MAX_TOKENS") or 4096)

    def known_vision(self, *, model: str) -> bool | None:
        """Every Claude model since Claude 3 takes images; Claude 2 and Instant do not."""
        if model.startswith(("claude-2", "claude-instant")):
            return False
        if model.startswith("claude-"):
            return True
        return None

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key, "anthropic-version": API_VERSION}

    async def list_models(self) -> list[ModelInfo]:
        return await self._list_remote_models(f"{self.base_url}/v1/models", self._headers(), self._configured)

    async def stream(
        self,
        *,
        model: str,
        messages: list[ChatMessage],
        result: StreamResult,
        max_tokens: int | None = None,
        temperature: float | None = None,
        thinking_budget: int | None = None,
    ) -> AsyncGenerator[str, None]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens or self.default_max_tokens,
            "messages": [anthropic_message(m) for m in messages if m.role != "system"],
            "stream": True,
        }
        if system:
            body["system"] = system
        budget = self.thinking_budget(model=model) if thinking_budget is None else thinking_budget
        # A continuation prefills the answer, which the API refuses with thinking on.
        continuing = bool(messages) and messages[-1].role == "assistant"
        if budget and not continuing:
            budget = max(budget, MIN_THINKING_BUDGET)
            # max_tokens counts the thinking too: the answer keeps what was asked.
            body["max_tokens"] = budget + body["max_tokens"]
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            # With thinking on, the API takes no temperature other than 1.
        elif temperature is not None:
            body["temperature"] = temperature
        url = f"{self.base_url}/v1/messages"
        accept = "text/event-stream"
        if not self.streams(model=model):
            # The same request, but for streaming: the whole answer, read as
            # JsonAnswer below, is the first token (the reply's first-token
            # timeout covers the wait).
            del body["stream"]
            accept = "application/json"
        stopped = False
        signature: list[str] = []
        events = sse_events(url, body=body, headers=self._headers(), accept=accept)
        try:
            async with aclosing(events):
                async for event in events:
                    kind = event.event
                    if stopped or kind == "ping":
                        # After message_stop, read to the end of the body so the connection is reused.
                        continue
                    if kind == "content_block_delta":
                        delta = load_object(event).get("delta")
                        if isinstance(delta, dict):
                            delta_type = delta.get("type")
                            if delta_type == "text_delta":
                                text = delta.get("text")
                                if text:
                                    yield text
                            elif delta_type == "thinking_delta":
                                thought = delta.get("thinking")
                                if thought and isinstance(thought, str):
                                    yield Reasoning(thought)
                            elif delta_type == "signature_delta" and isinstance(delta.get("signature"), str):
                                signature.append(delta["signature"])
                                result.extra["reasoning_signature"] = "".join(signature)
                    elif kind == "content_block_start":
                        block = load_object(event).get("content_block")
                        if isinstance(block, dict) and block.get("type") == "redacted_thinking":
                            yield RedactedReasoning()
                    elif kind == "message_start":
                        message = load_object(event).get("message")
                        usage = message.get("usage") if isinstance(message, dict) else None
                        if isinstance(usage, dict) and usage.get("input_tokens") is not None:
                            result.prompt_tokens = usage["input_tokens"]
                    elif kind == "message_delta":
                        data = load_object(event)
                        delta = data.get("delta")
                        if isinstance(delta, dict) and delta.get("stop_reason"):
                            result.finish_reason = delta["stop_reason"]
                        usage = data.get("usage")
                        if isinstance(usage, dict):
                            if usage.get("output_tokens") is not None:
                                result.completion_tokens = usage["output_tokens"]
                            if usage.get("input_tokens") is not None:
                                result.prompt_tokens = usage["input_tokens"]
                    elif kind == "message_stop":
                        stopped = True
                    elif kind == "error":
                        raise anthropic_error(load_object(event).get("error"))
        except JsonAnswer as whole:
            # Streaming off, or a server (some proxies) that answered a stream request with JSON.
            for piece in anthropic_answer(whole.data, result):
                yield piece
            return
        if not stopped:
            raise ProviderError(
                "upstream_stream", "the upstream stream ended before message_stop", cause="ended"
            )
