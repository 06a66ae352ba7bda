"""Fifty users on the bundled model at once: the queue for its capacity.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/queueing.py \
        [--users 50] [--max-tokens 16] [--queue-max 16,64]

chatsite under daphne with the local provider (``CHATSITE_LOCAL_MODEL=bundled``,
one generation at a time), ``--users`` accounts, one logged-in WebSocket each.
After one warm-up reply (the model loads), every user sends one message at the
same moment (new conversation each) and reads its socket until that reply's
``reply_finished``. Once per ``CHATSITE_QUEUE_MAX`` in ``--queue-max`` (a fresh
app each time).

What it checks and reports, per run:

* every reply ends in ``complete`` (or ``length_limit`` at ``max_tokens``, its
  text whole) or is refused with ``error``/``overloaded``; any other ending
  (a timeout above all) or no ending within ``--time-limit`` is counted as a
  failure and makes the exit status 1;
* a refusal comes at once: the time from send to its ``reply_finished``;
* the wait of every served reply (``metrics.queued_ms``, the server's): min,
  median, p90, max;
* fairness: the order served (when each reply's first delta arrived) against
  its place when it joined the queue (its first ``reply_queued``): a reply told
  position p must start right after the replies that had started by then and
  the p - 1 ahead of it; those that did not were served out of order.

``--fake`` runs the same against the project's fake upstream as an
OpenAI-compatible server with ``OPENAI_CAPACITY=1`` (16 tokens at 200 a
second), instead of the bundled model: the queue of a remote provider, and a
check of this script on a machine without the model (``--no-doc`` implied).

(Not ``queue.py``: run as a script, that name would hide the standard
library's ``queue`` module from everything in this directory.)

Results are printed and written between ``<!-- queue:start -->`` and
``<!-- queue:end -->`` in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ROOT,
    ChatApp,
    FakeUpstreamProcess,
    add_allow_dirty_argument,
    check_monotonic_clock,
    check_tree_for_doc,
    git_revision,
    loadavg,
    machine_info,
    now,
    percentile,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- queue:start -->"
END_MARK = "<!-- queue:end -->"
DOC_INTRO = "# Benchmarks\n\nSee `benchmarks/README.md` for how to run the suite.\n"
PROMPT = "Name one colour."
MODEL_ID = "local/SmolLM2-135M-Instruct"
FAKE_MODEL = "openai/fake?tokens=16&rate=200"
SERVED = {("complete", None), ("error", "length_limit")}


async def connect(app: ChatApp, cookie: str) -> Any:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.typing import Origin

    return await ws_connect(
        app.ws_url,
        origin=Origin(app.origin),
        additional_headers={"Cookie": cookie},
        open_timeout=30,
        proxy=None,
    )


async def one_reply(ws: Any, index: int, go: asyncio.Event, time_limit: float, model: str) -> dict:
    """Send when ``go`` is set; read until the reply's end."""
    await go.wait()
    sent = now()
    frame = {"type": "send", "client_id": f"c-{uuid.uuid4().hex[:12]}", "conversation": None, "text": PROMPT}
    await ws.send(json.dumps({**frame, "model": model}))
    out: dict[str, Any] = {
        "index": index,
        "sent": sent,
        "first_position": None,
        "queued_seen": None,
        "first_delta": None,
        "granted": None,
    }
    try:
        async with asyncio.timeout(time_limit):
            while True:
                data = json.loads(await ws.recv())
                at = now()
                kind = data["type"]
                if kind == "reply_started":
                    out["granted"] = at  # unless it waits: then its position 0 says when
                elif kind == "reply_queued":
                    if out["first_position"] is None:
                        out["first_position"], out["queued_seen"] = data["position"], at
                    if data["position"] == 0:
                        out["granted"] = at
                elif kind == "delta" and out["first_delta"] is None:
                    out["first_delta"] = at
                elif kind == "error":
                    out.update(status="refused", error_kind=data["code"], ended=at)
                    return out
                elif kind == "reply_finished":
                    out.update(
                        status=data["status"],
                        error_kind=data["error_kind"],
                        ended=at,
                        queued_ms=data["metrics"].get("queued_ms"),
                        ttft_ms=data["metrics"].get("ttft_ms"),
                        tokens=(data.get("usage") or {}).get("completion_tokens"),
                    )
                    return out
    except TimeoutError:
        out.update(status="no end", error_kind=None, ended=now())
        return out


