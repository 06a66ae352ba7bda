"""What moderation (word and regular-expression lists) costs a streaming reply.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/moderation.py [--runs 30] [--cpu-runs 8] \
        [--cpu-batch 10]

It starts the fake upstream and two chatsite daphnes on it: one with moderation
off, one with a rules file (:data:`RULES`: three word lists of 60 words in all,
and three regular expressions) and the default window
(``CHATSITE_MODERATION_HOLD_CHARS=48``). Over one logged-in WebSocket to each,
replies are sent alternately to the one and the other, so noise hits both alike:

* **first token**: ``fake?tokens=40&rate=0`` and ``fake?tokens=40&rate=50`` (a
  model writing 50 tokens a second): the *relay* of the first token, from the
  fake writing it to the first ``delta`` arriving, on minus off in the same
  run. With rules on, the first text is held until the window is full, so the
  added time is mostly the model's own time to write ~48 characters;
* **CPU**: ``fake?tokens=2000&rate=0``: the daphne's CPU time (utime + stime,
  from /proc) for ``--cpu-batch`` such replies one after another, per 1,000
  tokens, on and off (a batch, since /proc counts in 10 ms ticks and one reply
  costs a few of them).

Results are printed and written between ``<!-- moderation:start -->`` and
``<!-- moderation:end -->`` in ``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import sys
import tempfile
import uuid
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
    loadavg,
    machine_info,
    proc_cpu_seconds,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- moderation:start -->"
END_MARK = "<!-- moderation:end -->"
TIMEOUT = 30.0
#: A rules file of a realistic size; none of it matches the fake's "w12 " tokens.
RULES = {
    "words": {
        "slurs": [f"slur{i}" for i in range(20)],
        "violence": [f"hurt{i}" for i in range(20)],
        "spam": [f"buy now {i}" for i in range(20)],
    },
    "regex": {
        "card-number": [r"\b(?:\d[ -]?){13,16}\b"],
        "email": [r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"],
        "api-key": [r"\bsk-[A-Za-z0-9]{20,}\b"],
    },
}
FIRST = {"rate 0": "fake?tokens=40&rate=0", "rate 50": "fake?tokens=40&rate=50"}
CPU_MODEL = "fake?tokens=2000&rate=0"
CPU_TOKENS = 2000


async def reply(ws: ChatSocket, fake: FakeUpstreamProcess, model: str, tag: str) -> dict:
    key = f"m{tag}-{uuid.uuid4().hex[:10]}"
    await ws.send(
        type="send", client_id=f"c-{key}", conversation=None, text="hello", model=f"openai/{model}&key={key}"
    )
    frames = await ws.recv_until("reply_finished", TIMEOUT)
    if frames[-1][1]["status"] != "complete":
        raise RuntimeError(f"a reply ended {frames[-1][1]}")
    first = next(at for at, f in frames if f["type"] == "delta")
    record = await fake.record(key)
    return {"relay_ms": (first - record["token_times"][0]) * 1000.0}


async def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict]:
    info = machine_info()
    info["clock"] = check_monotonic_clock()
    info["load_before"] = loadavg()
    out: dict[str, list[float]] = {}
    for name in FIRST:
        out[f"relay off {name}"], out[f"relay on {name}"], out[f"added {name}"] = [], [], []
    out["cpu off"], out["cpu on"] = [], []
    apps: dict[str, ChatApp] = {}
    sockets: dict[str, ChatSocket] = {}
    fake: FakeUpstreamProcess | None = None
    with tempfile.TemporaryDirectory(prefix="chatsite-bench-moderation-") as tmp:
        rules = Path(tmp) / "rules.json"
        rules.write_text(json.dumps(RULES))
        try:
            fake = await FakeUpstreamProcess.start(Path(tmp) / "fake.log")
            await fake.check_clock()
            base = {
                "OPENAI_BASE_URL": fake.openai_base_url,
                "OPENAI_MODELS": "fake",
                "CHATSITE_MAX_MESSAGES_PER_MINUTE": "0",
            }
            apps["off"] = ChatApp(base)
            apps["on"] = ChatApp({**base, "CHATSITE_MODERATION_RULES": str(rules)})
            for app in apps.values():
                await asyncio.to_thread(app.start)
            for side, app in apps.items():
                sockets[side] = await ChatSocket.connect(app)
            async with asyncio.timeout(args.time_limit):
                for i in range(args.warmup + args.runs):
                    for name, model in FIRST.items():
                        got = {}
                        for side in ("off", "on") if i % 2 else ("on", "off"):
                            got[side] = (await reply(sockets[side], fake, model, f"{side}{i}"))["relay_ms"]
                        if i >= args.warmup:
                            out[f"relay off {name}"].append(got["off"])
                            out[f"relay on {name}"].append(got["on"])
                            out[f"added {name}"].append(got["on"] - got["off"])
                for i in range(args.cpu_runs):
                    for side in ("off", "on") if i % 2 else ("on", "off"):
                        pid = apps[side].pid
                        before = proc_cpu_seconds(pid)
                        for j in range(args.cpu_batch):
                            await reply(sockets[side], fake, CPU_MODEL, f"cpu{side}{i}-{j}")
                        used = proc_cpu_seconds(pid) - before
                        out[f"cpu {side}"].append(used * 1000.0 * 1000 / (CPU_TOKENS * args.cpu_batch))
        except BaseException:
            for app in apps.values():
                if app.log_tail():
                    print("--- daphne log (tail) ---\n" + app.log_tail(), file=sys.stderr)
            raise
        finally:
            for ws in sockets.values():
                await ws.close()
            for app in apps.values():
                await asyncio.to_thread(app.stop)
            if fake is not None:
                await fake.stop()
    info["load_after"] = loadavg()
    return out, info


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _row(label: str, values: list[float]) -> str:
    s = Stats.of(values)
    return f"| {label} | {s.n} | {_f(s.median)} | {_f(s.p95)} | {_f(s.min)} | {_f(s.max)} |"


def report(out: dict[str, list[float]], info: dict, command: str, revision: str, batch: int) -> str:
    cpu_off, cpu_on = Stats.of(out["cpu off"]), Stats.of(out["cpu on"])
    added = cpu_on.median - cpu_off.median
    lines = [
        "## Moderation: what word and regular-expression lists cost a reply",
        "",
        f"- Date: {info['date']}; commit `{revision}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']}",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Two daphnes on one fake upstream, moderation off and on (a rules file of three word lists, "
        "60 words in all, and three regular expressions; `CHATSITE_MODERATION_HOLD_CHARS=48`), "
        "replies sent to each alternately. *Relay*: from the fake writing the first token to the "
        "first `delta` arriving (ms). *Added*: on minus off in the same run. At rate 0 the fake writes "
        "as fast as it can, so the added time is the app's own; at 50 tokens a second (tokens of 3-4 "
        "characters) it is mostly the wait for the window to fill, the price of never showing a "
        "match: about 48 characters of the model's own writing time.",
        "",
        "| figure | n | median | p95 | min | max |\n|---|--:|--:|--:|--:|--:|",
    ]
    for name in FIRST:
        lines += [
            _row(f"off, {name}: relay of the first token", out[f"relay off {name}"]),
            _row(f"on, {name}: relay of the first token", out[f"relay on {name}"]),
            _row(f"**on, {name}: added to the first token** (per run)", out[f"added {name}"]),
        ]
    lines += [
        "",
        f"CPU of the daphne per 1,000 tokens (ms; each sample is {batch} replies of {CPU_TOKENS:,} "
        f"tokens at rate 0 one after another, {batch * CPU_TOKENS:,} tokens, since /proc counts in "
        f"10 ms ticks: a sample's resolution is {10_000 / (batch * CPU_TOKENS):.2f} ms per 1,000 tokens):",
        "",
        "| figure | n | median | p95 | min | max |\n|---|--:|--:|--:|--:|--:|",
        _row("off: CPU ms per 1,000 tokens", out["cpu off"]),
        _row("on: CPU ms per 1,000 tokens", out["cpu on"]),
        "",
        f"**Added CPU per 1,000 tokens (median on minus median off): {_f(added)} ms.**",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu-runs", type=int, default=8)
    parser.add_argument("--cpu-batch", type=int, default=10, help="replies per CPU sample")
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC)
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    revision = check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    out, info = asyncio.run(run(args))
    command = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/moderation.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    section = report(out, info, command.strip(), revision, args.cpu_batch)
    print(section)
    if not args.no_doc:
        write_doc_section(args.doc, START_MARK, END_MARK, section, intro="# Benchmarks\n", revision=revision)


if __name__ == "__main__":
    main()
