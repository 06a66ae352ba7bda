"""What the Prometheus metrics cost a reply, per 1,000 tokens: metrics on vs off,
alternated in one run.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/metrics_cost.py [--replies 2000] [--tokens 1000]

In this process (no server, no network, no database), real
:class:`~conversations.realtime.replies.Reply` objects run their whole life:
fitting the prompt, streaming ``--tokens`` pieces from an in-memory provider
(no sleeps) through ``_on_piece`` and ``_flush`` into a subscriber that drops
the frames, and finishing (the terminal save is replaced by a no-op, so what is
timed is the app's own code). ``--replies`` replies of each mode alternate
``CHATSITE_METRICS`` on and off, so the machine's drift falls on both alike;
each reply is timed in CPU time of this thread (``time.thread_time``: the
machine's other work does not count) from ``start()`` to the end of its task,
and the modes alternate reply by reply. The reply-end log line runs in both (at INFO, into a handler that
drops it), since it is not a metric; a separate figure gives its own cost.

What the metrics add is the difference of the medians, per reply and per 1,000
tokens (they count per reply, never per token, so the per-token figure shrinks
as replies grow). The same run also times the hooks alone (a reply's
``reply_started`` + ``reply_ended``, and a stop's ``stop_closed``) in a tight loop.

Results are printed and written between ``<!-- metrics-cost:start -->`` and
``<!-- metrics-cost:end -->`` in ``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ROOT,
    add_allow_dirty_argument,
    check_tree_for_doc,
    git_revision,
    loadavg,
    machine_info,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- metrics-cost:start -->"
END_MARK = "<!-- metrics-cost:end -->"


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("CHATSITE_DATA_DIR", tempfile.mkdtemp(prefix="chatsite-metrics-cost-"))
    os.environ["CHATSITE_LOCAL_MODEL"] = "off"
    import django

    django.setup()


class _Host:
    window = 0.03

    def flush_later(self, reply, when: float) -> None:  # the grid is not what is measured
        reply._flush_due = False

    def discard(self, reply) -> None:
        pass


class _Drop:
    def deliver(self, frame: str) -> None:
        pass

    def reply_ended(self, reply_id: str) -> None:
        pass


class _NoSave:
    async def submit(self, item):
        return None


def provider(tokens: int):
    from conversations.providers.base import BaseProvider

    class InMemory(BaseProvider):
        async def list_models(self):
            return []

        async def stream(self, *, model, messages, result, **options):
            piece = "word "
            for _ in range(tokens):
                yield piece
            result.finish_reason = "stop"
            result.prompt_tokens = 12
            result.completion_tokens = tokens

    return InMemory("bench", {})


async def one_reply(backend, tokens: int) -> float:
    from conversations.prompt import ChatMessage
    from conversations.realtime.replies import Reply

    reply = Reply(
        registry=_Host(),
        reply_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        user_id=1,
        provider=backend,
        model="in-memory",
        prompt=[ChatMessage("user", "hello")],
    )
    reply.subscribers.append(_Drop())  # type: ignore[arg-type]
    began = time.thread_time()
    reply.start()
    assert reply.task is not None
    await reply.task
    took = time.thread_time() - began
    assert reply.status == "complete" and reply.result.completion_tokens == tokens
    return took


def hooks_alone(n: int) -> tuple[float, float]:
    """Seconds per reply of the hooks a reply calls (start + end), and per stop."""
    from conversations import metrics

    began = time.thread_time()
    for _ in range(n):
        metrics.reply_started(provider="bench", model="in-memory")
        metrics.reply_ended(
            provider="bench",
            model="in-memory",
            status="complete",
            error_kind="",
            ttft_ms=12.0,
            tokens_per_s=80.0,
            prompt=12,
            completion=1000,
        )
    per_reply = (time.thread_time() - began) / n
    began = time.thread_time()
    for _ in range(n):
        metrics.stop_closed(seconds=0.002)
    return per_reply, (time.thread_time() - began) / n


async def run(args: argparse.Namespace) -> dict:
    from django.conf import settings

    from conversations.realtime import replies

    replies.finishes = _NoSave()  # type: ignore[assignment]
    settings.CHATSITE_CHECKPOINT_INTERVAL = 3600
    quiet = logging.getLogger("conversations.realtime.replies")
    quiet.handlers[:] = [logging.NullHandler()]
    quiet.propagate = False
    quiet.setLevel(logging.INFO)
    backend = provider(args.tokens)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(3):  # warm up both
        for mode in (True, False):
            settings.CHATSITE_METRICS = mode
            await one_reply(backend, args.tokens)
    deadline = time.monotonic() + args.time_limit
    for i in range(args.replies):
        for mode in (True, False) if i % 2 == 0 else (False, True):
            settings.CHATSITE_METRICS = mode
            times[mode].append(await one_reply(backend, args.tokens))
        if time.monotonic() > deadline:
            break
    settings.CHATSITE_METRICS = True
    per_reply, per_stop = hooks_alone(20_000)
    settings.CHATSITE_METRICS = False
    off_reply, _ = hooks_alone(20_000)
    # The log line alone: the reply-end line logged vs its logger disabled.
    settings.CHATSITE_METRICS = False
    no_log: list[float] = []
    with_log: list[float] = []
    for i in range(args.replies // 2):
        # ``disabled``, not setLevel: a level change empties every logger's cache.
        for off in (True, False) if i % 2 == 0 else (False, True):
            quiet.disabled = off
            (no_log if off else with_log).append(await one_reply(backend, args.tokens))
    quiet.disabled = False
    # The line alone, as a finished reply logs it.
    from conversations.prompt import ChatMessage
    from conversations.realtime.replies import Reply

    done = Reply(
        registry=_Host(),
        reply_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        user_id=1,
        provider=backend,
        model="in-memory",
        prompt=[ChatMessage("user", "hello")],
    )
    began = time.thread_time()
    for _ in range(20_000):
        done._log_end("complete", "", "stop", 12.3, 456.7, 80.1, 12, 1000, False)
    line_alone = (time.thread_time() - began) / 20_000
    return {
        "line_alone": line_alone,
        "on": times[True],
        "off": times[False],
        "hooks_on": per_reply,
        "hooks_off": off_reply,
        "stop_hook": per_stop,
        "log_on": with_log,
        "log_off": no_log,
    }


def report(results: dict, args: argparse.Namespace, command: str) -> str:
    info = machine_info()
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    per_k = 1000 / args.tokens
    added = on - off
    log_added = statistics.median(results["log_on"]) - statistics.median(results["log_off"])
    us = 1e6

    def row(label: str, seconds: float, places: int = 1, signed: bool = False) -> str:
        sign = "+" if signed else ""
        return f"| {label} | {seconds * us:{sign}.{places}f} | {seconds * us * per_k:{sign}.{places}f} |"

    lines = [
        "## Metrics: what they cost a reply",
        "",
        f"- Date: {info['date']}; commit {git_revision()}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['client_python']}; "
        f"load average (1/5/15 min) {loadavg()}",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Microseconds of CPU time (this thread). {len(results['on'])} + {len(results['off'])} in-process "
        f"replies of {args.tokens} tokens each (prompt fitted, every token through `_on_piece` and "
        "`_flush`, the finish; no network, the terminal save a no-op), `CHATSITE_METRICS` on and off "
        "alternated reply by reply; medians. The metrics count at a reply's start and end, never per "
        "token: per 1,000 tokens is the per-reply figure spread over the reply's tokens.",
        "",
        "| figure | per reply | per 1,000 tokens |",
        "|---|--:|--:|",
        row("whole reply, metrics off", off, 0),
        row("whole reply, metrics on", on, 0),
        row("**what the metrics add** (on minus off, medians)", added, 1, True),
        row("the hooks alone, on (a reply's start and end, in a loop)", results["hooks_on"]),
        row("the hooks alone, off", results["hooks_off"], 2),
        f"| a stop's latency sample (`stop_closed`), in a loop | {results['stop_hook'] * us:.1f} | |",
        row("the reply-end log line (logged minus not, metrics off, medians)", log_added, 1, True),
        row("the reply-end log line alone, in a loop", results["line_alone"]),
        "",
        "The difference of two medians of whole replies carries the run's noise (tens of "
        "microseconds on a shared machine); the loops give the hooks' and the line's own cost.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=2000, help="replies per mode (default 2000)")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per reply (default 1000)")
    parser.add_argument("--time-limit", type=float, default=100.0, help="stop alternating after this (s)")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    revision = check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    django_setup()
    results = asyncio.run(run(args))
    command = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/metrics_cost.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    section = report(results, args, command.replace(" --no-doc", ""))
    print(section)
    if not args.no_doc:
        write_doc_section(DOC, START_MARK, END_MARK, section, "# Benchmarks\n", revision=revision)


if __name__ == "__main__":
    main()
