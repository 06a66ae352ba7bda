"""Stop and send, measured through the path a browser uses.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/stop_and_send.py [--runs 30]

The same processes as ``latency.py`` (the fake upstream, chatsite under daphne,
one logged-in WebSocket). Each run streams a never-ending drip
(``fake?fault=drip&rate=50``) in a conversation of its own and, after 3 deltas,
moves on to a new message (``fake?tokens=5&rate=0&ttft=0``) in one of two ways,
alternating so that the machine's noise hits both alike:

* **one step**: a ``send`` with ``"interrupt": true``;
* **two steps** (what a client does without it): ``stop``, wait for
  ``reply_finished``, then ``send``.

For each: the time from the first frame sent until the fake noticed the old
upstream connection close, until the old reply's ``reply_finished``, and until
the new reply's first ``delta``; and, from the fake's records, whether the new
upstream request started before the old one was closed (an overlap: must be 0).

Results are printed and written between ``<!-- stop-and-send:start -->`` and
``<!-- stop-and-send:end -->`` in ``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ChatApp,
    ChatSocket,
    FakeUpstreamProcess,
    add_allow_dirty_argument,
    check_monotonic_clock,
    check_tree_for_doc,
    loadavg,
    machine_info,
    write_doc_section,
)
from benchmarks.latency import (
    DELTAS_BEFORE_STOP,
    DOC,
    DRIP_MODEL,
    HEAD,
    TIMEOUT,
    TTFT_MODEL,
    _count_row,
    _key,
    _ms,
    _row,
    _tag,
)

START_MARK = "<!-- stop-and-send:start -->"
END_MARK = "<!-- stop-and-send:end -->"


@dataclass
class Way:
    """The figures of one way of moving on to a new message."""

    closed: list[float] = field(default_factory=list)  # first frame sent -> old upstream closed
    old_finished: list[float] = field(default_factory=list)  # -> old reply's reply_finished
    new_delta: list[float] = field(default_factory=list)  # -> new reply's first delta
    overlaps: list[int] = field(default_factory=list)  # 1: the new request began before the old closed
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Results:
    one_step: Way = field(default_factory=Way)
    two_steps: Way = field(default_factory=Way)


async def _drip(ws: ChatSocket, key: str) -> tuple[str, str]:
    """A drip in a new conversation, once 3 deltas arrived: (conversation, reply)."""
    await ws.send(
        type="send",
        client_id=f"c-{key}",
        conversation=None,
        text="Drip",
        model="openai/" + _tag(DRIP_MODEL, key),
    )
    frames = await ws.recv_until("reply_started", TIMEOUT)
    conversation, reply = frames[0][1]["conversation"], frames[-1][1]["reply"]
    deltas = 0
    while deltas < DELTAS_BEFORE_STOP:
        _, frame = await ws.recv(TIMEOUT)
        if frame["type"] == "delta":
            deltas += 1
        elif frame["type"] in ("reply_finished", "error"):
            raise RuntimeError(f"the drip ended early: {frame}")
    return conversation, reply


async def one_run(
    way: Way | None, ws: ChatSocket, fake: FakeUpstreamProcess, key: str, *, interrupt: bool
) -> None:
    conversation, old = await _drip(ws, key + "-old")
    new_key = key + "-new"
    send = {
        "type": "send",
        "client_id": f"c-{new_key}",
        "conversation": conversation,
        "text": "Something else",
        "model": "openai/" + _tag(TTFT_MODEL, new_key),
    }
    if interrupt:
        first_at = await ws.send(**send, interrupt=True)
        frames = await ws.recv_until("reply_finished", TIMEOUT)
    else:
        first_at = await ws.send(type="stop", reply=old)
        frames = await ws.recv_until("reply_finished", TIMEOUT)
        await ws.send(**send)
    old_finished_at, old_finished = frames[-1]
    if old_finished["reply"] != old:
        raise RuntimeError(f"expected the old reply's end first: {old_finished}")
    frames = await ws.recv_until("delta", TIMEOUT)
    new_delta_at = frames[-1][0]
    await ws.recv_until("reply_finished", TIMEOUT)
    old_record = await fake.record(key + "-old", wait_disconnected=TIMEOUT)
    new_record = await fake.record(new_key)
    if way is None:
        return
    closed_at = old_record["disconnected_at"]
    way.closed.append(_ms(closed_at - first_at))
    way.old_finished.append(_ms(old_finished_at - first_at))
    way.new_delta.append(_ms(new_delta_at - first_at))
    way.overlaps.append(int(new_record["started_at"] < closed_at))
    way.statuses[old_finished["status"]] = way.statuses.get(old_finished["status"], 0) + 1


async def run(args: argparse.Namespace) -> tuple[Results, dict]:
    info = machine_info()
    info["clock"] = check_monotonic_clock()
    info["load_before"] = loadavg()
    results = Results()
    fake: FakeUpstreamProcess | None = None
    app: ChatApp | None = None
    ws: ChatSocket | None = None
    with tempfile.TemporaryDirectory(prefix="chatsite-bench-fake-") as tmp:
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
                for i in range(args.warmup + args.runs):
                    measured = i >= args.warmup
                    # Alternate which way goes first.
                    for interrupt in (True, False) if i % 2 else (False, True):
                        way = results.one_step if interrupt else results.two_steps
                        await one_run(way if measured else None, ws, fake, _key("ss", i), interrupt=interrupt)
            print(f"stop and send: {args.runs} runs each way", file=sys.stderr, flush=True)
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
    return results, info


def report(results: Results, info: dict, command: str, runs: int) -> str:
    one, two = results.one_step, results.two_steps
    statuses = {k: one.statuses.get(k, 0) + two.statuses.get(k, 0) for k in {*one.statuses, *two.statuses}}
    lines = [
        "## Stop and send",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']}",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        "The processes of the latency section. Each run streams a drip "
        f"(`{DRIP_MODEL}`) in a new conversation and, after {DELTAS_BEFORE_STOP} deltas, moves on to a "
        f'new message (`{TTFT_MODEL}`): in **one step**, a `send` with `"interrupt": true`; in **two '
        "steps**, `stop`, wait for `reply_finished`, then `send`. Times from the first frame sent, in "
        f"milliseconds; {runs} runs each way, alternating which goes first.",
        "",
        HEAD,
        _row("one step: `send` (interrupt) → old upstream closed", one.closed),
        _row("one step: → old reply's `reply_finished`", one.old_finished),
        _row("one step: → new reply's first `delta`", one.new_delta),
        _row("two steps: `stop` → old upstream closed", two.closed),
        _row("two steps: → old reply's `reply_finished`", two.old_finished),
        _row("two steps: → `send` → new reply's first `delta`", two.new_delta),
        "",
        "One step closes the old upstream a database read later than `stop` does: before it stops "
        "anything the server checks that the send is not a retry of one stored before (a retry stops "
        "nothing), and that read waits its turn on the database thread. From then on it is the two "
        "steps without the round trip between them.",
        "",
        "The new upstream request began before the old one was closed (counts per run, must be 0):",
        "",
        "| figure | n | median | p95 | p99 | max | total |\n|---|--:|--:|--:|--:|--:|--:|",
        _count_row("one step: overlaps", one.overlaps),
        _count_row("two steps: overlaps", two.overlaps),
        "",
        "Statuses of the old replies: "
        + ", ".join(f"`{k}` x {v}" for k, v in sorted(statuses.items()))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="benchmarks/stop_and_send.py", description="Measure stop and send.")
    parser.add_argument("--runs", type=int, default=30, help="measured runs each way (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded runs first (default 3)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the markdown file alone")
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    revision = check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    results, info = asyncio.run(run(args))
    command = " ".join(
        [
            "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/stop_and_send.py",
            *(shlex.quote(a) for a in argv),
        ]
    )
    section = report(results, info, command, args.runs)
    print(section)
    if not args.no_doc:
        write_doc_section(args.doc, START_MARK, END_MARK, section, "# Benchmarks\n", revision=revision)
        print(f"updated {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
