"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from .base import BaseProvider, ChatMessage, ModelInfo, ProviderError, StreamResult
from .sse import load_json, sse_events

log = logging.getLogger(__name__)


class OpenAIProvider(BaseProvider):
    label = "OpenAI-compatible"

    def __init__(self, name: str, options: dict) -> None:
        super().__init__(name, options)
        self.base_url = options["BASE_URL"].rstrip("/")
        self._api_key = options.get("API_KEY") or ""
        self._configured = list(options.get("MODELS") or [])

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def list_models(self) -> list[ModelInfo]:
        return await self._list_remote_models(f"{self.base_url}/models", self._headers(), self._configured)

    async def stream(  # type: ignore[override]
        self,
        *,
        model: str,
        messages: list[ChatMessage],
        result: StreamResult,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        body: dict = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        done = False
        events = sse_events(f"{self.base_url}/chat/completions", body=body, headers=self._headers())
        async with aclosing(events):
            async for event in events:
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
                    err = data["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise ProviderError(
                        "upstream_error",
                        f"the upstream reported an error: {msg}"[:300],
                        detail=str(msg)[:300],
                    )
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
                content = delta.get("content") if isinstance(delta, dict) else None
                if content:
                    yield content
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
        if not done and result.finish_reason is None:
            raise ProviderError(
                "upstream_stream", "the upstream stream ended before it was done", cause="ended"
            )