async def one_run(
    args: argparse.Namespace, queue_max: int, fake: FakeUpstreamProcess | None
) -> tuple[list[dict], dict]:
    model = MODEL_ID if fake is None else FAKE_MODEL
    env = {
        "CHATSITE_MAX_TOKENS": str(args.max_tokens),
        "CHATSITE_DEFAULT_MODEL": model,
        "CHATSITE_MAX_MESSAGES_PER_MINUTE": "0",  # 0: no per-user message limit
        "CHATSITE_QUEUE_MAX": str(queue_max),
    }
    if fake is None:
        env["CHATSITE_LOCAL_MODEL"] = "bundled"
    else:
        env.update(OPENAI_BASE_URL=fake.openai_base_url, OPENAI_API_KEY="sk-bench", OPENAI_CAPACITY="1")
    app = ChatApp(env, users=args.users)
    sockets: list[Any] = []
    info: dict[str, Any] = {"queue_max": queue_max}
    try:
        await asyncio.to_thread(app.start)
        sockets = [await connect(app, cookie) for cookie in app.cookies]
        # Warm-up: the first reply loads the model.
        warm = asyncio.Event()
        warm.set()
        first = await one_reply(sockets[0], -1, warm, 300, model)
        if (first["status"], first["error_kind"]) not in SERVED:
            raise RuntimeError(f"the warm-up reply ended {first}")
        go = asyncio.Event()
        tasks = [
            asyncio.ensure_future(one_reply(ws, i, go, args.time_limit, model))
            for i, ws in enumerate(sockets)
        ]
        await asyncio.sleep(0.2)  # every task waits on go
        started = now()
        go.set()
        results = await asyncio.gather(*tasks)
        info["wall_s"] = now() - started
    except BaseException:
        if app.log_tail():
            print("--- daphne log (tail) ---\n" + app.log_tail(), file=sys.stderr)
        raise
    finally:
        for ws in sockets:
            try:
                await ws.close()
            except Exception:
                pass
        await asyncio.to_thread(app.stop)
    return results, info


