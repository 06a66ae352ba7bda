"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx

from conversations.prompt import ChatMessage, PromptCount
from conversations.providers.base import (
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_PROMPT,
    BaseProvider,
    CommonOptions,
    ModelInfo,
    StreamResult,
    image_tokens,
)
from conversations.providers.failures import ProviderError, context_error_from
from conversations.providers.http import get_client
from conversations.providers.reasoning import Reasoning, ThinkSplitter
from conversations.providers.sse import JsonAnswer, load_json, sse_events

log = logging.getLogger(__name__)


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """A message in the Chat Completions shape: with images, a list of content
    parts (the text, then ``image_url`` parts with data URLs); else a string."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "text": message.content})
    for image in message.images:
        url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": message.role, "content": parts}


def openai_error(err: Any) -> ProviderError:
    """The ``error`` an OpenAI-compatible server reports in its stream or its
    JSON answer: the window's error where it says the prompt is too long."""
    msg = err.get("message") if isinstance(err, dict) else str(err)
    overflow = context_error_from(f"{msg} {err.get('code') if isinstance(err, dict) else ''}")
    if overflow is not None:
        return overflow
    return ProviderError(
        "upstream_error",
        f"the upstream reported an error: {msg}"[:300],
        detail=str(msg)[:300],
    )


def openai_answer(data: Any, result: StreamResult) -> list[str]:
    """The pieces of a whole Chat Completions answer (``stream: false``, or a
    server that answered a stream request with JSON): its reasoning first
    (``reasoning_content``, ``reasoning`` or an inline ``<think>``, split as a
    stream's is), then the answer as one piece; usage and the finish reason
    onto ``result``."""
    if not isinstance(data, dict):
        raise ProviderError("upstream_error", "the upstream's answer is not a JSON object", cause="malformed")
    if "error" in data:
        raise openai_error(data["error"])
    result.streamed = False
    usage = data.get("usage")
    if isinstance(usage, dict):
        result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
        result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(message := choice.get("message"), dict):
        raise ProviderError(
            "upstream_error", "the upstream's answer has no choices[0].message", cause="malformed"
        )
    pieces: list[str] = []
    thought = message.get("reasoning_content") or message.get("reasoning")
    if thought and isinstance(thought, str):
        pieces.append(Reasoning(thought))
    content = message.get("content")
    if content and isinstance(content, str):
        think = ThinkSplitter()
        pieces.extend(think.feed(content))
        pieces.extend(think.end())
    if choice.get("finish_reason"):
        result.finish_reason = choice["finish_reason"]
    return pieces


class OpenAIProvider(BaseProvider):
    label = "OpenAI-compatible"

    def __init__(self, name: str, options: Mapping[str, Any], common: CommonOptions | None = None) -> None:
        super().__init__(name, options, common)
        self.base_url = options["BASE_URL"].rstrip("/")
        self._api_key = options.get("API_KEY") or ""
        self._configured = list(options.get("MODELS") or [])
        # A tokenize endpoint (llama-cpp-python's /extras/tokenize, llama.cpp's
        # /tokenize): token counts from the model's own tokenizer.
        self.tokenize_url = (options.get("TOKENIZE_URL") or "").strip()
        self._token_cache: dict[tuple[str, str], int] = {}

    async def _tokens(self, model: str, text: str) -> int:
        """Tokens of ``text`` by the server's tokenizer (cached per text)."""
        key = (model, text)
        cached = self._token_cache.get(key)
        if cached is not None:
            return cached
        response = await get_client().post(
            self.tokenize_url,
            json={"input": text, "content": text, "model": model, "add_special": False},
            headers=self._headers(),
            timeout=5.0,
        )
        response.raise_for_status()
        tokens = response.json()["tokens"]
        if not isinstance(tokens, list):
            raise ValueError("the tokenize endpoint sent no token list")
        if len(self._token_cache) >= 4096:
            self._token_cache.clear()
        self._token_cache[key] = len(tokens)
        return len(tokens)

    async def count_prompt_tokens(self, *, model: str, messages: list[ChatMessage]) -> PromptCount:
        """With a tokenize endpoint, each message's text is counted by the
        server's tokenizer; the chat template around it is still estimated."""
        if not self.tokenize_url:
            return await super().count_prompt_tokens(model=model, messages=messages)
        counts = await asyncio.gather(*(self._tokens(model, m.content) for m in messages))
        total = (
            sum(counts)
            + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
            + TEMPLATE_TOKENS_PER_PROMPT
            + image_tokens(messages)
        )
        return PromptCount(total, exact=False)

    async def completion_tokens(self, *, model: str, text: str) -> int | None:
        if not self.tokenize_url:
            return None
        try:
            return await self._tokens(model, text)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.info("%s: the tokenize endpoint failed (%s)", self.name, type(exc).__name__)
            return None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def list_models(self) -> list[ModelInfo]:
        return await self._list_remote_models(f"{self.base_url}/models", self._headers(), self._configured)

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
        body: dict[str, Any] = {
            "model": model,
            "messages": [openai_message(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        url = f"{self.base_url}/chat/completions"
        accept = "text/event-stream"
        if not self.streams(model=model):
            # The same request, but for streaming: the whole answer, read as
            # JsonAnswer below, is the first token (the reply's first-token
            # timeout covers the wait).
            del body["stream_options"]
            body["stream"] = False
            accept = "application/json"
        done = False
        received = False  # any event at all
        # An answer that starts with <think>…</think> (Qwen3, R1 and the like)
        # is split into reasoning and answer while it streams.
        think = ThinkSplitter()
        events = sse_events(url, body=body, headers=self._headers(), accept=accept)
        try:
            async with aclosing(events):
                async for event in events:
                    received = True
                    if done or not event.data:
                        # Read to the end of the body after [DONE], so the connection is reused.
                        continue
                    if event.data == "[DONE]":
                        done = True
                        continue
                    data = load_json(event)
                    if not isinstance(data, dict):
                        raise ProviderError(
                            "upstream_stream", "the upstream sent a malformed event", cause="malformed"
                        )
                    if "error" in data:
                        raise openai_error(data["error"])
                    usage = data.get("usage")
                    if isinstance(usage, dict):
                        result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
                        result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
                    choices = data.get("choices")
                    if not choices or not isinstance(choices, list):
                        continue
                    choice = choices[0]
                    if not isinstance(choice, dict):
                        raise ProviderError(
                            "upstream_stream", "the upstream sent a malformed event", cause="malformed"
                        )
                    delta = choice.get("delta") or {}
                    if not isinstance(delta, dict):
                        delta = {}
                    # Reasoning split out by the server: reasoning_content (DeepSeek,
                    # vLLM, llama.cpp's server) or reasoning (OpenRouter and others).
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought and isinstance(thought, str):
                        yield Reasoning(thought)
                    content = delta.get("content")
                    if content:
                        if think.done:
                            yield content
                        else:
                            for piece in think.feed(content):
                                yield piece
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
        except JsonAnswer as whole:
            # Streaming off, or a server (some proxies) that answered a stream request with JSON.
            for piece in openai_answer(whole.data, result):
                yield piece
            return
        for piece in think.end():
            yield piece
        if not received:
            # llama.cpp's server answers a prompt over its window like this.
            raise ProviderError(
                "upstream_stream",
                "the upstream answered with an empty stream",
                cause="empty",
                empty_stream=True,
            )
        if not done and result.finish_reason is None:
            raise ProviderError(
                "upstream_stream", "the upstream stream ended before it was done", cause="ended"
            )
