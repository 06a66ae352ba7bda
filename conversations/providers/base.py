"""The provider interface: a small base class, one module per backend.

A provider turns a conversation into a stream of text. ``stream`` is an async
generator yielding plain ``str`` pieces (the hot path carries nothing else);
usage and the finish reason are written onto the :class:`StreamResult` the
caller passes in. Anything that goes wrong is raised as :class:`ProviderError`
(``failures.py``) with a named ``kind``; the reply runner decides about retries
and statuses.

Cancelling the task that iterates ``stream`` must close the upstream at once:
backends open their HTTP streams with ``async with`` (or, for the local model,
stop generating at the next token).

Nothing here knows Django: ``providers/__init__.py`` reads the settings and hands
each backend its own options (a dict, from ``CHATSITE_PROVIDERS``) and the
:class:`CommonOptions` every backend shares.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from conversations.prompt import IMAGE_TOKENS, ChatMessage, PromptCount, PromptFit
from conversations.providers.failures import ProviderError, context_length_error, http_error
from conversations.providers.http import get_client
from conversations.providers.sse import connect_cause

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    provider: str
    name: str
    label: str
    description: str = ""
    #: Whether the model takes images, where its provider says (None: it does not say).
    vision: bool | None = None

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "id": self.id,
            "label": self.label,
            "description": self.description,
            "vision": bool(self.vision),
        }


@dataclass(slots=True)
class StreamResult:
    """What a provider reports besides text, filled in while streaming."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: False when the answer came whole (a request with streaming off, or a
    #: server that answered a stream request with JSON): its pieces carry no
    #: timing, so no tokens-per-second is measured.
    streamed: bool = True


@dataclass(frozen=True, slots=True)
class CommonOptions:
    """What every backend is told besides its own options (from settings, by
    ``providers/__init__.py``; the defaults are the settings' defaults)."""

    #: The window of a model nobody names (``CHATSITE_CONTEXT_TOKENS``).
    context_tokens: int = 8192
    #: Windows by ``<provider>/<model>`` (``CHATSITE_CONTEXT_TOKENS_MODELS``).
    context_tokens_models: Mapping[str, int] = field(default_factory=dict)
    #: Seconds a model listing may take (``CHATSITE_MODELS_TIMEOUT``).
    list_timeout: float = 5.0
    #: Extended thinking budgets by ``<provider>/<model>`` (``CHATSITE_THINKING_BUDGET_MODELS``).
    thinking_budget_models: Mapping[str, int] = field(default_factory=dict)
    #: ``<provider>/<model>`` ids or globs of models that take images, where the
    #: provider does not say (``CHATSITE_VISION_MODELS``).
    vision_models: tuple[str, ...] = ()
    #: ``<provider>/<model>`` ids or globs of models asked with streaming off
    #: (``CHATSITE_NON_STREAMING_MODELS``).
    non_streaming_models: tuple[str, ...] = ()


def listed_vision(item: dict[str, Any]) -> bool | None:
    """Whether a model list entry says the model takes images: OpenRouter's
    ``architecture.input_modalities``, a ``capabilities`` list naming ``vision``
    (Ollama), LM Studio's ``type: "vlm"``; None where it says nothing."""
    architecture = item.get("architecture")
    modalities = architecture.get("input_modalities") if isinstance(architecture, dict) else None
    if isinstance(modalities, list):
        return "image" in modalities
    capabilities = item.get("capabilities")
    if isinstance(capabilities, list) and all(isinstance(c, str) for c in capabilities):
        return "vision" in capabilities
    if item.get("type") == "vlm":
        return True
    return None