def summarise(results: list[dict], info: dict) -> dict:
    served = [r for r in results if (r["status"], r["error_kind"]) in SERVED]
    shed = [r for r in results if (r["status"], r["error_kind"]) == ("error", "overloaded")]
    other = [r for r in results if r not in served and r not in shed]
    waits = sorted(r["queued_ms"] or 0.0 for r in served)
    refusal_ms = sorted((r["ended"] - r["sent"]) * 1000 for r in shed)
    # FIFO, exactly: a reply told position p when it joined the queue must be
    # served right after the replies that had started by then and the p - 1
    # that waited ahead of it. Those off that place were served out of order.
    by_service = sorted(served, key=lambda r: r["granted"] if r["granted"] is not None else math.inf)
    place = {id(r): k for k, r in enumerate(by_service)}
    waited = [r for r in served if r["first_position"]]
    out_of_order = 0
    for r in waited:
        started_before = sum(
            1 for other in served if other["granted"] is not None and other["granted"] < r["queued_seen"]
        )
        if place[id(r)] != started_before + r["first_position"] - 1:
            out_of_order += 1
    return {
        "queue_max": info["queue_max"],
        "wall_s": info["wall_s"],
        "n": len(results),
        "served": len(served),
        "shed": len(shed),
        "other": [(r["index"], r["status"], r["error_kind"]) for r in other],
        "wait_ms": {q: percentile(waits, q) for q in (0, 50, 90, 100)},
        "refusal_ms": {q: percentile(refusal_ms, q) for q in (0, 50, 100)},
        "out_of_order": out_of_order,
        "waited": len(waited),
        "ttft_ms": percentile(sorted(r["ttft_ms"] for r in served if r["ttft_ms"] is not None), 50),
    }


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def report(summaries: list[dict], info: dict, command: str, args: argparse.Namespace) -> str:
    lines = [
        "## Fifty users on the bundled model at once (the queue)",
        "",
        f"- Date: {info['date']}; code: `{info.get('revision', '?')}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']} (the machine is shared)",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{args.users} accounts, one WebSocket each, send “{PROMPT}” at the same moment to the bundled "
        f"model (one generation at a time; `CHATSITE_MAX_TOKENS={args.max_tokens}`), after one warm-up "
        "reply. Each row is a fresh app with that `CHATSITE_QUEUE_MAX`. *Served*: ended `complete` (or "
        "`length_limit` at `max_tokens`); *refused*: `error`/`overloaded`; *other*: any other ending, or "
        f"none within {args.time_limit:g} s (a failure). Waits are the server's `metrics.queued_ms` of the "
        "served replies; a refusal's time is from its send to its `reply_finished`, as the client saw it. "
        "*Out of order*: replies that waited and were not served (their request sent: `reply_queued` "
        "position 0) exactly after the replies that had "
        "started when they joined the queue and the `position - 1` waiting ahead of them (their "
        "first `reply_queued`): 0 is first come, first served.",
        "",
        "| `CHATSITE_QUEUE_MAX` | served | refused (`overloaded`) | other "
        "| wait min / median / p90 / max (ms) | refused after, median / max (ms) "
        "| out of order | all done in (s) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        w, r = s["wait_ms"], s["refusal_ms"]
        lines.append(
            f"| {s['queue_max']} | {s['served']} of {s['n']} | {s['shed']} | {len(s['other'])} "
            f"| {_ms(w[0])} / {_ms(w[50])} / {_ms(w[90])} / {_ms(w[100])} "
            f"| {_ms(r[50])} / {_ms(r[100])} | {s['out_of_order']} of {s['waited']} | {s['wall_s']:.1f} |"
        )
    failures = [s for s in summaries if s["other"]]
    lines += [
        "",
        "Every reply either completed or was refused at once with `overloaded`; none timed out."
        if not failures
        else f"**Failures**: {[s['other'] for s in failures]}",
    ]
    return "\n".join(lines) + "\n"


def _command(argv: list[str]) -> str:
    head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/queueing.py"
    return " ".join([head, *(shlex.quote(a) for a in argv)])


async def run_all(args: argparse.Namespace) -> tuple[list[dict], dict]:
    info = machine_info()
    info["clock"] = check_monotonic_clock()
    info["load_before"] = loadavg()
    info["revision"] = git_revision()
    summaries = []
    fake = None
    if args.fake:
        import tempfile

        fake = await FakeUpstreamProcess.start(Path(tempfile.mkdtemp(prefix="chatsite-queue-")) / "fake.log")
    try:
        for queue_max in args.queue_max:
            results, run_info = await one_run(args, queue_max, fake)
            summary = summarise(results, run_info)
            print(json.dumps(summary), file=sys.stderr, flush=True)
            summaries.append(summary)
    finally:
        if fake is not None:
            await fake.stop()
    info["load_after"] = loadavg()
    return summaries, info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="benchmarks/queueing.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="accounts, one socket each (default 50)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens per reply (default 16)")
    parser.add_argument(
        "--queue-max",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[16, 64],
        help="CHATSITE_QUEUE_MAX of each run, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="seconds a reply may take (default 600)"
    )
    parser.add_argument(
        "--fake", action="store_true", help="the fake upstream, capacity 1 (implies --no-doc)"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the markdown file alone")
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    started = time.monotonic()
    summaries, info = asyncio.run(run_all(args))
    section = report(summaries, info, _command([a for a in argv if a != "--no-doc"]), args)
    print(section)
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    if not args.no_doc and not args.fake:
        write_doc_section(args.doc, START_MARK, END_MARK, section, DOC_INTRO)
        print(f"updated {args.doc}", file=sys.stderr)
    return 1 if any(s["other"] for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
