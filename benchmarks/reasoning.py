"""What reasoning adds to the time to first token, through the path a browser uses.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/reasoning.py [--runs 50]

It starts the fake upstream and chatsite under daphne (as ``latency.py`` does)
and, over one logged-in WebSocket, interleaves three kinds of reply, each a new
conversation:

* **plain**: ``fake?tokens=5&rate=0`` (no reasoning): ``send`` → first ``delta``;
* **reasoning_content**: the same, after 5 reasoning tokens in
  ``delta.reasoning_content``: ``send`` → first ``reasoning_delta``, and
  ``send`` → first ``delta`` (the answer);
* **think**: the reasoning inline, ``<think>…</think>`` cut across chunks at the
  start of the content (split out by the app while it streams).

Besides send → frame, each figure is also taken from the moment the fake wrote
the token (its own record, the same monotonic clock) to the moment the frame
arrived: the *relay*, which is what the app adds. What reasoning adds is the
reasoning kinds' relay minus the plain one's, per run.

Results are printed and written between ``<!-- reasoning:start -->`` and
``<!-- reasoning:end -->`` in ``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shlex
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ROOT,
    ChatApp,
    ChatSocket,
    FakeUpstreamProcess,
    Stats,
    add_allow_dirty_argument,
    check_monotonic_clock,
    check_tree_for_doc,
    git_revision,
    loadavg,
    machine_info,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- reasoning:start -->"
END_MARK = "<!-- reasoning:end -->"
KINDS = {
    "plain": "fake?tokens=5&rate=0&ttft=0",
    "reasoning_content": "fake?tokens=5&rate=0&ttft=0&reasoning=reasoning_content&thoughts=5",
    "think": "fake?tokens=5&rate=0&ttft=0&reasoning=think&thoughts=5",
}
TIMEOUT = 10.0


def _ms(seconds: float) -> float:
    return seconds * 1000.0


@dataclass
class Figures:
    first_frame: list[float] = field(default_factory=list)  # send -> first delta of either kind
    first_answer: list[float] = field(default_factory=list)  # send -> first answer delta
    relay_first: list[float] = field(default_factory=list)  # fake wrote the first token -> its frame
    relay_answer: list[float] = field(default_factory=list)  # fake wrote the first answer token -> delta
    added_first: list[float] = field(default_factory=list)  # relay_first - plain's relay, per run
    added_answer: list[float] = field(default_factory=list)


async def one(ws: ChatSocket, fake: FakeUpstreamProcess, kind: str, i: int) -> dict[str, float]:
    key = f"r{kind[:2]}{i}-{uuid.uuid4().hex[:8]}"
    sent = await ws.send(
        type="send",
        client_id=f"c-{key}",
        conversation=None,
        text="Think, then answer",
        model=f"openai/{KINDS[kind]}&key={key}",
    )
    frames = await ws.recv_until("reply_finished", TIMEOUT)
    if frames[-1][1]["status"] != "complete":
        raise RuntimeError(f"a {kind} reply ended {frames[-1][1]}")
    first = next(at for at, f in frames if f["type"] in ("delta", "reasoning_delta"))
    answer = next(at for at, f in frames if f["type"] == "delta")
    record = await fake.record(key)
    wrote_answer = record["token_times"][0]
    wrote_first = record["thought_times"][0] if record.get("thought_times") else wrote_answer
    return {
        "first_frame": _ms(first - sent),
        "first_answer": _ms(answer - sent),
        "relay_first": _ms(first - wrote_first),
        "relay_answer": _ms(answer - wrote_answer),
    }


async def run(args: argparse.Namespace) -> tuple[dict[str, Figures], dict]:
    clock = check_monotonic_clock()
    info = machine_info()
    info["clock"] = clock
    info["load_before"] = loadavg()
    figures = {kind: Figures() for kind in KINDS}
    fake: FakeUpstreamProcess | None = None
    app: ChatApp | None = None
    ws: ChatSocket | None = None
    with tempfile.TemporaryDirectory(prefix="chatsite-bench-reasoning-") as tmp:
        try:
            fake = await FakeUpstreamProcess.start(Path(tmp) / "fake.log")
            await fake.check_clock()
            app = ChatApp(
                {
                    "OPENAI_BASE_URL": fake.openai_base_url,
                    "OPENAI_MODELS": "fake",
                    "CHATSITE_MAX_MESSAGES_PER_MINUTE": "0",
                }
            )
            await asyncio.to_thread(app.start)
            ws = await ChatSocket.connect(app)
            async with asyncio.timeout(args.time_limit):
                order = list(KINDS)
                for i in range(args.warmup + args.runs):
                    order = order[1:] + order[:1]  # rotate, so noise hits every kind alike
                    run_figures = {kind: await one(ws, fake, kind, i) for kind in order}
                    if i < args.warmup:
                        continue
                    plain = run_figures["plain"]
                    for kind, got in run_figures.items():
                        f = figures[kind]
                        for name in ("first_frame", "first_answer", "relay_first", "relay_answer"):
                            getattr(f, name).append(got[name])
                        f.added_first.append(got["relay_first"] - plain["relay_first"])
                        f.added_answer.append(got["relay_answer"] - plain["relay_answer"])
        except BaseException:
            if app is not None and app.log_tail():
                print("--- daphne log (tail) ---\n" + app.log_tail(), file=sys.stderr)
            raise
        finally:
            if ws is not None:
                await ws.close()
            if app is not None:
                await asyncio.to_thread(app.stop)
            if fake is not None:
                await fake.stop()
    info["load_after"] = loadavg()
    return figures, info


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _row(label: str, values: list[float]) -> str:
    s = Stats.of(values)
    return f"| {label} | {s.n} | {_f(s.median)} | {_f(s.p95)} | {_f(s.min)} | {_f(s.max)} |"


def report(figures: dict[str, Figures], info: dict, command: str) -> str:
    plain, content, think = figures["plain"], figures["reasoning_content"], figures["think"]
    lines = [
        "## Reasoning: what it adds to the time to first token",
        "",
        f"- Date: {info['date']}; code: `{info.get('revision') or git_revision()}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']}",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Milliseconds. Each run sends one reply of each kind (a new conversation each), in rotating "
        "order: plain (`fake?tokens=5&rate=0`), reasoning in `delta.reasoning_content` (5 reasoning "
        "tokens first) and reasoning inline as `<think>…</think>` cut across chunks (split by the app "
        "while it streams). *Relay* is from the fake writing the token to the frame arriving at the "
        "client: what the app adds. *Added* is a reasoning kind's relay minus the plain reply's relay "
        "in the same run.",
        "",
        "| figure | n | median | p95 | min | max |\n|---|--:|--:|--:|--:|--:|",
        _row("plain: `send` → first `delta`", plain.first_frame),
        _row("reasoning_content: `send` → first `reasoning_delta`", content.first_frame),
        _row("think: `send` → first `reasoning_delta`", think.first_frame),
        _row("plain: relay of the first token", plain.relay_first),
        _row("reasoning_content: relay of the first reasoning token", content.relay_first),
        _row("think: relay of the first reasoning token", think.relay_first),
        _row("**reasoning_content: added to the first token** (per run)", content.added_first),
        _row("**think: added to the first token** (per run)", think.added_first),
        _row("reasoning_content: relay of the first answer token", content.relay_answer),
        _row("think: relay of the first answer token", think.relay_answer),
        _row("**reasoning_content: added to the first answer token** (per run)", content.added_answer),
        _row("**think: added to the first answer token** (per run)", think.added_answer),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC)
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    figures, info = asyncio.run(run(args))
    command = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/reasoning.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    section = report(figures, info, command.strip())
    print(section)
    if not args.no_doc:
        write_doc_section(args.doc, START_MARK, END_MARK, section, intro="# Benchmarks\n")


if __name__ == "__main__":
    main()