def listed_context_tokens(item: dict[str, Any]) -> int | None:
    """The context window a model list entry names, where the server says:
    vLLM's ``max_model_len``, ``context_length`` (OpenRouter, LM Studio),
    llama.cpp's ``meta.n_ctx``."""
    meta = item.get("meta")
    for value in (
        item.get("max_model_len"),
        item.get("context_length"),
        meta.get("n_ctx") if isinstance(meta, dict) else None,
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --- Context windows and token counts -----------------------------------------

#: Per message, what a chat template adds around the text (role markers,
#: separators), and what it adds once (the assistant's turn opening).
TEMPLATE_TOKENS_PER_MESSAGE = 5
TEMPLATE_TOKENS_PER_PROMPT = 3


def estimate_tokens(text: str) -> int:
    """A deliberately generous estimate: about 3 characters a token (English
    prose is nearer 4; code and other languages are less)."""
    return math.ceil(len(text) / 3)


def image_tokens(messages: list[ChatMessage]) -> int:
    """What the prompt's images count against the window (a fixed estimate each)."""
    return IMAGE_TOKENS * sum(len(m.images) for m in messages)


class BaseProvider:
    """Subclass and implement :meth:`list_models` and :meth:`stream`."""

    #: Shown in the model picker next to each model.
    label = "Provider"
    #: The API continues a final assistant message ("prefill"); otherwise a
    #: continuation asks the model in words to go on.
    supports_prefill = False
    #: ``max_tokens`` sent when neither the conversation nor CHATSITE_MAX_TOKENS sets one.
    default_max_tokens: int | None = None
    #: The window of a model this backend cannot ask about, before the settings.
    default_context_tokens: int | None = None

    def __init__(self, name: str, options: Mapping[str, Any], common: CommonOptions | None = None) -> None:
        self.name = name
        self.options = options
        self.common = common or CommonOptions()
        #: Windows the upstream named in an overflow error, by model.
        self._learned_context: dict[str, int] = {}
        #: Windows the server's model list names, by model (see :func:`listed_context_tokens`).
        self._listed_context: dict[str, int] = {}
        #: Whether each model takes images, where the server's model list says (:func:`listed_vision`).
        self._listed_vision: dict[str, bool] = {}

    async def context_tokens(self, *, model: str) -> int:
        """The model's context window in tokens: what the upstream showed (see
        :meth:`learn_context_tokens`), else ``CHATSITE_CONTEXT_TOKENS_MODELS``,
        else the provider's ``CONTEXT_TOKENS`` option, else what the server's
        model list says, else the backend's default, else ``CHATSITE_CONTEXT_TOKENS``
        (those two settings come in :attr:`common`)."""
        learned = self._learned_context.get(model)
        if learned:
            return learned
        configured = self.common.context_tokens_models.get(f"{self.name}/{model}") or self.options.get(
            "CONTEXT_TOKENS"
        )
        if configured:
            return int(configured)
        listed = self._listed_context.get(model)
        if listed:
            return listed
        return int(self.default_context_tokens or self.common.context_tokens)

    @property
    def capacity(self) -> int:
        """How many generations the server runs at once for this process (the
        ``CAPACITY`` option; 0: unlimited). More wait in
        ``conversations.realtime.capacity``'s queue."""
        return max(0, int(self.options.get("CAPACITY") or 0))

    def capacity_key(self, *, model: str) -> str:
        """What shares one :attr:`capacity`: the whole server, for a remote provider."""
        return self.name

    def thinking_budget(self, *, model: str) -> int:
        """The reasoning budget in tokens for a backend whose API turns thinking
        on per request (Anthropic): ``CHATSITE_THINKING_BUDGET_MODELS``, else the
        provider's ``THINKING_BUDGET`` option; 0 is off."""
        budget = self.common.thinking_budget_models.get(f"{self.name}/{model}")
        if budget is None:
            budget = self.options.get("THINKING_BUDGET") or 0
        return int(budget)

    def learn_context_tokens(self, *, model: str, context_tokens: int) -> None:
        """Remember a window the upstream showed (named in its overflow error, or
        at most the prompt it answered with an empty stream), for later requests
        of this process."""
        if context_tokens > 0:
            known = self._learned_context.get(model)
            self._learned_context[model] = min(known, context_tokens) if known else context_tokens

    async def count_prompt_tokens(self, *, model: str, messages: list[ChatMessage]) -> PromptCount:
        """The prompt's tokens, template included. Here an estimate; backends
        with a tokenizer at hand count exactly."""
        return PromptCount(
            sum(estimate_tokens(m.content) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
            + TEMPLATE_TOKENS_PER_PROMPT
            + image_tokens(messages),
            exact=False,
        )

    async def completion_tokens(self, *, model: str, text: str) -> int | None:
        """The tokens of a reply's text, where a tokenizer is at hand (None: not counted)."""
        return None

    @property
    def host(self) -> str:
        """Where the provider's server is, for the words of an error: ``host[:port]``
        of its base URL, without any user info; "" for a provider with no server."""
        base_url = getattr(self, "base_url", "") or ""
        try:
            parts = urlsplit(base_url)
            port = parts.port
        except ValueError:
            return ""
        if not parts.hostname:
            return ""
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{hostname}:{port}" if port else hostname

    async def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError

    async def _list_remote_models(
        self, url: str, headers: dict[str, str], configured: list[str]
    ) -> list[ModelInfo]:
        """Configured models plus those the server lists at ``url`` (OpenAI-style
        ``{"data": [{"id", "display_name"?}]}``). A server that cannot be listed
        raises :class:`ProviderError`; ``catalog`` keeps the last good list."""
        timeout = self.common.list_timeout
        try:
            response = await get_client().get(url, headers=headers, timeout=timeout)
        except httpx.ReadTimeout:
            raise ProviderError(
                "upstream_connect", f"listing models got no answer within {timeout:g} s", cause="timeout"
            ) from None
        except httpx.TransportError as exc:
            cause = connect_cause(exc)
            raise ProviderError("upstream_connect", f"could not list models ({cause})", cause=cause) from None
        if response.status_code != 200:
            raise http_error(response.status_code, response.text, response.headers.get("retry-after"))
        try:
            items = response.json().get("data", [])
            if not isinstance(items, list):
                raise ValueError("'data' is not a list")
        except (ValueError, AttributeError):
            raise ProviderError(
                "upstream_error", "the model list is not the JSON expected", cause="malformed"
            ) from None
        found: dict[str, str] = {name: name for name in configured}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                found.setdefault(item["id"], str(item.get("display_name") or item["id"]))
                window = listed_context_tokens(item)
                if window:
                    self._listed_context[item["id"]] = window
                sees = listed_vision(item)
                if sees is not None:
                    self._listed_vision[item["id"]] = sees
        return [
            ModelInfo(self.name, name, label, vision=self.takes_images(model=name))
            for name, label in found.items()
        ]

    def takes_images(self, *, model: str) -> bool:
        """Whether ``model`` takes images: what the server's model list said,
        else what the backend knows of it (:meth:`known_vision`), else
        whether ``CHATSITE_VISION_MODELS`` names it."""
        listed = self._listed_vision.get(model)
        if listed is not None:
            return listed
        known = self.known_vision(model=model)
        if known is not None:
            return known
        model_id = f"{self.name}/{model}"
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.common.vision_models)

    def known_vision(self, *, model: str) -> bool | None:
        """What the backend itself knows of a model's images (None: nothing)."""
        return None

    def streams(self, *, model: str) -> bool:
        """Whether a request for ``model`` streams. Off for every model of a
        provider whose ``STREAM`` option is false, and for the models
        ``CHATSITE_NON_STREAMING_MODELS`` names (endpoints that only answer
        whole: some proxies and batch gateways)."""
        if not self.options.get("STREAM", True):
            return False
        patterns = self.common.non_streaming_models
        if not patterns:
            return True
        model_id = f"{self.name}/{model}"
        return not any(fnmatch.fnmatchcase(model_id, pattern) for pattern in patterns)

    def configured_models(self) -> list[ModelInfo]:
        """The models offered before the first listing succeeds (``MODELS``)."""
        return [
            ModelInfo(self.name, name, name, vision=self.takes_images(model=name))
            for name in self.options.get("MODELS") or []
        ]

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
        """The reply's text, piece by piece (an async generator in every backend).

        ``thinking_budget``: the conversation's own reasoning budget for a
        backend that turns thinking on per request (0: off; None: the model's,
        :meth:`thinking_budget`); other backends ignore it."""
        raise NotImplementedError
        yield ""  # an async generator, like the backends' own

    async def aclose(self) -> None:  # pragma: no cover - optional hook
        return None


async def prompt_fit(
    *,
    provider: BaseProvider,
    model: str,
    messages: list[ChatMessage],
    max_tokens: int | None,
    keep_last: int = 1,
) -> PromptFit:
    """Fit a conversation into the model's window, with room for the reply.

    When the whole history does not fit, the oldest turns are left out: the
    system prompt and the last ``keep_last`` messages (the newest turn) are
    always sent, and what is sent after the system prompt starts with a user
    message. The room kept for the reply is the requested ``max_tokens`` (or
    the provider's default), at most half the window (a quarter when nothing
    was requested), plus a margin when the count is an estimate; the
    ``max_tokens`` sent is capped to what is left.
    Raises the ``context_length`` error when even the newest turn does not fit.
    """
    window = await provider.context_tokens(model=model)
    requested = max_tokens or provider.default_max_tokens
    reserve = min(requested or window // 4, window // 2)

    async def count(candidate: list[ChatMessage]) -> PromptCount:
        try:
            return await provider.count_prompt_tokens(model=model, messages=candidate)
        except Exception as exc:  # a tokenizer that fails must not fail the reply
            log.warning("%s: counting the prompt failed (%s); estimating", provider.name, type(exc).__name__)
            return await BaseProvider.count_prompt_tokens(provider, model=model, messages=candidate)

    head = 1 if messages and messages[0].role == "system" else 0
    tail = max(1, min(keep_last, len(messages) - head))
    middle = messages[head : len(messages) - tail]

    def candidate(dropped: int) -> list[ChatMessage]:
        return messages[:head] + middle[dropped:] + messages[len(messages) - tail :]

    def turn_start(dropped: int) -> int:
        # Never start the history with an assistant message (or half a turn).
        while dropped < len(middle) and middle[dropped].role != "user":
            dropped += 1
        return dropped

    dropped = 0
    counted = await count(messages)
    if not counted.exact:
        # An estimate can be short (a template's own text, such as a default
        # system prompt, is not in it): keep a margin for that too.
        reserve += max(32, window // 16)
    if counted.tokens + reserve > window and middle:
        # The fewest left out that fit: a binary search over turn starts.
        low, high = 1, len(middle)
        best = len(middle)
        best_count = None
        while low <= high:
            mid = (low + high) // 2
            start = turn_start(mid)
            result = await count(candidate(start))
            if result.tokens + reserve <= window:
                best, best_count = start, result
                high = mid - 1
            else:
                low = mid + 1
        dropped = best
        counted = best_count or await count(candidate(dropped))
    sent = candidate(dropped)
    room = window - counted.tokens - (0 if counted.exact else max(32, window // 16))
    if room <= 0:
        raise context_length_error(context_tokens=window, prompt_tokens=counted.tokens)
    capped = requested is not None and requested > room
    return PromptFit(
        messages=sent,
        omitted=dropped,
        prompt_tokens=counted.tokens,
        exact=counted.exact,
        context_tokens=window,
        max_tokens=min(requested, room) if requested is not None else None,
        capped=capped,
    )
