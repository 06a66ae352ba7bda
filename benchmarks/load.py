# ruff: noqa: E501, RUF001 - the report is markdown: long table lines, and "x" written as the times sign
"""Many chats at once, through the path a browser uses, against a direct client at the same concurrency.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py             # everything, ~10 min
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py --quick --only burst,onesocket,stop  # ~2 min, no doc
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py --only burst --burst 200

Processes (all on 127.0.0.1): the fake upstream (its own process, with its
per-request token times over a pipe); chatsite under daphne, served through
``benchmarks.instrumented_asgi`` (the real app plus a database-write counter,
an event-loop lag probe and ``/__bench__/stats``), with a fresh SQLite
database and ``DJANGO_DEBUG=0`` as in production; ``--client-procs``
WebSocket client processes (default 2) that each take every other chat, so that no
single Python process reading hundreds of sockets becomes the bottleneck; as
many direct client processes as the concurrency needs; and a ping prober.
This process only orchestrates and samples ``/proc`` (CPU, RSS) 10 times a
second; it does no client work while a phase runs.

A *phase* is: C chats, chat i started at ``t0 + i * spread / C`` (default
spread 2 s), each ``fake?tokens=T&rate=R`` (default T=100, R=20 tokens/s):

* **app**: one logged-in WebSocket per chat (like one browser tab each), or
  one for all of them (``onesocket``), opened before t0; at its start time the
  chat sends a ``send`` frame (new conversation) and reads until
  ``reply_finished`` (a chat to stop sends ``stop`` at its stop time);
* **direct**: the same chats with httpx + httpx-sse straight to the fake (one
  ``AsyncClient`` per client process, as the app has one), over as many
  client processes as keep it unsaturated.

For each phase it reports completed chats (and every failure by kind), time
to first token, gaps between frames and between text arrivals seen by the
clients against the upstream's own gaps in the same phase (no per-token gap:
coalesced tokens would count as gaps of 0 ms), per-token relay delay (client
arrival - the fake's write time), CPU seconds per 1,000 tokens of each process
over the whole phase (first send to last end; the steady window for
reference), whether each client was saturated, database writes per reply,
RSS, event-loop lag (in-process probe, and a ``ping`` round trip from a prober
process), frame order, and whether every saved reply equals what its client
saw (read back from the database). Sections:

* ``burst``: C in ``--burst`` (default 200 and 500), T=``--tokens``, a socket per chat;
* ``onesocket``: C in ``--one-socket`` (500) chats all started on ONE socket,
  against a socket per chat and the direct client;
* ``stop``: ``--stops`` (50) of ``--stop-streams`` (500) streaming chats stopped:
  stop sent -> upstream closed, tokens written after the stop was sent and after
  the close was noticed;
* ``thousand``: ``--thousand`` (1000) chats started within ``--thousand-spread`` (4) s;
* ``cpu``: ``--cpu-streams`` (200) streams of ``--cpu-tokens`` (200, i.e. 10 s)
  tokens, for a long phase;
* ``memory``: two fresh daphne processes: RSS idle, with 500 and 1000 idle
  logged-in sockets; and with 200 sockets before / during 200 streaming replies;
* ``sweep``: C in ``--sweep`` (50, 200, 500, 1000), T=``--tokens``; points that
  ``burst`` already ran are reused. Plots go to ``docs/benchmarks/``.
* ``--profile``: one more app phase like ``cpu`` with ``py-spy record
  --nonblocking`` attached to daphne (needs ``py-spy`` in the venv); the top
  functions go into the report.

The direct client runs in one process per ``--direct-chats-per-proc`` (100)
chats (``--direct-procs auto``), so that it stays a floor; a saturated client
is said so in every table.

Results are printed and written between ``<!-- load:start -->`` and
``<!-- load:end -->`` in ``docs/benchmarks.md`` (other sections are kept; ``--doc-section
NAME`` writes between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` instead).
Every process started is stopped on exit, error, timeout or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks._harness import (
    ROOT,
    ChatApp,
    FakeUpstreamProcess,
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
    proc_rss_kib,
    python,
    write_doc_section,
)
from benchmarks.metrics import (
    SATURATED_CORE_SHARE,
    SATURATED_LOOP_LAG_P99_MS,
    SATURATED_MACHINE_BUSY,
    all_gaps,
    bracket,
    gap_ratio,
    phase_bounds,
    procs_for,
    saturation,
    seq_faults,
    stop_indices,
    text_check,
    tokens_after,
)

DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"
DOC_INTRO = "# Benchmarks\n\nSee `benchmarks/README.md` for how to run the suite.\n"
APP_MODULE = "benchmarks.instrumented_asgi:application"
STATS_PATH = "/__bench__/stats"

# The targets of issue #14 (docs/benchmarks.md names each where it is reported).
#: time to first token added (app - direct), p95, ms: chats each on their own socket / all on one socket
TARGET_TTFT_ADDED_P95_MS = 30.0
TARGET_TTFT_ADDED_P95_ONE_SOCKET_MS = 100.0
#: the clients' gap p99 over the upstream's own gap p99, by concurrency (up to C chats)
TARGET_GAP_RATIO = ((200, 1.15), (500, 1.5))
#: the app's CPU s per 1,000 tokens over the whole phase (starts and ends included)
TARGET_CPU_PER_1K = 0.10
#: the 1,000-chat phase: every chat completes, and the server's event loop lag p99 (ms)
TARGET_LOOP_LAG_P99_MS = 50.0
#: Stop under load: stop sent -> upstream closed, median / p99 (ms); tokens after the close noticed
TARGET_STOP_MEDIAN_MS = 2.0
TARGET_STOP_P99_MS = 10.0
#: A ping every this many seconds on the prober's socket during an app phase.
PROBE_INTERVAL = 0.020
#: Most client processes a direct phase is split over (--direct-procs auto).
DIRECT_PROCS_MAX = 16

#: Run by ``manage.py shell`` after an app phase: the replies as saved, one JSON line each.
SAVED_SCRIPT = """
import json
from conversations.models import Message
ids = json.load(open(IDS_PATH))
for i in range(0, len(ids), 500):
    for row in Message.objects.filter(pk__in=ids[i : i + 500]).values("id", "status", "content"):
        print("ROW=" + json.dumps({"id": str(row["id"]), "status": row["status"], "content": row["content"]}))
"""


def gap_ratio_target(streams: int) -> float | None:
    """The issue's inter-token target at ``streams`` chats (None above the largest one)."""
    return next((ratio for upto, ratio in TARGET_GAP_RATIO if streams <= upto), None)


# ==========================================================================
# The client process (``python -m benchmarks.load --worker``)
#
# JSON lines on stdin, one JSON line answered on stdout per request.


async def _sleep_until(at: float) -> None:
    delay = at - now()
    if delay > 0:
        await asyncio.sleep(delay)


def _expected_text(tokens: int) -> str:
    return "".join(f"w{i} " for i in range(tokens))


def _kind(exc: BaseException) -> str:
    name = type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{name}:{status}" if status else name


PG_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _pg_admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def merge_stats(each: list[dict]) -> dict:
    """Several processes' ``/__bench__/stats``: counters summed, loop lag of the worst process."""
    if len(each) == 1:
        return each[0]
    db: dict[str, Any] = {
        "writes": 0,
        "statements": Counter(),
        "transactions": 0,
        "queries": 0,
        "verbs": Counter(),
    }
    for one in each:
        d = one["db"]
        db["writes"] += d["writes"]
        db["transactions"] += d["transactions"]
        db["queries"] += d["queries"]
        db["statements"].update(d["statements"])
        db["verbs"].update(d["verbs"])
    db["statements"], db["verbs"] = dict(db["statements"]), dict(db["verbs"])
    lags = [one["loop_lag"] for one in each]
    worst = {
        key: max((lag.get(key) for lag in lags if lag.get(key) is not None), default=None)
        for key in ("p50_ms", "p99_ms", "max_ms", "window_p50_ms", "window_p99_ms", "window_max_ms")
    }
    return {
        "pid": [one["pid"] for one in each],
        "db": db,
        "loop_lag": {"n": sum(lag["n"] for lag in lags), **worst},
    }


class _LoopLag:
    """How late a 10 ms sleep wakes up on this client process's loop (is the client itself behind?)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = now()
            await asyncio.sleep(0.010)
            self.lags.append(now() - before - 0.010)

    def __enter__(self) -> _LoopLag:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.task is not None:
            self.task.cancel()

    def p99_ms(self) -> float | None:
        return Stats.of(self.lags).p99 * 1000 if self.lags else None


def _new_chat_state(chat: dict) -> dict[str, Any]:
    return {
        "key": chat["key"],
        "client_id": "c-" + chat["key"],
        "sent": None,
        "ack": None,
        "started": None,
        "finished": None,
        "status": None,
        "err": None,
        "conversation": None,
        "reply": None,
        "stop_sent": None,
        "deltas_after_stop": 0,
        "times": [],  # arrival of each delta that carried text
        "counts": [],  # tokens in each of those
        "frame_times": [],  # arrival of every frame of the reply's stream (delta, reasoning_delta)
        "seqs": [],
        "texts": [],
    }


class ClientWorker:
    def __init__(self) -> None:
        self.sockets: list[Any] = []
        self.probe_task: asyncio.Task | None = None
        self.probe_samples: list[tuple[float, float]] = []
        self.probe_ws: Any = None

    async def open(self, n: int, ws_urls: list[str], cookies: list[str], concurrency: int = 20) -> dict:
        """Have exactly ``n`` logged-in sockets open; socket j logs in with ``cookies[j]`` at ``ws_urls[j]``."""
        while len(self.sockets) > n:
            ws = self.sockets.pop()
            with contextlib.suppress(Exception):
                await ws.close()
        errors: Counter[str] = Counter()
        gate = asyncio.Semaphore(concurrency)
        started = now()

        async def one(cookie: str, ws_url: str) -> Any:
            async with gate:
                try:
                    return await _connect(ws_url, cookie)
                except Exception as exc:
                    errors[_kind(exc)] += 1
                    return None

        opened = await asyncio.gather(*(one(cookies[j], ws_urls[j]) for j in range(len(self.sockets), n)))
        self.sockets.extend(ws for ws in opened if ws is not None)
        return {"open": len(self.sockets), "errors": dict(errors), "seconds": now() - started}

    async def close(self) -> dict:
        sockets, self.sockets = self.sockets, []
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return {"open": 0}

    # --- the app's path ------------------------------------------------------------
    async def app_chats(self, chats: list[dict], deadline: float, one_socket: bool = False) -> dict:
        """Run ``chats`` through the app: each on its own socket, or all of them on the first one."""
        with _LoopLag() as lag:
            if one_socket:
                if not self.sockets:
                    raise RuntimeError("no socket open")
                results = await self._socket_chats(self.sockets[0], chats, deadline)
            else:
                if len(chats) > len(self.sockets):
                    raise RuntimeError(f"{len(chats)} chats but {len(self.sockets)} sockets")
                each = await asyncio.gather(
                    *(
                        self._socket_chats(ws, [c], deadline)
                        for ws, c in zip(self.sockets, chats, strict=False)
                    )
                )
                results = [r for chat_results in each for r in chat_results]
        return {"chats": results, "loop_lag_p99_ms": lag.p99_ms()}

    async def _socket_chats(self, ws: Any, chats: list[dict], deadline: float) -> list[dict]:
        """Start ``chats`` on one socket at their times and read their frames until each has ended.

        Frames are matched to chats as a multiplexing client must: ``ack`` by
        ``client_id`` (it names the conversation), ``reply_started`` by
        conversation (it names the reply), the stream by reply; a frame that
        comes before the one naming its chat waits for it.
        """
        from websockets.exceptions import ConnectionClosed

        states = [_new_chat_state(c) for c in chats]
        by_client = {s["client_id"]: s for s in states}
        by_conversation: dict[str, dict] = {}
        by_reply: dict[str, dict] = {}
        early: dict[str, list[tuple[float, dict]]] = {}  # conversation or reply id -> frames that came first
        expected = {c["key"]: c for c in chats}
        left = len(states)
        all_done = asyncio.Event()
        reply_known: dict[str, asyncio.Event] = {s["key"]: asyncio.Event() for s in states}

        def end(state: dict, err: str | None) -> None:
            nonlocal left
            if state["status"] is None:
                state["status"] = "refused" if err else "?"
            if err is not None and state["err"] is None:
                state["err"] = err
            if not state.get("_ended"):
                state["_ended"] = True
                left -= 1
                if left == 0:
                    all_done.set()

        def dispatch(at: float, frame: dict) -> None:
            kind = frame.get("type")
            if kind == "ack":
                state = by_client.get(frame.get("client_id", ""))
                if state is None:
                    return
                state["ack"] = at
                state["conversation"] = frame["conversation"]
                by_conversation[frame["conversation"]] = state
                for held in early.pop(frame["conversation"], []):
                    dispatch(*held)
            elif kind == "reply_started":
                state = by_conversation.get(frame["conversation"])
                if state is None:
                    early.setdefault(frame["conversation"], []).append((at, frame))
                    return
                state["started"] = at
                state["reply"] = frame["reply"]
                by_reply[frame["reply"]] = state
                reply_known[state["key"]].set()
                for held in early.pop(frame["reply"], []):
                    dispatch(*held)
            elif kind in ("delta", "reasoning_delta", "reply_finished"):
                state = by_reply.get(frame["reply"])
                if state is None:
                    early.setdefault(frame["reply"], []).append((at, frame))
                    return
                if kind == "reply_finished":
                    state["finished"] = at
                    state["status"] = frame["status"]
                    err = None
                    if frame["status"] not in ("complete", "stopped"):
                        err = f"{frame['status']}:{frame.get('error_kind') or '-'}"
                    elif frame["status"] == "stopped" and state["stop_sent"] is None:
                        err = "stopped_unasked"
                    end(state, err)
                    return
                state["frame_times"].append(at)
                state["seqs"].append(frame["seq"])
                if state["stop_sent"] is not None:
                    state["deltas_after_stop"] += 1
                if kind == "delta" and frame["text"]:
                    state["times"].append(at)
                    state["texts"].append(frame["text"])
                    state["counts"].append(frame["text"].count(" "))
            elif kind == "error":
                state = by_client.get(frame.get("ref") or "")
                if state is not None:
                    end(state, f"error_frame:{frame.get('code')}")
            # other frames (pong, conversation_updated, later additions) are not a chat's

        async def reader() -> None:
            while True:
                raw = await ws.recv()
                at = now()
                dispatch(at, json.loads(raw))

        async def start(chat: dict, state: dict) -> None:
            frame = json.dumps(
                {
                    "type": "send",
                    "client_id": state["client_id"],
                    "conversation": None,
                    "text": "Hello there",
                    "model": "openai/" + chat["model"],
                }
            )
            await _sleep_until(chat["at"])
            state["sent"] = now()
            await ws.send(frame)
            if chat.get("stop_at") is not None:
                await reply_known[state["key"]].wait()
                await _sleep_until(chat["stop_at"])
                if state["finished"] is None:
                    stop = json.dumps({"type": "stop", "reply": state["reply"]})
                    state["stop_sent"] = now()
                    await ws.send(stop)

        loop = asyncio.get_running_loop()
        reading = asyncio.create_task(reader())
        starting = [asyncio.create_task(start(c, s)) for c, s in zip(chats, states, strict=True)]
        failure = None
        try:
            async with asyncio.timeout_at(loop.time() + max(deadline - now(), 0.001)):
                waiting = asyncio.create_task(all_done.wait())
                done, _ = await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if reading in done:
                    reading.result()  # raises what ended the reads
        except TimeoutError:
            failure = "client_timeout"
        except ConnectionClosed:
            failure = "socket_closed"
        except Exception as exc:
            failure = _kind(exc)
        finally:
            reading.cancel()
            for task in starting:
                task.cancel()
            await asyncio.gather(reading, *starting, return_exceptions=True)
        results = []
        for state in states:
            if not state.get("_ended"):
                state["err"] = state["err"] or failure or "no_end"
            state.pop("_ended", None)
            texts = state.pop("texts")
            state["text"] = "".join(texts)
            state["tokens"] = sum(state["counts"])
            full = _expected_text(expected[state["key"]]["tokens"])
            if state["err"] is None:
                if state["status"] == "stopped":
                    if not full.startswith(state["text"]):
                        state["err"] = "text_mismatch"
                elif state["text"] != full:
                    state["err"] = (
                        "text_mismatch"
                        if state["tokens"] == expected[state["key"]]["tokens"]
                        else "short_reply"
                    )
            results.append(state)
        return results

    # --- the direct client ----------------------------------------------------------
    async def direct_chats(self, chats: list[dict], deadline: float, base_url: str) -> dict:
        import httpx

        limits = httpx.Limits(max_connections=4000, max_keepalive_connections=4000)
        with _LoopLag() as lag:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits, trust_env=False) as http:
                results = list(
                    await asyncio.gather(*(self._direct_chat(http, base_url, c, deadline) for c in chats))
                )
        return {"chats": results, "loop_lag_p99_ms": lag.p99_ms()}

    async def _direct_chat(self, http: Any, base_url: str, chat: dict, deadline: float) -> dict:
        from httpx_sse import EventSource

        body = {
            "model": chat["model"],
            "messages": [{"role": "user", "content": "Hello there"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        out: dict[str, Any] = {"key": chat["key"], "sent": None, "finished": None, "stop_sent": None}
        times: list[float] = []
        frame_times: list[float] = []
        texts: list[str] = []
        done = False
        err = None
        stopped = False
        await _sleep_until(chat["at"])

        async def read() -> None:
            nonlocal done
            async with http.stream(
                "POST", base_url + "/chat/completions", json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"http_{response.status_code}")
                async for event in EventSource(response).aiter_sse():
                    at = now()
                    if event.data == "[DONE]":
                        done = True
                        continue
                    choices = json.loads(event.data).get("choices") or []
                    if choices:
                        frame_times.append(at)  # an event of the stream (not the usage or [DONE])
                        content = (choices[0].get("delta") or {}).get("content")
                        if content:
                            times.append(at)
                            texts.append(content)

        try:
            loop = asyncio.get_running_loop()
            out["sent"] = now()
            async with asyncio.timeout_at(loop.time() + max(deadline - now(), 0.001)):
                reading = asyncio.create_task(read())
                if chat.get("stop_at") is not None:
                    # Stop as a client does: stop reading and close the stream (the task is cancelled).
                    await asyncio.wait({reading}, timeout=max(chat["stop_at"] - now(), 0))
                    if not reading.done():
                        out["stop_sent"] = now()
                        reading.cancel()
                        stopped = True
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
                if stopped and not reading.cancelled():
                    stopped = False  # it ended on its own first
            out["finished"] = now()
        except TimeoutError:
            err = "client_timeout"
        except Exception as exc:
            err = str(exc) if str(exc).startswith("http_") else _kind(exc)
        text = "".join(texts)
        full = _expected_text(chat["tokens"])
        if err is None and not done and not stopped:
            err = "no_done"
        if err is None and (not full.startswith(text) if stopped else text != full):
            err = "text_mismatch"
        out.update(
            err=err,
            status="stopped" if stopped else "complete",
            times=times,
            frame_times=frame_times,
            counts=[1] * len(times),
            tokens=len(times),
            text=text,
        )
        return out

    # --- the ping prober ----------------------------------------------------------------
    async def probe_start(self, ws_url: str, cookie: str, interval: float) -> dict:
        """Ping the app every ``interval`` s on a socket of its own; each pong's round trip is kept."""
        await self.probe_stop()
        self.probe_ws = await _connect(ws_url, cookie)
        self.probe_samples = []
        ws = self.probe_ws

        async def run() -> None:
            ping = json.dumps({"type": "ping"})
            while True:
                sent = now()
                await ws.send(ping)
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass
                self.probe_samples.append((sent, now() - sent))
                await _sleep_until(sent + interval)

        self.probe_task = asyncio.create_task(run())
        return {"started": now()}

    async def probe_stop(self) -> dict:
        """Stop pinging; the (sent at, round trip) of every ping answered."""
        if self.probe_task is not None:
            self.probe_task.cancel()
            await asyncio.gather(self.probe_task, return_exceptions=True)
            self.probe_task = None
        if self.probe_ws is not None:
            with contextlib.suppress(Exception):
                await self.probe_ws.close()
            self.probe_ws = None
        samples, self.probe_samples = self.probe_samples, []
        return {"samples": samples}


async def _connect(ws_url: str, cookie: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    return await connect(
        ws_url,
        # The page of the process it connects to: the socket's own origin
        # (another process's origin is refused). One client process may
        # be handed only the second process's sockets, so this is decided
        # per socket, never from the list as a whole.
        origin=Origin("http" + ws_url[2:].split("/ws/")[0]),
        additional_headers={"Cookie": cookie},
        open_timeout=30,
        ping_interval=None,  # browsers do not ping
        max_size=2**22,
        proxy=None,
    )


async def _worker_loop() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    worker = ClientWorker()
    out.write(json.dumps({"ready": os.getpid()}).encode() + b"\n")
    out.flush()
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            request = json.loads(line)
            op = request.pop("op")
            try:
                if op == "quit":
                    break
                if op == "open":
                    result: Any = await worker.open(**request)
                elif op == "close":
                    result = await worker.close()
                elif op == "app":
                    result = await worker.app_chats(
                        request["chats"], request["deadline"], bool(request.get("one_socket"))
                    )
                elif op == "direct":
                    result = await worker.direct_chats(
                        request["chats"], request["deadline"], request["base_url"]
                    )
                elif op == "probe_start":
                    result = await worker.probe_start(**request)
                elif op == "probe_stop":
                    result = await worker.probe_stop()
                else:
                    raise ValueError(f"unknown op {op!r}")
                answer = {"result": result}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer).encode() + b"\n")
            out.flush()
    finally:
        await worker.probe_stop()
        await worker.close()


# ==========================================================================
# The orchestrating process


class WorkerProc:
    """One client process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stdin, self.stdout = child_pipes(proc)

    @classmethod
    async def start(cls, log_path: Path) -> WorkerProc:
        log = open(log_path, "ab")  # noqa: ASYNC230 - before any timing; handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                python(),
                "-m",
                "benchmarks.load",
                "--worker",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=256 * 1024 * 1024,
            )
        finally:
            log.close()
        worker = cls(proc)
        try:
            async with asyncio.timeout(30):
                ready = json.loads(await worker.stdout.readline())
            assert ready["ready"] == proc.pid
        except BaseException:
            await worker.stop()
            raise RuntimeError(f"a client process did not start (see {log_path})") from None
        return worker

    async def call(self, timeout: float, **request: Any) -> Any:
        async with asyncio.timeout(timeout):
            self.stdin.write(json.dumps(request).encode() + b"\n")
            await self.stdin.drain()
            line = await self.stdout.readline()
        if not line:
            raise RuntimeError("a client process went away")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client process: {answer['error']}")
        return answer["result"]

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                self.stdin.write(b'{"op": "quit"}\n')
                await self.stdin.drain()
                await self.proc.wait()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # role -> process CPU seconds
    rss: int  # daphne KiB
    busy: float  # machine busy CPU seconds
    total: float  # machine CPU seconds


@dataclass
class Phase:
    label: str
    mode: str  # "app" | "direct"
    streams: int
    tokens: int
    rate: float
    spread: float
    t0: float
    chats: list[dict]
    records: dict[str, dict]
    samples: list[Sample]
    stats: dict | None = None  # the app's /__bench__/stats, read after the phase
    open_info: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    one_socket: bool = False  # app: every chat on one socket (else a socket per chat)
    client_roles: list[str] = field(default_factory=list)  # the client processes that ran it
    client_lags: list[float] = field(default_factory=list)  # their own loop lag p99 (ms)
    probe: list[tuple[float, float]] = field(default_factory=list)  # (ping sent at, round trip s)
    saved: dict | None = None  # app: the saved replies checked against what the clients saw


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pg_database = ""
        self.shared_services: dict[str, str] = {}
        self.fake: FakeUpstreamProcess | None = None
        self.app: ChatApp | None = None
        self.workers: list[WorkerProc] = []
        self.prober: WorkerProc | None = None
        self.http: Any = None
        self.deadline = now() + args.time_limit

    # --- processes -------------------------------------------------------------
    def app_env(self) -> dict[str, str]:
        assert self.fake is not None
        return {
            "OPENAI_BASE_URL": self.fake.openai_base_url,
            "OPENAI_MODELS": "fake",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CHATSITE_LOG_LEVEL": "WARNING",
            # One socket carries every chat of the one-socket phase, as one user: the
            # per-user limits are raised past that phase's chats (not switched off, so
            # that every send is still checked against them, as in production).
            "CHATSITE_MAX_CONCURRENT_REPLIES": str(max(self.args.one_socket, default=0) + 100),
            "CHATSITE_MAX_MESSAGES_PER_MINUTE": "1000000",
            **self.shared_services,
            **dict(kv.split("=", 1) for kv in self.args.app_env),
        }

    async def start_app(self, users: int) -> ChatApp:
        app = ChatApp(self.app_env(), application=APP_MODULE, users=users, processes=self.args.processes)
        try:
            await asyncio.to_thread(app.start)
        except BaseException:
            await asyncio.to_thread(app.stop)
            raise
        return app

    def direct_procs(self, streams: int) -> int:
        """Client processes for a direct phase of ``streams`` chats (``--direct-procs``)."""
        args = self.args
        if args.direct_procs == "search":  # (pair() searches; this is where the search starts)
            return args.client_procs
        if args.direct_procs != "auto":
            return int(args.direct_procs)
        return procs_for(
            streams, per_process=args.direct_chats_per_proc, least=args.client_procs, most=DIRECT_PROCS_MAX
        )

    def planned_streams(self) -> list[int]:
        args = self.args
        planned = [20]
        if "burst" in args.only:
            planned += args.burst
        if "cpu" in args.only:
            planned.append(args.cpu_streams)
        if "sweep" in args.only:
            planned += args.sweep
        if "onesocket" in args.only:
            planned += args.one_socket
        if "stop" in args.only:
            planned.append(args.stop_streams)
        if "thousand" in args.only:
            planned.append(args.thousand)
        return planned

    async def start(self) -> None:
        import httpx

        self.http = httpx.AsyncClient(timeout=30, trust_env=False)
        if self.args.processes > 1:
            # Several processes: the documented deployment, PostgreSQL and Redis.
            self.pg_database = f"chatsite_bench_{os.getpid()}"
            await asyncio.to_thread(_pg_admin, f'CREATE DATABASE "{self.pg_database}"')
            self.shared_services = {
                "DATABASE_URL": f"{PG_SERVER}/{self.pg_database}",
                "REDIS_URL": self.args.redis_url,
            }
        self.fake = await FakeUpstreamProcess.start(self.tmp / "fake.log")
        await self.fake.check_clock()
        planned = self.planned_streams()
        # One user per chat (+1: the ping prober's socket is a user of its own).
        self.app = await self.start_app(max(planned) + 1)
        n_workers = max(self.args.client_procs, *(self.direct_procs(c) for c in planned))
        if self.args.direct_procs == "search":
            n_workers = DIRECT_PROCS_MAX
        self.workers = list(
            await asyncio.gather(*(WorkerProc.start(self.tmp / f"client{i}.log") for i in range(n_workers)))
        )
        self.prober = await WorkerProc.start(self.tmp / "prober.log")
        log(
            f"fake upstream pid {self.fake.proc.pid}; daphne pids {self.app.pids} on {self.app.urls}; "
            f"client pids {[w.pid for w in self.workers]}; prober pid {self.prober.pid}"
        )

    async def stop(self) -> None:
        for worker in [*self.workers, *([self.prober] if self.prober else [])]:
            await worker.stop()
        if self.app is not None:
            await asyncio.to_thread(self.app.stop)
            self.app = None
        if self.fake is not None:
            await self.fake.stop()
        if self.http is not None:
            await self.http.aclose()
        if self.pg_database:
            await asyncio.to_thread(_pg_admin, f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
            self.pg_database = ""

    def remaining(self) -> float:
        left = self.deadline - now()
        if left <= 0:
            raise TimeoutError(f"--time-limit {self.args.time_limit:.0f}s reached")
        return left

    # --- helpers ---------------------------------------------------------------
    async def app_stats(
        self, app: ChatApp, reset: bool = False, since: float = 0.0, until: float = math.inf
    ) -> dict:
        query = f"?reset={int(reset)}&since={since!r}&until={until!r}"
        each = []
        for url in app.urls:
            response = await self.http.get(url + STATS_PATH + query)
            response.raise_for_status()
            each.append(response.json())
        return merge_stats(each)

    async def open_sockets(self, app: ChatApp, total: int, *, one_socket: bool = False) -> list[dict]:
        """``total`` logged-in sockets over the app's client processes (one, of user 0, if ``one_socket``)."""
        k = self.args.client_procs
        workers = self.workers[:k]
        if one_socket:
            shares = [1] + [0] * (k - 1)
        else:
            shares = [total // k + (1 if i < total % k else 0) for i in range(k)]
        # Chat i runs in client process i % k, on its socket i // k, as user i: one user per chat
        # (the app limits concurrent replies per user, as a real deployment would).
        cookies = app.cookies
        infos = await asyncio.gather(
            *(
                w.call(
                    timeout=min(self.remaining(), 120 + total / 5),
                    op="open",
                    n=n,
                    # Chat i goes to daphne process i % N, as a round-robin proxy would send it.
                    ws_urls=[app.ws_urls[(j * k + w_index) % len(app.ws_urls)] for j in range(n)],
                    cookies=[cookies[(j * k + w_index) % len(cookies)] for j in range(n)],
                )
                for w_index, (w, n) in enumerate(zip(workers, shares, strict=False))
            )
        )
        opened = sum(i["open"] for i in infos)
        wanted = 1 if one_socket else total
        if opened < wanted:
            errors: Counter[str] = Counter()
            for i in infos:
                errors.update(i["errors"])
            raise RuntimeError(f"only {opened} of {wanted} sockets opened: {dict(errors)}")
        return infos

    async def close_sockets(self) -> None:
        await asyncio.gather(
            *(w.call(timeout=60, op="close") for w in self.workers[: self.args.client_procs])
        )

    def sample(self, app: ChatApp | None) -> Sample:
        if self.fake is None:
            raise RuntimeError("the fake upstream is not running: start() the bench first")
        cpu = {"fake": proc_cpu_seconds(self.fake.proc.pid)}
        for i, w in enumerate(self.workers):
            cpu[f"client{i}"] = proc_cpu_seconds(w.pid)
        if self.prober is not None:
            cpu["prober"] = proc_cpu_seconds(self.prober.pid)
        rss = 0
        if app is not None and app.procs:
            cpu["app"] = sum(proc_cpu_seconds(pid) for pid in app.pids)
            rss = sum(proc_rss_kib(pid) for pid in app.pids)
        busy, total = machine_cpu()
        return Sample(now(), cpu, rss, busy, total)

    async def saved_replies(self, app: ChatApp, replies: list[str]) -> dict[str, dict]:
        """The replies as the database has them (id -> content, status), read by the app's own code.

        Read with ``manage.py shell`` against the app's database (SQLite or
        PostgreSQL alike), after the phase; a reply still marked ``streaming``
        is read again for up to 5 s (its final save may trail its frame).
        """
        ids_path = self.tmp / "replies.json"
        ids_path.write_text(json.dumps(replies))
        script = SAVED_SCRIPT.replace("IDS_PATH", repr(str(ids_path)))
        rows: dict[str, dict] = {}
        for _ in range(6):
            out = await asyncio.to_thread(app._manage, "shell", "-c", script)
            rows = {}
            for line in out.splitlines():
                if line.startswith("ROW="):
                    row = json.loads(line[4:])
                    rows[row["id"]] = row
            if not any(r["status"] == "streaming" for r in rows.values()):
                break
            await asyncio.sleep(1)
        return rows

    # --- one phase ---------------------------------------------------------------
    async def phase(
        self,
        label: str,
        mode: str,
        streams: int,
        tokens: int,
        *,
        app: ChatApp | None = None,
        before_t0: Any = None,
        spread: float | None = None,
        one_socket: bool = False,
        stops: int = 0,
        check_saved: bool = True,
        ping: bool = True,
        direct_procs: int | None = None,
    ) -> Phase:
        """C chats started within ``spread`` s; ``stops`` of them (evenly picked) are stopped mid-stream."""
        args = self.args
        app = app or self.app
        assert self.fake is not None and app is not None and self.prober is not None
        await self.fake.reset()
        open_info: list[dict] = []
        if mode == "app":
            open_info = await self.open_sockets(app, streams, one_socket=one_socket)
            await self.app_stats(app, reset=True)
            k = 1 if one_socket else args.client_procs
        else:
            k = direct_procs or self.direct_procs(streams)
        workers = self.workers[:k]
        t0 = now() + 1.0
        spread = args.spread if spread is None else spread
        stopped = set(stop_indices(streams, stops))
        # The stops come once every chat streams: spread over the second after the last start + 1 s.
        stop_from = t0 + spread + 1.0
        shards: list[list[dict]] = [[] for _ in range(k)]
        for i in range(streams):
            key = f"{label}-{i}"
            chat = {
                "key": key,
                "model": f"fake?tokens={tokens}&rate={args.rate:g}&key={key}",
                "tokens": tokens,
                "at": t0 + i * spread / streams,
            }
            if i in stopped:
                chat["stop_at"] = stop_from + sorted(stopped).index(i) / max(1, len(stopped))
            shards[i % k].append(chat)
        duration = spread + tokens / args.rate
        deadline = t0 + duration * 2 + 20
        if deadline > self.deadline:
            raise TimeoutError(f"--time-limit {args.time_limit:.0f}s would be exceeded by phase {label}")
        extra = {"base_url": self.fake.openai_base_url} if mode == "direct" else {"one_socket": one_socket}
        probing = False
        if mode == "app" and ping:
            # The ping prober: a socket of its own (the last user), a ping every 20 ms from 0.9 s
            # before the first start (the idle round trip) to the end of the phase.
            await self.prober.call(
                timeout=30,
                op="probe_start",
                ws_url=app.ws_urls[0],
                cookie=app.cookies[-1],
                interval=PROBE_INTERVAL,
            )
            probing = True
        calls = [
            asyncio.create_task(
                w.call(timeout=deadline - now() + 30, op=mode, chats=s, deadline=deadline, **extra)
            )
            for w, s in zip(workers, shards, strict=False)
        ]
        samples = [self.sample(app)]
        if before_t0 is not None:
            before_t0(samples[0])
        pending = set(calls)
        probe: list[tuple[float, float]] = []
        try:
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.1)
                samples.append(self.sample(app))
            answers = [task.result() for task in calls]
        finally:
            for task in calls:
                task.cancel()
            if probing:
                with contextlib.suppress(Exception):
                    probe = [
                        tuple(s) for s in (await self.prober.call(timeout=30, op="probe_stop"))["samples"]
                    ]
            if mode == "app":
                with contextlib.suppress(Exception):
                    await self.close_sockets()
        chats = [chat for answer in answers for chat in answer["chats"]]
        records = {r["key"]: r for r in await self.fake.records(label + "-")}
        # The loop lag over the phase itself: from the first start to the last reply's end.
        bounds = phase_bounds(chats)
        until = bounds[1] if bounds else math.inf
        stats = await self.app_stats(app, reset=True, since=t0, until=until) if mode == "app" else None
        result = Phase(
            label,
            mode,
            streams,
            tokens,
            args.rate,
            spread,
            t0,
            chats,
            records,
            samples,
            stats,
            open_info,
            one_socket=one_socket,
            client_roles=[f"client{i}" for i in range(k)],
            client_lags=[a["loop_lag_p99_ms"] for a in answers],
            probe=probe,
        )
        if mode == "app" and check_saved:
            seen = {c["reply"]: {"text": c["text"], "status": c["status"]} for c in chats if c.get("reply")}
            result.saved = text_check(seen, await self.saved_replies(app, list(seen)))
            result.saved["no_reply"] = sum(1 for c in chats if not c.get("reply"))
        result.metrics = analyze(result)
        if mode == "app" and result.metrics["window"]:
            ws, we = result.metrics["window"]
            result.metrics["loop_lag_window"] = (await self.app_stats(app, since=ws, until=we))["loop_lag"]
        log(summary_line(result))
        await asyncio.sleep(args.cooldown)
        return result

    async def pair(
        self, label: str, streams: int, tokens: int, *, spread: float | None = None, stops: int = 0
    ) -> tuple[Phase, Phase]:
        if self.args.direct_procs == "search":
            direct = await self.search_direct(f"{label}d", streams, tokens, spread=spread, stops=stops)
        else:
            direct = await self.phase(f"{label}d", "direct", streams, tokens, spread=spread, stops=stops)
        app = await self.phase(f"{label}a", "app", streams, tokens, spread=spread, stops=stops)
        return direct, app

    async def search_direct(
        self, label: str, streams: int, tokens: int, *, spread: float | None, stops: int
    ) -> Phase:
        """The direct phase in 1, 2, 4, ... times ``--client-procs`` processes, until its relay p99
        improves by less than 10 % (or the processes run out); the phase kept is the one before that
        (it was as good with fewer processes). Every try is listed in the report."""
        tried: list[tuple[int, float, str]] = []
        best: Phase | None = None
        n = self.args.client_procs
        while True:
            phase = await self.phase(
                f"{label}{n}", "direct", streams, tokens, spread=spread, stops=stops, direct_procs=n
            )
            relay = phase.metrics["relay"].p99
            tried.append((n, relay, phase.metrics["client_saturated"]))
            if best is not None and not relay < 0.9 * best.metrics["relay"].p99:
                break
            best = phase
            if n * 2 > DIRECT_PROCS_MAX:
                break
            n *= 2
        best.metrics["direct_search"] = tried
        return best

    async def warmup(self) -> None:
        await self.phase("warm", "direct", 20, 10)
        await self.phase("warm", "app", 20, 10)

    # --- memory --------------------------------------------------------------------
    async def memory(self) -> dict:
        """Two fresh daphne processes, so that memory freed by one test is not reused by the next."""
        args = self.args
        out: dict[str, Any] = {}
        app = await self.start_app(max(args.idle_sockets))
        try:
            pid = app.pid
            await asyncio.sleep(2)
            out["idle"] = proc_rss_kib(pid)
            out["sockets"] = {}
            for n in args.idle_sockets:
                await self.open_sockets(app, n)
                await asyncio.sleep(2)
                out["sockets"][n] = proc_rss_kib(pid)
                log(f"memory: {n} idle sockets: RSS {out['sockets'][n]} KiB")
            await self.close_sockets()
        finally:
            await asyncio.to_thread(app.stop)
        app = await self.start_app(args.cpu_streams)
        try:
            pid = app.pid
            await self.phase("memwarm", "app", 10, 10, app=app, ping=False)
            await asyncio.sleep(1)
            out["stream_idle"] = proc_rss_kib(pid)
            holder: dict[str, int] = {}
            streams = args.cpu_streams
            phase = await self.phase(
                "mem",
                "app",
                streams,
                args.cpu_tokens,
                app=app,
                before_t0=lambda s: holder.setdefault("rss", s.rss),
                ping=False,
            )
            out["stream_streams"] = streams
            out["stream_sockets"] = holder["rss"]  # sockets open, nothing streaming yet
            window = phase.metrics["window"]
            in_window = [s.rss for s in phase.samples if window and window[0] <= s.t <= window[1]]
            out["stream_peak"] = max(s.rss for s in phase.samples)
            out["stream_median"] = statistics.median(in_window) if in_window else math.nan
            out["stream_completed"] = phase.metrics["completed"]
        finally:
            await asyncio.to_thread(app.stop)
        return out

    # --- profile ----------------------------------------------------------------------
    async def profile(self) -> dict:
        """An extra app phase like ``cpu`` with py-spy on daphne: once over the starts, once steady."""
        args = self.args
        spy = Path(python()).with_name("py-spy")
        if not spy.exists():
            found = shutil.which("py-spy")
            if found is None:
                raise RuntimeError("--profile needs py-spy (.venv/bin/pip install py-spy)")
            spy = Path(found)
        assert self.app is not None
        pid = self.app.pid
        streams, tokens = args.cpu_streams, args.cpu_tokens
        start_seconds = max(1, math.ceil(args.spread + 0.5))
        steady_seconds = max(1, int((tokens - 1) / args.rate - args.spread - 1.5))
        parts = {
            "start": (0.0, start_seconds, self.tmp / "profile-start.txt"),
            "steady": (args.spread + 1.0, steady_seconds, self.tmp / "profile-steady.txt"),
        }
        procs: list[subprocess.Popen] = []
        tasks: list[asyncio.Task] = []

        async def record(t0: float, offset: float, seconds: int, out: Path) -> None:
            await _sleep_until(t0 + offset)
            with open(self.tmp / "py-spy.log", "ab") as log_file:  # noqa: ASYNC230
                proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is all; it is awaited in a thread
                    [
                        str(spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--nonblocking",
                        "--threads",
                        "--rate",
                        "100",
                        "--duration",
                        str(seconds),
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
            procs.append(proc)
            await asyncio.to_thread(proc.wait, seconds + 60)

        def start_spies(sample: Sample) -> None:
            t0 = sample.t + 1.0  # phase() starts the chats 1 s after its first sample
            for offset, seconds, out in parts.values():
                tasks.append(asyncio.create_task(record(t0, offset, seconds, out)))

        try:
            phase = await self.phase("prof", "app", streams, tokens, before_t0=start_spies)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        result: dict[str, Any] = {"phase": phase.metrics, "parts": {}}
        for name, (offset, seconds, out) in parts.items():
            if not out.exists():
                raise RuntimeError(f"py-spy wrote nothing; see {self.tmp / 'py-spy.log'}")
            summary = summarize_profile(out.read_text())
            summary["offset"], summary["seconds"] = offset, seconds
            if args.write_doc:
                keep = PLOTS / f"load-profile-{name}.txt"
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out, keep)
                summary["raw_file"] = str(keep.relative_to(ROOT))
            else:
                summary["raw_file"] = str(Path(tempfile.gettempdir()) / f"chatsite-load-profile-{name}.txt")
                shutil.copyfile(out, summary["raw_file"])
            result["parts"][name] = summary
        return result


# ==========================================================================
# Analysis


def _ms(values: list[float]) -> list[float]:
    return [v * 1000.0 for v in values]


def analyze(p: Phase) -> dict:
    m: dict[str, Any] = {}
    errors: Counter[str] = Counter()
    ttft: list[float] = []
    relay: list[float] = []
    first_relay: list[float] = []
    to_ack: list[float] = []
    to_upstream: list[float] = []
    fake_late: list[float] = []
    frames = tokens = 0
    arrivals: list[float] = []
    stream_seconds: list[float] = []
    upstream_seconds: list[float] = []
    # The steady-state window: every stream has its first token and none has its last one yet
    # (as this client saw them), less half a second at each end. When the app falls behind,
    # its streams do not overlap that much and there is no window (the CPU figure is then "-").
    streaming = [c for c in p.chats if c["times"]]
    ws = max([p.t0 + p.spread, *(c["times"][0] for c in streaming)]) + 0.5
    we = min([p.t0 + (p.tokens - 1) / p.rate + 10, *(c["times"][-1] for c in streaming)]) - 0.5
    relay_window: list[float] = []
    seq_bad = 0
    stop_closed: list[float] = []
    stop_finished: list[float] = []
    after_stop: list[int] = []
    after_close: list[int] = []
    deltas_after_stop: list[int] = []
    not_closed = 0
    for chat in p.chats:
        if chat["err"]:
            errors[chat["err"]] += 1
        times, counts = chat["times"], chat["counts"]
        frames += len(chat.get("frame_times") or times)
        per_token = [t for t, n in zip(times, counts, strict=False) for _ in range(n)]
        tokens += len(per_token)
        arrivals.extend(per_token)
        seq_bad += seq_faults(chat.get("seqs") or [])
        if per_token and chat["sent"] is not None:
            ttft.append(per_token[0] - chat["sent"])
            stream_seconds.append(per_token[-1] - per_token[0])
        if chat.get("ack") is not None:
            to_ack.append(chat["ack"] - chat["sent"])
        rec = p.records.get(chat["key"])
        if rec is not None:
            written = rec["token_times"]
            if chat["sent"] is not None:
                to_upstream.append(rec["started_at"] - chat["sent"])
            relay.extend(a - w for a, w in zip(per_token, written, strict=False))
            relay_window.extend(a - w for a, w in zip(per_token, written, strict=False) if ws <= w <= we)
            if len(written) > 1:
                upstream_seconds.append(written[-1] - written[0])
            if per_token and written:
                first_relay.append(per_token[0] - written[0])
            if written:
                fake_late.extend(w - (written[0] + i / p.rate) for i, w in enumerate(written))
        if chat.get("stop_sent") is not None:
            closed = rec.get("disconnected_at") if rec else None
            if closed is None:
                not_closed += 1
            else:
                stop_closed.append(closed - chat["stop_sent"])
            if chat.get("finished") is not None:
                stop_finished.append(chat["finished"] - chat["stop_sent"])
            written = rec["token_times"] if rec else []
            after_stop.append(tokens_after(written, chat["stop_sent"]))
            after_close.append(tokens_after(written, closed))
            deltas_after_stop.append(chat.get("deltas_after_stop", 0))
    m["completed"] = sum(1 for c in p.chats if not c["err"])
    m["stopped"] = sum(1 for c in p.chats if c.get("stop_sent") is not None)
    m["errors"] = dict(errors)
    m["ttft"] = Stats.of(_ms(ttft))
    # Gaps between arrivals, per reply: of every frame of its stream, and of those that grew its text;
    # the upstream's own gaps between the tokens it wrote, in the same phase, are the yardstick.
    m["frame_gap"] = Stats.of(_ms(all_gaps(c.get("frame_times") or c["times"] for c in p.chats)))
    m["text_gap"] = Stats.of(_ms(all_gaps(c["times"] for c in p.chats)))
    m["upstream_gap"] = Stats.of(_ms(all_gaps(r["token_times"] for r in p.records.values())))
    m["frame_gap_ratio"] = gap_ratio(m["frame_gap"].p99, m["upstream_gap"].p99)
    m["text_gap_ratio"] = gap_ratio(m["text_gap"].p99, m["upstream_gap"].p99)
    m["gap"] = m["text_gap"]  # (the summary line and the profile section's name for it)
    m["relay_window"] = Stats.of(_ms(relay_window))
    m["upstream_seconds"] = statistics.mean(upstream_seconds) if upstream_seconds else math.nan
    m["relay"] = Stats.of(_ms(relay))
    m["first_relay"] = Stats.of(_ms(first_relay))
    m["to_ack"] = Stats.of(_ms(to_ack))
    m["to_upstream"] = Stats.of(_ms(to_upstream))
    m["fake_late"] = Stats.of(_ms(fake_late))
    m["tokens"] = tokens
    m["frames"] = frames
    m["frames_per_token"] = frames / tokens if tokens else math.nan
    m["stream_seconds"] = statistics.mean(stream_seconds) if stream_seconds else math.nan
    m["seq_faults"] = seq_bad
    m["stop"] = {
        "n": m["stopped"],
        "closed": Stats.of(_ms(stop_closed)),
        "finished": Stats.of(_ms(stop_finished)),
        "not_closed": not_closed,
        "after_stop": after_stop,
        "after_close": after_close,
        "deltas_after_stop": deltas_after_stop,
    }
    m["saved"] = p.saved

    samples = p.samples
    window = None
    if we - ws >= 1.0:
        a = next((s for s in samples if s.t >= ws), None)
        b = next((s for s in reversed(samples) if s.t <= we), None)
        if a is not None and b is not None and b.t - a.t >= 0.8:
            window = (a, b)
    m["window"] = (window[0].t, window[1].t) if window else None
    roles = set(p.client_roles)

    def per_1k(a: Sample, b: Sample, toks: int) -> dict[str, float]:
        out = {}
        for role in b.cpu:
            if role in a.cpu:
                out[role] = (b.cpu[role] - a.cpu[role]) / toks * 1000 if toks else math.nan
        out["clients"] = sum(v for r, v in out.items() if r in roles)
        return out

    def cpu_share(a: Sample, b: Sample) -> dict[str, float]:
        span = b.t - a.t
        out = {r: (b.cpu[r] - a.cpu[r]) / span for r in b.cpu if r in a.cpu}
        out["clients"] = sum(v for r, v in out.items() if r in roles)
        out["clients_max"] = max((v for r, v in out.items() if r in roles), default=math.nan)
        out["machine_busy"] = (b.busy - a.busy) / (b.total - a.total) if b.total > a.total else math.nan
        # CPU used by processes other than ours (the machine is shared), in cores.
        ours = sum(v for r, v in out.items() if r in ("app", "fake", "prober") or r.startswith("client"))
        ours -= out["clients"] + out["clients_max"]
        out["others"] = (b.busy - a.busy) / span - ours
        return out

    if window:
        a, b = window
        toks = sum(1 for t in arrivals if a.t <= t <= b.t)
        m["window_tokens"] = toks
        m["window_seconds"] = b.t - a.t
        m["cpu_per_1k"] = per_1k(a, b, toks)
        m["cpu_share"] = cpu_share(a, b)
    else:
        m["window_tokens"] = 0
        m["cpu_per_1k"] = {}
        m["cpu_share"] = {}
    # The whole phase: from the sample before the first send to the one after the last reply ended.
    bounds = phase_bounds(p.chats)
    whole = bracket(samples, *bounds) if bounds else None
    whole_a, whole_b = whole or (samples[0], samples[-1])
    m["whole_seconds"] = whole_b.t - whole_a.t
    m["cpu_per_1k_whole"] = per_1k(whole_a, whole_b, tokens)
    m["cpu_share_whole"] = cpu_share(whole_a, whole_b)
    m["client_saturated"] = saturation(
        core_shares=[m["cpu_share_whole"].get(r, math.nan) for r in p.client_roles],
        loop_lag_p99_ms=[lag for lag in p.client_lags if lag is not None],
        machine_busy=m["cpu_share_whole"].get("machine_busy", math.nan),
    )
    m["client_procs"] = len(p.client_roles)
    m["client_lag_p99"] = max((lag for lag in p.client_lags if lag is not None), default=math.nan)
    end = bounds[1] if bounds else math.inf
    m["ping_idle"] = Stats.of(_ms([rtt for at, rtt in p.probe if at < p.t0]))
    m["ping"] = Stats.of(_ms([rtt for at, rtt in p.probe if p.t0 <= at <= end]))
    m["rss_before"] = samples[0].rss
    m["rss_peak"] = max(s.rss for s in samples)
    if p.stats:
        db = p.stats["db"]
        replies = len(p.chats)
        # The process heartbeat (``conversations_worker``) is per process, not per reply.
        reply_writes = sum(v for k, v in db["statements"].items() if not k.endswith(" conversations_worker"))
        m["db"] = {
            "writes": reply_writes,
            "heartbeat_writes": db["writes"] - reply_writes,
            "transactions": db["transactions"],
            "queries": db["queries"],
            "statements": db["statements"],
            "writes_per_reply": reply_writes / replies if replies else math.nan,
            "queries_per_reply": db["queries"] / replies if replies else math.nan,
            "verbs": db.get("verbs", {}),
            "transactions_per_reply": db["transactions"] / replies if replies else math.nan,
        }
        m["loop_lag"] = p.stats["loop_lag"]
    return m


def summary_line(p: Phase) -> str:
    m = p.metrics
    cpu = m["cpu_per_1k_whole"]
    role = "app" if p.mode == "app" else "clients"
    saved = m.get("saved")
    return (
        f"{p.label:>10} {p.mode:6}{' 1sock' if p.one_socket else ''} C={p.streams:<4} T={p.tokens:<3} "
        f"completed {m['completed']}/{p.streams} {m['errors'] or ''} "
        f"TTFT p50/p95 {m['ttft'].median:.1f}/{m['ttft'].p95:.1f} ms, "
        f"frame gap p50/p99 {m['frame_gap'].median:.1f}/{m['frame_gap'].p99:.1f} ms "
        f"(upstream p99 {m['upstream_gap'].p99:.1f}, ratio {m['frame_gap_ratio']:.2f}), "
        f"{role} CPU/1k whole {cpu.get(role, math.nan):.3f} s, clients {cpu.get('clients', math.nan):.3f} "
        f"in {m['client_procs']} procs{' SATURATED: ' + m['client_saturated'] if m['client_saturated'] else ''}, "
        f"machine busy {m['cpu_share_whole'].get('machine_busy', math.nan):.0%}"
        + (f", ping p99 {m['ping'].p99:.1f} ms" if m["ping"].n else "")
        + (
            f", stops {m['stop']['n']}: closed p50 {m['stop']['closed'].median:.2f} ms"
            if m["stopped"]
            else ""
        )
        + (f", saved = seen {saved['equal']}/{saved['checked']}" if saved else "")
    )


#: Where a busy sample's time goes: the first category (in this order) with a marker anywhere on the stack.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database (the sync_to_async thread: ORM + SQLite)", ("thread_handler (channels/db.py",)),
    ("other worker threads", ("_worker (concurrent/futures/thread.py",)),
    ("reply logic (coalescing, frame JSON)", ("Reply._on_piece", "Reply._flush", "frame_delta", "Reply._emit")),
    ("checkpoint / finish (async side)", ("_checkpoint_loop", "Reply._finish")),
    (
        "WebSocket I/O (consumer send → channels → daphne → autobahn → Twisted, and reads)",
        ("_write_loop (conversations/realtime/consumers.py", "handle_reply (daphne/", "daphne/ws_protocol.py",
         "daphne/http_protocol.py", "autobahn/", "twisted/internet/tcp.py", "twisted/internet/abstract.py",
         "_readOrWrite (twisted/", "callWithLogger (twisted/"),
    ),
    ("upstream read (httpx → httpcore → anyio, httpx-sse, provider JSON)", ("httpx/", "httpcore/", "httpx_sse/",
     "anyio/", "sse_events (conversations", "OpenAIProvider.stream")),
    ("reply start (actions, consumer receive)", ("reply_start (conversations", "ChatConsumer.receive")),
    ("asyncio event loop itself (select, callbacks, transports)", ("asyncio/",)),
)  # fmt: skip


def categorize(frames: list[str]) -> str:
    for name, markers in CATEGORIES:
        if any(m in frame for frame in frames for m in markers):
            return name
    return "other"


def summarize_profile(raw: str, top: int = 25) -> dict:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        total += n
        # "thread (0x7f...): MainThread" -> "MainThread"
        threads[thread.rpartition(": ")[2] or thread] += n
        cats[categorize(frames)] += n
        names = [_frame_name(f) for f in frames]
        if names:
            self_counts[names[-1]] += n
        for name in set(names):
            incl[name] += n
    return {
        "samples": total,
        "threads": threads.most_common(8),
        "categories": cats.most_common(),
        "self": self_counts.most_common(top),
        "inclusive": incl.most_common(top * 2),
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``, with the package for site-packages."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif str(ROOT) in path:
        path = path.split(str(ROOT) + "/", 1)[1]
    else:
        path = Path(path).name
    return f"{func} ({path})"


# ==========================================================================
# Report


def _f(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _lag(lag: dict | None, key: str) -> str:
    value = (lag or {}).get(key)
    return "-" if value is None else f"{value:.1f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _errors(m: dict) -> str:
    return ", ".join(f"`{k}` x {v}" for k, v in sorted(m["errors"].items())) or "none"


def _ok(ok: bool | None) -> str:
    return "-" if ok is None else ("**yes**" if ok else "**no**")


def _saturation_note(m: dict) -> str:
    """How the client processes of a phase fared: the reader must know whether a baseline is a floor."""
    share = m["cpu_share_whole"]
    detail = (
        f"{m['client_procs']} process{'es' if m['client_procs'] != 1 else ''}, busiest "
        f"{_f(share.get('clients_max'), 2)} of a core, own loop lag p99 {_f(m['client_lag_p99'])} ms"
    )
    if m.get("direct_search"):
        detail += "; processes searched: " + ", ".join(
            f"{n} → relay p99 {_f(relay)} ms{' (saturated)' if sat else ''}"
            for n, relay, sat in m["direct_search"]
        )
    if m["client_saturated"]:
        return f"**saturated** ({m['client_saturated']}; {detail})"
    return f"not saturated ({detail})"


def _target_ratio(streams: int) -> tuple[str, float | None]:
    target = gap_ratio_target(streams)
    return ("-" if target is None else f"≤ {target:g}x"), target


def burst_table(direct: Phase, app: Phase, *, ttft_target: float = TARGET_TTFT_ADDED_P95_MS) -> list[str]:
    d, a = direct.metrics, app.metrics
    c = app.streams
    added50 = a["ttft"].median - d["ttft"].median
    added95 = a["ttft"].p95 - d["ttft"].p95
    ratio_label, ratio_target = _target_ratio(c)
    saved = a.get("saved") or {}
    saved_ok = bool(saved) and saved["equal"] == saved["checked"] and not saved.get("no_reply")
    cpu_app = a["cpu_per_1k_whole"].get("app", math.nan)
    sa, sd = a["cpu_share_whole"], d["cpu_share_whole"]
    lag = a.get("loop_lag") or {}
    return [
        "| figure | direct client | via the app | app vs direct | target | met |",
        "|---|--:|--:|--:|--:|:-:|",
        f"| completed | {d['completed']} of {c} | {a['completed']} of {c} | | {c} of {c} "
        f"| {_ok(a['completed'] == c)} |",
        f"| failures by kind | {_errors(d)} | {_errors(a)} | | none | |",
        f"| client processes | {_saturation_note(d)} | {_saturation_note(a)} | | not saturated | |",
        f"| time to first token p50 (ms) | {_f(d['ttft'].median)} | {_f(a['ttft'].median)} "
        f"| {added50:+.1f} | | |",
        f"| time to first token p95 (ms) | {_f(d['ttft'].p95)} | {_f(a['ttft'].p95)} | {added95:+.1f} "
        f"| ≤ +{ttft_target:.0f} | {_ok(added95 <= ttft_target)} |",
        f"| time to first token p99 / max (ms) | {_f(d['ttft'].p99)} / {_f(d['ttft'].max)} "
        f"| {_f(a['ttft'].p99)} / {_f(a['ttft'].max)} | | | |",
        f"| the upstream's own gap between tokens p50 / p99 (ms) | {_f(d['upstream_gap'].median)} / "
        f"{_f(d['upstream_gap'].p99)} | {_f(a['upstream_gap'].median)} / {_f(a['upstream_gap'].p99)} | | | |",
        f"| gap between frames p50 / p99 (ms); p99 / upstream's p99 | {_f(d['frame_gap'].median)} / "
        f"{_f(d['frame_gap'].p99)}; {_f(d['frame_gap_ratio'], 2)}x | {_f(a['frame_gap'].median)} / "
        f"{_f(a['frame_gap'].p99)}; **{_f(a['frame_gap_ratio'], 2)}x** | | {ratio_label} "
        f"| {_ok(None if ratio_target is None else a['frame_gap_ratio'] <= ratio_target)} |",
        f"| gap between text arrivals p50 / p99 (ms); p99 / upstream's p99 | {_f(d['text_gap'].median)} / "
        f"{_f(d['text_gap'].p99)}; {_f(d['text_gap_ratio'], 2)}x | {_f(a['text_gap'].median)} / "
        f"{_f(a['text_gap'].p99)}; {_f(a['text_gap_ratio'], 2)}x | | | |",
        f"| relay delay per token p50 / p99 (ms) | {_f(d['relay'].median)} / {_f(d['relay'].p99)} "
        f"| {_f(a['relay'].median)} / {_f(a['relay'].p99)} | | | |",
        f"| app: send → `ack` p50 / p95 (ms) | | {_f(a['to_ack'].median)} / {_f(a['to_ack'].p95)} | | | |",
        f"| request sent → fake has it p50 / p95 (ms) | {_f(d['to_upstream'].median)} / "
        f"{_f(d['to_upstream'].p95)} | {_f(a['to_upstream'].median)} / {_f(a['to_upstream'].p95)} | | | |",
        f"| frames per token | {_f(d['frames_per_token'], 2)} | {_f(a['frames_per_token'], 2)} | | | |",
        f"| deltas out of order (`seq` not +1) | | {a['seq_faults']} | | 0 | {_ok(a['seq_faults'] == 0)} |",
        "| saved reply = what the client saw | | "
        + (
            f"{saved['equal']} of {saved['checked']}"
            + (f" ({saved['no_reply']} chats had no reply id)" if saved.get("no_reply") else "")
            if saved
            else "-"
        )
        + f" | | all | {_ok(saved_ok if saved else None)} |",
        f"| the fake's own lateness p99 (ms) | {_f(d['fake_late'].p99)} | {_f(a['fake_late'].p99)} | | | |",
        f"| whole phase (s): first send → last reply ended | {_f(d['whole_seconds'])} "
        f"| {_f(a['whole_seconds'])} | | | |",
        f"| **app (daphne) CPU s per 1,000 tokens, whole phase** | | **{_f(cpu_app, 3)}** | "
        f"| ≤ {TARGET_CPU_PER_1K} | {_ok(cpu_app <= TARGET_CPU_PER_1K)} |",
        f"| app CPU s per 1,000 tokens, steady window only (for reference) | | "
        f"{_f(a['cpu_per_1k'].get('app'), 3)} | | | |",
        f"| client processes CPU s per 1,000 tokens, whole phase | {_f(d['cpu_per_1k_whole'].get('clients'), 3)} "
        f"| {_f(a['cpu_per_1k_whole'].get('clients'), 3)} | | | |",
        f"| fake upstream CPU s per 1,000 tokens, whole phase | {_f(d['cpu_per_1k_whole'].get('fake'), 3)} "
        f"| {_f(a['cpu_per_1k_whole'].get('fake'), 3)} | | | |",
        f"| CPU use, whole phase (cores): app / clients / fake | - / {_f(sd.get('clients'), 2)} / "
        f"{_f(sd.get('fake'), 2)} | {_f(sa.get('app'), 2)} / {_f(sa.get('clients'), 2)} / {_f(sa.get('fake'), 2)} "
        "| | | |",
        f"| machine busy, whole phase (both CPUs); other tenants (cores) | "
        f"{_f(100 * sd.get('machine_busy', math.nan), 0)} %; {_f(sd.get('others'), 2)} "
        f"| {_f(100 * sa.get('machine_busy', math.nan), 0)} %; {_f(sa.get('others'), 2)} | | | |",
        f"| daphne's loop lag, in-process probe p50 / p99 / max (ms) | | {_lag(lag, 'p50_ms')} / "
        f"{_lag(lag, 'p99_ms')} / {_lag(lag, 'max_ms')} | | | |",
        f"| coalescing window while replies were live p50 / p99 / max (ms) | | {_lag(lag, 'window_p50_ms')} / "
        f"{_lag(lag, 'window_p99_ms')} / {_lag(lag, 'window_max_ms')} | | | |",
        f"| `ping` → `pong` on a socket of its own p50 / p99 (ms): idle before / during | | "
        f"{_f(a['ping_idle'].median)} / {_f(a['ping_idle'].p99)}; {_f(a['ping'].median)} / {_f(a['ping'].p99)} "
        "| | | |",
    ]


def one_socket_table(direct: Phase, per_chat: Phase, one: Phase) -> list[str]:
    d, p, o = direct.metrics, per_chat.metrics, one.metrics
    c = one.streams
    rows = [
        "| figure | direct client | a socket per chat | one socket for all | target | met |",
        "|---|--:|--:|--:|--:|:-:|",
        f"| completed | {d['completed']} of {c} | {p['completed']} of {c} | {o['completed']} of {c} | {c} of {c} "
        f"| {_ok(o['completed'] == c and p['completed'] == c)} |",
        f"| failures by kind | {_errors(d)} | {_errors(p)} | {_errors(o)} | none | |",
    ]
    for q, label in ((50, "p50"), (95, "p95")):
        pick = (lambda s: s.median) if q == 50 else (lambda s: s.p95)
        added_p, added_o = pick(p["ttft"]) - pick(d["ttft"]), pick(o["ttft"]) - pick(d["ttft"])
        target = (
            f"≤ +{TARGET_TTFT_ADDED_P95_MS:.0f} / ≤ +{TARGET_TTFT_ADDED_P95_ONE_SOCKET_MS:.0f}"
            if q == 95
            else ""
        )
        met = (
            _ok(added_p <= TARGET_TTFT_ADDED_P95_MS and added_o <= TARGET_TTFT_ADDED_P95_ONE_SOCKET_MS)
            if q == 95
            else ""
        )
        rows.append(
            f"| time to first token {label} (ms), added | {_f(pick(d['ttft']))} | {_f(pick(p['ttft']))}, "
            f"{added_p:+.1f} | {_f(pick(o['ttft']))}, **{added_o:+.1f}** | {target} | {met} |"
        )
    rows += [
        f"| send → `ack` p50 / p95 (ms) | | {_f(p['to_ack'].median)} / {_f(p['to_ack'].p95)} "
        f"| {_f(o['to_ack'].median)} / {_f(o['to_ack'].p95)} | | |",
        f"| gap between frames p99 / upstream's p99 | {_f(d['frame_gap_ratio'], 2)}x | {_f(p['frame_gap_ratio'], 2)}x "
        f"| {_f(o['frame_gap_ratio'], 2)}x | | |",
        f"| deltas out of order (`seq` not +1) | | {p['seq_faults']} | {o['seq_faults']} | 0 "
        f"| {_ok(p['seq_faults'] == 0 and o['seq_faults'] == 0)} |",
        f"| saved reply = what the client saw | | {_saved(p)} | {_saved(o)} | all | {_ok(_saved_ok(o))} |",
        f"| client processes | {_saturation_note(d)} | {_saturation_note(p)} | {_saturation_note(o)} | | |",
        f"| app CPU s per 1,000 tokens, whole phase | | {_f(p['cpu_per_1k_whole'].get('app'), 3)} "
        f"| {_f(o['cpu_per_1k_whole'].get('app'), 3)} | | |",
        f"| `ping` → `pong` p99 during the phase (ms) | | {_f(p['ping'].p99)} | {_f(o['ping'].p99)} | | |",
    ]
    return rows


def _saved(m: dict) -> str:
    saved = m.get("saved")
    return f"{saved['equal']} of {saved['checked']}" if saved else "-"


def _saved_ok(m: dict) -> bool | None:
    saved = m.get("saved")
    return None if not saved else saved["equal"] == saved["checked"] and not saved.get("no_reply")


def _count_cells(counts: list[int]) -> str:
    """ "k of n stops (t tokens)": how many stops let at least one token through, and how many in all."""
    total = sum(counts)
    return f"{sum(1 for n in counts if n)} of {len(counts)} ({total} token{'' if total == 1 else 's'})"


def stop_table(direct: Phase, app: Phase) -> list[str]:
    d, a = direct.metrics["stop"], app.metrics["stop"]
    after_close_ok = a["n"] > 0 and sum(a["after_close"]) == 0 and a["not_closed"] == 0
    met_time = a["closed"].median <= TARGET_STOP_MEDIAN_MS and a["closed"].p99 <= TARGET_STOP_P99_MS
    return [
        "| figure | direct client (cancels its stream) | via the app (`stop` frame) | target | met |",
        "|---|--:|--:|--:|:-:|",
        f"| stopped streams, of {app.streams} streaming | {d['n']} | {a['n']} | | |",
        f"| stop sent → upstream connection closed, p50 / p95 / p99 / max (ms) | {_f(d['closed'].median, 2)} / "
        f"{_f(d['closed'].p95, 2)} / {_f(d['closed'].p99, 2)} / {_f(d['closed'].max, 2)} | "
        f"**{_f(a['closed'].median, 2)}** / {_f(a['closed'].p95, 2)} / **{_f(a['closed'].p99, 2)}** / "
        f"{_f(a['closed'].max, 2)} | ≤ {TARGET_STOP_MEDIAN_MS:g} / - / ≤ {TARGET_STOP_P99_MS:g} / - "
        f"| {_ok(met_time if a['n'] else None)} |",
        f"| stops whose close the fake never saw | {d['not_closed']} | {a['not_closed']} | 0 | |",
        f"| stops with a token written after the stop was **sent** | {_count_cells(d['after_stop'])} "
        f"| **{_count_cells(a['after_stop'])}** | reported | |",
        f"| stops with a token written after the close was **noticed** | {_count_cells(d['after_close'])} "
        f"| **{_count_cells(a['after_close'])}** | 0 | {_ok(after_close_ok)} |",
        f"| app: stop sent → `reply_finished` p50 / p99 (ms) | | {_f(a['finished'].median, 1)} / "
        f"{_f(a['finished'].p99, 1)} | | |",
        f"| app: `delta` frames after the stop was sent, in all | | {sum(a['deltas_after_stop'])} | | |",
        f"| saved reply = what the client saw (stopped ones included) | | {_saved(app.metrics)} | all "
        f"| {_ok(_saved_ok(app.metrics))} |",
        f"| the other streams: completed | {direct.metrics['completed'] - d['n']} of {direct.streams - d['n']} "
        f"| {app.metrics['completed'] - a['n']} of {app.streams - a['n']} | all | |",
        f"| client processes | {_saturation_note(direct.metrics)} | {_saturation_note(app.metrics)} | | |",
    ]


def _cpu_rows(d: dict, a: dict) -> list[str]:  # (kept for the CPU section's steady-window detail)
    dc, ac = d["cpu_per_1k"], a["cpu_per_1k"]
    if not ac:
        return []
    return [
        f"| steady window (s) / tokens in it | {_f(d.get('window_seconds', math.nan))} / {d['window_tokens']} "
        f"| {_f(a.get('window_seconds', math.nan))} / {a['window_tokens']} | | | |",
        f"| app CPU s per 1,000 tokens, steady window | | {_f(ac.get('app'), 3)} | | | |",
        f"| clients CPU s per 1,000 tokens, steady window | {_f(dc.get('clients'), 3)} "
        f"| {_f(ac.get('clients'), 3)} | | | |",
    ]


def db_rows(phases: list[Phase], rate: float) -> list[str]:
    rows = [
        "| phase | replies | streaming s per reply | write statements per reply | budget 3 + 1/s "
        "| met | write transactions per reply | all SQL statements per reply (of which SELECT) "
        "| write statements (all replies) |",
        "|---|--:|--:|--:|--:|:-:|--:|--:|---|",
    ]
    for p in phases:
        db = p.metrics.get("db")
        if not db:
            continue
        secs = p.metrics["upstream_seconds"]
        budget = 3 + secs
        note = "" if p.metrics["completed"] == len(p.chats) else " (not all completed: indicative only)"
        stmts = ", ".join(f"{k} {v}" for k, v in sorted(db["statements"].items()))
        rows.append(
            f"| {p.label} ({p.streams} × {p.tokens} tokens){note} | {len(p.chats)} | {_f(secs, 2)} "
            f"| {_f(db['writes_per_reply'], 2)} | {_f(budget, 2)} | {_ok(db['writes_per_reply'] <= budget)} "
            f"| {_f(db['transactions_per_reply'], 2)} | {_f(db['queries_per_reply'], 1)} ({_f(db['verbs'].get('SELECT', 0) / len(p.chats), 1)}) | {stmts} |"
        )
    return rows


def find_knee(points: list[dict]) -> str:
    """The first concurrency at which a target fails or a figure more than doubles."""
    prev = None
    for pt in points:
        reasons = []
        if pt["app_completed"] < pt["streams"]:
            reasons.append(f"only {pt['app_completed']} of {pt['streams']} completed")
        if pt["ttft_added_p95"] > TARGET_TTFT_ADDED_P95_MS:
            reasons.append(f"TTFT added p95 {pt['ttft_added_p95']:.0f} ms > {TARGET_TTFT_ADDED_P95_MS:.0f}")
        target = gap_ratio_target(pt["streams"])
        if target is not None and pt["gap_ratio_p99"] > target:
            reasons.append(f"gap between frames p99 {pt['gap_ratio_p99']:.2f}x the upstream's > {target:g}x")
        if pt["streams"] >= 200 and pt["app_cpu_1k_whole"] > TARGET_CPU_PER_1K:  # (a target at load)
            reasons.append(f"CPU {pt['app_cpu_1k_whole']:.3f} s per 1,000 tokens > {TARGET_CPU_PER_1K}")
        if (
            prev is not None
            and pt["app_ttft_p95"] > 2 * max(prev["app_ttft_p95"], 1.0)
            and pt["app_ttft_p95"] > 50
        ):
            reasons.append(f"app TTFT p95 {prev['app_ttft_p95']:.0f} → {pt['app_ttft_p95']:.0f} ms")
        if reasons:
            where = (
                f"between {prev['streams']} and {pt['streams']}" if prev else f"at or below {pt['streams']}"
            )
            return f"the knee is {where} concurrent streams: at {pt['streams']}, " + "; ".join(reasons) + "."
        prev = pt
    return f"no knee up to {points[-1]['streams']} concurrent streams (every target met)." if points else ""


def sweep_points(pairs: dict[int, tuple[Phase, Phase]]) -> list[dict]:
    points = []
    for c in sorted(pairs):
        d, a = (p.metrics for p in pairs[c])
        points.append(
            {
                "streams": c,
                "direct_completed": d["completed"],
                "app_completed": a["completed"],
                "direct_ttft_p95": d["ttft"].p95,
                "app_ttft_p95": a["ttft"].p95,
                "ttft_added_p95": a["ttft"].p95 - d["ttft"].p95,
                "direct_gap_p99": d["frame_gap"].p99,
                "app_gap_p99": a["frame_gap"].p99,
                "upstream_gap_p99": a["upstream_gap"].p99,
                "gap_ratio_p99": a["frame_gap_ratio"],
                "direct_gap_ratio_p99": d["frame_gap_ratio"],
                "direct_saturated": d["client_saturated"],
                "app_cpu_1k": a["cpu_per_1k"].get("app", math.nan),
                "app_cores_whole": a["cpu_share_whole"].get("app", math.nan),
                "app_cpu_1k_whole": a["cpu_per_1k_whole"].get("app", math.nan),
                "direct_client_cpu_1k": d["cpu_per_1k_whole"].get("clients", math.nan),
                "direct_procs": d["client_procs"],
                "app_cores": a["cpu_share"].get("app", a["cpu_share_whole"].get("app", math.nan)),
                "busy": a["cpu_share_whole"].get("machine_busy", math.nan),
                "others": a["cpu_share_whole"].get("others", math.nan),
                "loop_lag_p99": (a.get("loop_lag") or {}).get("p99_ms"),
                "loop_lag_window_p99": (a.get("loop_lag_window") or {}).get("p99_ms"),
                "fake_late_p99": a["fake_late"].p99,
                "frames_per_token": a["frames_per_token"],
            }
        )
    return points


def plot_sweep(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    xs = [p["streams"] for p in points]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    ax = axes[0][0]
    ax.plot(xs, [p["direct_ttft_p95"] for p in points], "o-", label="direct client")
    ax.plot(xs, [p["app_ttft_p95"] for p in points], "s-", label="via the app")
    ax.plot(xs, [p["ttft_added_p95"] for p in points], "^--", label="added (app - direct)")
    ax.axhline(
        TARGET_TTFT_ADDED_P95_MS,
        color="red",
        lw=0.8,
        ls=":",
        label=f"target: added ≤ {TARGET_TTFT_ADDED_P95_MS:g} ms",
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_title("time to first token, p95 (ms)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(xs, [p["upstream_gap_p99"] for p in points], "x:", label="the upstream's own")
    ax.plot(xs, [p["direct_gap_p99"] for p in points], "o-", label="direct client")
    ax.plot(xs, [p["app_gap_p99"] for p in points], "s-", label="via the app")
    ax2 = ax.twinx()
    ax2.plot(xs, [p["gap_ratio_p99"] for p in points], "^--", color="gray", label="app / upstream")
    for _upto, ratio in TARGET_GAP_RATIO:
        ax2.axhline(ratio, color="red", lw=0.8, ls=":")
    ax2.set_ylabel("app / upstream p99 (targets, red)")
    ax.set_title("gap between frames seen by clients, p99 (ms)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1][0]
    ax.plot(xs, [p["app_cpu_1k_whole"] for p in points], "s-", label="app (daphne), whole phase")
    ax.plot(xs, [p["app_cpu_1k"] for p in points], "s:", label="app, steady window only")
    ax.plot(xs, [p["direct_client_cpu_1k"] for p in points], "o-", label="direct client (httpx-sse), whole")
    ax.axhline(TARGET_CPU_PER_1K, color="red", lw=0.8, ls=":", label="target ≤ 0.10")
    ax.set_title("CPU seconds per 1,000 tokens")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(
        xs, [100 * p["app_completed"] / p["streams"] for p in points], "s-", label="completed via the app (%)"
    )
    ax.plot(xs, [100 * p["busy"] for p in points], "x--", label="machine busy during app phase (%)")
    ax.plot(xs, [100 * p["app_cores"] for p in points], "d--", label="daphne CPU (% of one core)")
    ax.set_ylim(0, 110)
    ax.set_title("completion and CPU use")
    ax.legend(fontsize=8)
    for row in axes:
        for ax in row:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.set_xlabel("concurrent streams (20 tokens/s each)")
            ax.grid(alpha=0.3)
    fig.suptitle("chatsite under load vs a direct client (same fake upstream, same machine)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict, info: dict, command: str, args: argparse.Namespace) -> str:
    app_v = info.get("app", {})
    title = "## Load: many chats at once"
    if args.processes > 1:
        title += f" ({args.processes} daphne processes on PostgreSQL and Redis)"
    if args.app_env:
        title += " (app settings: " + ", ".join(f"`{kv}`" for kv in args.app_env) + ")"
    storage = (
        "a fresh SQLite database, the in-memory channel layer"
        if args.processes == 1
        else f"{args.processes} daphne processes on as many ports (chat i goes to process i mod "
        f"{args.processes}, as a round-robin proxy would send it) sharing a fresh PostgreSQL database "
        "and channels-redis; CPU and memory are the sum over the processes, the event-loop lag that "
        "of the worst process"
    )
    lines = [
        title,
        "",
        f"- Date: {info['date']}; code: `{info.get('revision', '?')}` (`git describe --always`; "
        "`-dirty`: uncommitted changes other than the docs the suite writes)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']} (the machine is shared)",
        f"- App: Python {app_v.get('python', '?')}, daphne {app_v.get('daphne', '?')}, "
        f"Django {app_v.get('django', '?')}, Channels {app_v.get('channels', '?')}, "
        f"Twisted {app_v.get('twisted', '?')}, httpx {app_v.get('httpx', '?')}",
        f"- Clients: Python {info['client_python']}, httpx {info['httpx']}, httpx-sse {info['httpx_sse']}, "
        f"websockets {info['websockets']}; {args.client_procs} WebSocket client process{'es' if args.client_procs != 1 else ''}; the direct "
        + (
            f"client in one process per {args.direct_chats_per_proc} chats (at least {args.client_procs})"
            if args.direct_procs == "auto"
            else "client in as many processes as improved its relay p99 by 10 % or more (searched, doubling)"
            if args.direct_procs == "search"
            else f"client in {args.direct_procs} processes"
        ),
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Setup: the fake upstream, chatsite, the client processes and a ping prober each run in their own "
        "processes on this machine. chatsite runs under daphne as `benchmarks.instrumented_asgi:application` "
        "(the real app plus a database-write counter, an event-loop lag probe and a stats URL; no app code "
        f"changed), with `DJANGO_DEBUG=0`, {storage} and default coalescing/checkpoint settings (except those "
        "named in the heading); the per-user limits are raised past the one-socket phase's chats (not "
        "switched off: every send is still checked). Unless a table says *one socket*, each chat is its own "
        "logged-in WebSocket (like a browser tab per chat), opened before the burst, as its own user. The "
        "direct client is httpx + httpx-sse straight to the fake, its chats split over as many processes as "
        "the concurrency needs, so that it stays a floor; a table says **saturated** when a client process "
        f"used ≥ {SATURATED_CORE_SHARE:g} of a core, woke ≥ {SATURATED_LOOP_LAG_P99_MS:g} ms late (p99 of "
        f"a 10 ms sleep on its own loop) or the machine was ≥ {100 * SATURATED_MACHINE_BUSY:.0f} % busy: "
        "such a baseline is no floor, and a ratio to it means little. In a phase, C chats start evenly "
        f"spread over {args.spread:g} s (unless said), each `fake?tokens=T&rate={args.rate:g}`; direct and "
        "app phases run one after the other in the same run against the same fake. Times in ms.",
        "",
        "What each figure is:",
        "",
        "- *Time to first token*: `send` frame (or HTTP request) sent → first text received; *added* is app "
        "minus direct at the same percentile, same run.",
        "- *Gap between frames*: time between consecutive frames of one reply's stream as its client "
        "received them (app: `delta`/`reasoning_delta` frames; direct: SSE events with a choice); *gap "
        "between text arrivals*: the same for arrivals that grew the text. Each is compared (p99 / p99) "
        "with *the upstream's own gap between tokens*: the fake's write times of consecutive tokens in the "
        "same phase. A per-token gap is not reported: once tokens are coalesced, k tokens in one frame "
        "would count k - 1 gaps of 0 ms.",
        "- *CPU s per 1,000 tokens, whole phase*: utime + stime of the daphne process(es), read from "
        "`/proc/<pid>/stat` ten times a second by the orchestrating process, from the sample before the "
        "first send to the sample after the last reply ended (starts and ends included, as the peers' "
        "figures are), divided by the tokens the clients received. The *steady window* (every stream has "
        "its first token + 0.5 s, to the first stream's last token - 0.5 s) is given for reference only.",
        "- *Loop lag*: daphne's in-process probe (how late a 10 ms sleep woke up) and, from outside, the "
        f"round trip of a `ping` every {PROBE_INTERVAL * 1000:g} ms on a socket of its own (the consumer "
        "answers it at once, so the round trip is the loop's delay plus two local hops; *idle* is the "
        "second before the first start).",
        "- *Saved reply = what the client saw*: after each app phase the replies are read back from the "
        "database (`manage.py shell`, the app's ORM) and each saved text and status compared with the "
        "concatenated `delta`s and the `reply_finished` status its client received.",
        "- *Relay delay*: client arrival minus the fake's write time of the same token. *The fake's own "
        "lateness*: how far behind its schedule the fake wrote tokens (when high, the machine is the "
        "bottleneck).",
        "",
    ]
    bursts: dict[int, tuple[Phase, Phase]] = res.get("burst", {})
    if bursts:
        lines += [f"### Burst: C chats started within {args.spread:g} s, a socket per chat", ""]
        for c, (d, a) in sorted(bursts.items()):
            lines += [f"**{c} chats**, {a.tokens} tokens each at {a.rate:g} tokens/s:", ""]
            lines += burst_table(d, a)
            lines += [""]
    ones: dict[int, tuple[Phase, Phase, Phase]] = res.get("onesocket", {})
    if ones:
        lines += [
            f"### One socket: C chats started within {args.spread:g} s, all on one socket",
            "",
            "As a tab that streams in many conversations (or any client that multiplexes) would: one "
            "logged-in socket, one user, C `send` frames at their times; frames are matched to chats by "
            "`client_id` (`ack`), conversation (`reply_started`) and reply. Against the same C chats each on "
            "its own socket and the direct client.",
            "",
        ]
        for c, (d, p, o) in sorted(ones.items()):
            lines += [f"**{c} chats**, {o.tokens} tokens each:", "", *one_socket_table(d, p, o), ""]
    stop: tuple[Phase, Phase] | None = res.get("stop")
    if stop:
        d, a = stop
        lines += [
            f"### Stop under load: {a.metrics['stop']['n']} of {a.streams} streaming chats stopped",
            "",
            f"{a.streams} chats of {a.tokens} tokens started within {a.spread:g} s; {a.metrics['stop']['n']} "
            "of them, evenly picked, are stopped one after another over the second that starts 1 s after the "
            "last start (every chat streaming). Via the app a `stop` frame is sent on the chat's socket; the "
            "direct client cancels its reading task (closing the stream). *Upstream closed* is when the fake "
            "noticed its connection close (`disconnected_at` in its records), so it includes the fake "
            "process's own wake-up delay. Two token counts, both from the fake's write times: after the stop "
            f"was *sent* (at {a.rate:g} tokens/s one is due every {1000 / a.rate:g} ms, so a stop that takes "
            "a few ms can let one through; the user sees it, and the saved text has it), and after the close "
            "was *noticed* (the upstream generating for no one).",
            "",
            *stop_table(d, a),
            "",
        ]
    thousand: tuple[Phase, Phase] | None = res.get("thousand")
    if thousand:
        d, a = thousand
        lag = a.metrics.get("loop_lag") or {}
        lag99 = lag.get("p99_ms")
        lines += [
            f"### {a.streams} chats started within {a.spread:g} s",
            "",
            f"Target: all complete, and daphne's event loop lag p99 ≤ {TARGET_LOOP_LAG_P99_MS:g} ms "
            f"(in-process probe, whole phase): **{a.metrics['completed']} of {a.streams}** completed, loop "
            f"lag p99 **{_lag(lag, 'p99_ms')} ms** "
            f"({_ok(a.metrics['completed'] == a.streams and lag99 is not None and lag99 <= TARGET_LOOP_LAG_P99_MS)}); "
            f"from outside, `ping` round trip p99 {_f(a.metrics['ping'].p99)} ms (idle "
            f"{_f(a.metrics['ping_idle'].p99)} ms).",
            "",
            *burst_table(d, a),
            "",
        ]
    cpu: tuple[Phase, Phase] | None = res.get("cpu")
    if cpu:
        d, a = cpu
        aw, dw = a.metrics["cpu_per_1k_whole"], d.metrics["cpu_per_1k_whole"]
        ac, dc = a.metrics["cpu_per_1k"], d.metrics["cpu_per_1k"]
        lines += [
            f"### CPU per 1,000 tokens relayed ({a.streams} streams × {a.rate:g} tokens/s)",
            "",
            f"{a.streams} chats of {a.tokens} tokens ({a.tokens / a.rate:g} s each), started within "
            f"{a.spread:g} s; whole phase {_f(a.metrics['whole_seconds'])} s via the app "
            f"({a.metrics['tokens']} tokens), {_f(d.metrics['whole_seconds'])} s direct. The steady window "
            f"({_f(a.metrics.get('window_seconds', math.nan))} s) leaves out the starts and ends, which cost "
            "the most per token: it is shown, not quoted.",
            "",
            "| process | CPU s per 1,000 tokens, **whole phase** | steady window only | target | met |",
            "|---|--:|--:|--:|:-:|",
            f"| **app (daphne)** | **{_f(aw.get('app'), 3)}** | {_f(ac.get('app'), 3)} | ≤ {TARGET_CPU_PER_1K} "
            f"| {_ok(aw.get('app', math.inf) <= TARGET_CPU_PER_1K)} |",
            f"| direct client (httpx + httpx-sse, {d.metrics['client_procs']} processes), for reference "
            f"| {_f(dw.get('clients'), 3)} | {_f(dc.get('clients'), 3)} | | |",
            f"| WebSocket clients (`websockets`) | {_f(aw.get('clients'), 3)} | {_f(ac.get('clients'), 3)} | | |",
            f"| fake upstream (during the app phase) | {_f(aw.get('fake'), 3)} | {_f(ac.get('fake'), 3)} | | |",
            "",
            f"Over the app phase daphne used {_f(a.metrics['cpu_share_whole'].get('app'), 2)} of a core "
            f"and the machine was {_f(100 * a.metrics['cpu_share_whole'].get('machine_busy', math.nan), 0)} % busy "
            f"({_f(a.metrics['cpu_share_whole'].get('others'), 2)} cores used by other tenants' processes); "
            f"completed {a.metrics['completed']} of {a.streams} ({_errors(a.metrics)}); gap between frames p99 "
            f"{_f(a.metrics['frame_gap'].p99)} ms, {_f(a.metrics['frame_gap_ratio'], 2)}x the upstream's "
            f"(direct: {_f(d.metrics['frame_gap_ratio'], 2)}x; direct client {_saturation_note(d.metrics)}); "
            f"{_f(a.metrics['frames_per_token'], 2)} frames per token; saved = seen {_saved(a.metrics)}.",
            "",
        ]
    app_phases = [
        p for key in ("burst",) for pair in res.get(key, {}).values() for p in pair if p.mode == "app"
    ]
    if cpu:
        app_phases.append(cpu[1])
    app_phases += [
        pair[1] for c, pair in sorted(res.get("sweep", {}).items()) if c not in res.get("burst", {})
    ]
    if app_phases:
        lines += [
            "### Database writes per reply",
            "",
            "Counted in the daphne process by `connection.execute_wrapper` on every connection "
            "(`INSERT`/`UPDATE`/`DELETE` statements; a write transaction is a `BEGIN IMMEDIATE`, i.e. one "
            "acquisition of SQLite's write lock). The budget is 3 + 1 per second of streaming (the mean "
            "first-to-last token time of the upstream, from the fake's records). The process heartbeat "
            "(`UPDATE conversations_worker`, every 5 s per process) is listed but not counted per reply.",
            "",
            *db_rows(app_phases, args.rate),
            "",
        ]
    mem = res.get("memory")
    if mem:
        idle = mem["idle"]
        rows = [f"| idle (fresh process, no socket) | {idle / 1024:.1f} MiB | |"]
        prev_n, prev_rss = 0, idle
        for n, rss in sorted(mem["sockets"].items()):
            rows.append(
                f"| {n} idle logged-in sockets | {rss / 1024:.1f} MiB | "
                f"{(rss - idle) / n:.1f} KiB per socket (vs idle); {(rss - prev_rss) / (n - prev_n):.1f} "
                f"KiB per socket (vs {prev_n}) |"
            )
            prev_n, prev_rss = n, rss
        s = mem["stream_streams"]
        rows += [
            f"| second fresh process, after a 10-reply warm-up | {mem['stream_idle'] / 1024:.1f} MiB | |",
            f"| {s} sockets open, nothing streaming | {mem['stream_sockets'] / 1024:.1f} MiB | |",
            f"| {s} replies streaming: median in the steady window | {mem['stream_median'] / 1024:.1f} MiB | "
            f"{(mem['stream_median'] - mem['stream_sockets']) / s:.1f} KiB per streaming reply |",
            f"| {s} replies streaming: peak | {mem['stream_peak'] / 1024:.1f} MiB | "
            f"{(mem['stream_peak'] - mem['stream_sockets']) / s:.1f} KiB per streaming reply |",
        ]
        lines += [
            "### Memory (RSS of the daphne process)",
            "",
            "Each part in a fresh daphne process (memory a process has freed is reused, not returned, "
            f"so the tests do not share one); {mem['stream_completed']} of {s} streaming replies completed.",
            "",
            "| state | RSS | per socket / per reply |",
            "|---|--:|--:|",
            *rows,
            "",
        ]
    sweep: dict[int, tuple[Phase, Phase]] = res.get("sweep", {})
    if sweep:
        points = sweep_points(sweep)
        lines += [
            "### Scaling: 50 to 1000 concurrent streams",
            "",
            f"Each point is a direct phase and an app phase of C chats × {args.sweep_tokens} tokens at "
            f"{args.rate:g} tokens/s started within {args.spread:g} s"
            + (
                " (points also in the burst section are the same runs)"
                if args.sweep_tokens == args.tokens
                else ""
            )
            + '. CPU is over the whole phase (starts and ends included); "steady" is the window in which '
            'all C streams were receiving tokens, for reference ("-" when the app fell so far behind that '
            "its streams never all overlapped). Gaps are between frames, p99, compared with the upstream's own "
            "p99 in the same phase. Daphne cores and machine busy are over the whole phase.",
            "",
            "![scaling](benchmarks/load-scaling.png)",
            "",
            "| C | completed direct / app | TTFT p95 direct / app / added (ms) | gap p99 upstream / direct / app "
            "(ms), app ÷ upstream | app CPU s/1k tokens (whole / steady) | direct client: processes, CPU s/1k, "
            "saturated? | daphne cores | machine busy (other tenants, cores) | loop lag p99 phase / steady (ms) "
            "| fake lateness p99 (ms) | frames/token |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for pt in points:
            lines.append(
                f"| {pt['streams']} | {pt['direct_completed']} / {pt['app_completed']} "
                f"| {_f(pt['direct_ttft_p95'])} / {_f(pt['app_ttft_p95'])} / {_f(pt['ttft_added_p95'])} "
                f"| {_f(pt['upstream_gap_p99'])} / {_f(pt['direct_gap_p99'])} / {_f(pt['app_gap_p99'])}, "
                f"{_f(pt['gap_ratio_p99'], 2)}x "
                f"| {_f(pt['app_cpu_1k_whole'], 3)} / {_f(pt['app_cpu_1k'], 3)} "
                f"| {pt['direct_procs']}, {_f(pt['direct_client_cpu_1k'], 3)}, "
                f"{'**yes**: ' + pt['direct_saturated'] if pt['direct_saturated'] else 'no'} "
                f"| {_f(pt['app_cores_whole'], 2)} | {_f(100 * pt['busy'], 0)} % ({_f(pt['others'], 2)}) "
                f"| {_f(pt['loop_lag_p99'])} / {_f(pt['loop_lag_window_p99'])} "
                f"| {_f(pt['fake_late_p99'])} | {_f(pt['frames_per_token'], 2)} |"
            )
        lines += ["", "Knee: " + find_knee(points), ""]
        errs = {c: pair[1].metrics["errors"] for c, pair in sweep.items() if pair[1].metrics["errors"]}
        errs_d = {c: pair[0].metrics["errors"] for c, pair in sweep.items() if pair[0].metrics["errors"]}
        if errs or errs_d:
            lines += [
                "Failures: "
                + "; ".join(f"app at {c}: {e}" for c, e in sorted(errs.items()))
                + ("; " if errs and errs_d else "")
                + "; ".join(f"direct at {c}: {e}" for c, e in sorted(errs_d.items())),
                "",
            ]
    prof = res.get("profile")
    if prof:
        pm = prof["phase"]
        lines += [
            "### Profile of daphne under load",
            "",
            f"`py-spy record --nonblocking --threads --rate 100` on the daphne process during an extra app phase "
            f"of {args.cpu_streams} chats × {args.cpu_tokens} tokens at {args.rate:g} tokens/s started within "
            f"{args.spread:g} s (not used for the figures above; it completed {pm['completed']} of "
            f"{args.cpu_streams}, TTFT p95 {_f(pm['ttft'].p95)} ms, gap between text arrivals p99 {_f(pm['text_gap'].p99)} ms). "
            "Percentages are of the samples in which a thread was busy (on CPU).",
            "",
        ]
        for name, part in prof["parts"].items():
            total = part["samples"] or 1
            title = (
                f"during the starts (first {part['seconds']} s)"
                if name == "start"
                else f"steady streaming ({part['seconds']} s from {part['offset']:g} s after the first start)"
            )
            lines += [
                f"**{title}**: {part['samples']} busy samples; raw collapsed stacks in `{part['raw_file']}`. "
                "Threads: " + ", ".join(f"{t} {100 * n / total:.0f} %" for t, n in part["threads"]) + ".",
                "",
                "| where the busy time goes | % of busy samples |",
                "|---|--:|",
                *[f"| {cat} | {100 * n / total:.1f} |" for cat, n in part["categories"]],
                "",
                "| self time (on top of the stack) | % | inclusive (anywhere on the stack) | % |",
                "|---|--:|---|--:|",
            ]
            selfs, incl = part["self"][:20], part["inclusive"][:30]
            for i in range(max(len(selfs), len(incl))):
                own = f"`{selfs[i][0]}` | {100 * selfs[i][1] / total:.1f}" if i < len(selfs) else " | "
                within = f"`{incl[i][0]}` | {100 * incl[i][1] / total:.1f}" if i < len(incl) else " | "
                lines.append(f"| {own} | {within} |")
            lines.append("")
    return "\n".join(lines) + "\n"


# ==========================================================================
# Main


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


SECTIONS = ("burst", "onesocket", "stop", "thousand", "cpu", "memory", "sweep")


async def run(args: argparse.Namespace) -> tuple[dict, dict]:
    info = machine_info()
    info["clock"] = check_monotonic_clock()
    info["load_before"] = loadavg()
    info["revision"] = git_revision()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chatsite-load-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            await bench.start()
            await bench.warmup()
            if "burst" in args.only:
                res["burst"] = {}
                for c in args.burst:
                    res["burst"][c] = await bench.pair(f"b{c}", c, args.tokens)
            if "onesocket" in args.only:
                res["onesocket"] = {}
                for c in args.one_socket:
                    if c in res.get("burst", {}):  # the same chats, each on its socket: reuse them
                        direct, per_chat = res["burst"][c]
                    else:
                        direct, per_chat = await bench.pair(f"o{c}", c, args.tokens)
                    one = await bench.phase(f"o{c}one", "app", c, args.tokens, one_socket=True)
                    res["onesocket"][c] = (direct, per_chat, one)
            if "stop" in args.only:
                res["stop"] = await bench.pair("stop", args.stop_streams, args.stop_tokens, stops=args.stops)
            if "thousand" in args.only:
                res["thousand"] = await bench.pair(
                    f"k{args.thousand}", args.thousand, args.tokens, spread=args.thousand_spread
                )
            if "cpu" in args.only:
                res["cpu"] = await bench.pair("cpu", args.cpu_streams, args.cpu_tokens)
            if "sweep" in args.only:
                res["sweep"] = {}
                for c in args.sweep:
                    if c in res.get("burst", {}) and args.sweep_tokens == args.tokens:
                        res["sweep"][c] = res["burst"][c]
                    else:
                        res["sweep"][c] = await bench.pair(f"s{c}", c, args.sweep_tokens)
            if "memory" in args.only:
                res["memory"] = await bench.memory()
            if args.profile:
                res["profile"] = await bench.profile()
        except BaseException:
            app = bench.app
            if app is not None and app.log_path is not None and app.log_path.exists():
                log("--- daphne log (tail) ---\n" + app.log_tail())
            for path in sorted(Path(tmp).glob("*.log")):  # noqa: ASYNC240 - on the way out, after an error
                text = path.read_text(errors="replace").strip()
                if text:
                    log(f"--- {path.name} (tail) ---\n" + "\n".join(text.splitlines()[-20:]))
            raise
        finally:
            await bench.stop()
    info["load_after"] = loadavg()
    after = git_revision()
    if after != info["revision"]:  # the tree changed under the run: say so, and mark the section
        # (ends in "-dirty" so that the section is marked: no one commit was measured)
        info["revision"] = f"{info['revision']} at the start, {after} at the end, i.e. -dirty"
    return res, info


def _command(argv: list[str]) -> str:
    if __package__:
        head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks.load"
    else:
        head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py"
    return " ".join([head, *(shlex.quote(a) for a in argv)])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        asyncio.run(_worker_loop())
        return
    parser = argparse.ArgumentParser(
        prog="benchmarks/load.py",
        description="chatsite under many concurrent chats, against a direct client.",
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run (default: {','.join(SECTIONS)})"
    )
    parser.add_argument("--burst", type=_ints, default=[200, 500], help="chats per burst (default 200,500)")
    parser.add_argument(
        "--tokens", type=int, default=100, help="tokens per chat in bursts and sweep (default 100)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per chat (default 20)")
    parser.add_argument(
        "--spread", type=float, default=2.0, help="start the chats within S seconds (default 2)"
    )
    parser.add_argument(
        "--cpu-streams", type=int, default=200, help="streams for the CPU figure (default 200)"
    )
    parser.add_argument(
        "--cpu-tokens", type=int, default=200, help="tokens per chat for the CPU figure (200)"
    )
    parser.add_argument(
        "--sweep",
        type=_ints,
        default=[50, 100, 200, 300, 500, 1000],
        help="concurrencies (50,100,200,300,500,1000)",
    )
    parser.add_argument(
        "--sweep-tokens",
        type=int,
        default=160,
        help="tokens per chat in the sweep (default 160: 8 s, so that a steady window exists)",
    )
    parser.add_argument(
        "--idle-sockets", type=_ints, default=[500, 1000], help="idle sockets (default 500,1000)"
    )
    parser.add_argument(
        "--one-socket",
        type=_ints,
        default=[500],
        help="onesocket: chats started on one socket (default 500), against as many on a socket each",
    )
    parser.add_argument(
        "--stop-streams", type=int, default=500, help="stop: chats streaming while some stop (default 500)"
    )
    parser.add_argument("--stops", type=int, default=50, help="stop: how many of them stop (default 50)")
    parser.add_argument(
        "--stop-tokens", type=int, default=200, help="stop: tokens per chat (default 200, i.e. 10 s)"
    )
    parser.add_argument(
        "--thousand", type=int, default=1000, help="thousand: chats started at once (default 1000)"
    )
    parser.add_argument(
        "--thousand-spread", type=float, default=4.0, help="thousand: started within S s (default 4)"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="WebSocket client processes (default 2)")
    parser.add_argument(
        "--direct-procs",
        default="auto",
        help="direct client processes: a number, auto (default: one per --direct-chats-per-proc chats, "
        "at least --client-procs) or search (double them until the relay p99 improves by < 10 %%)",
    )
    parser.add_argument(
        "--direct-chats-per-proc",
        type=int,
        default=100,
        help="auto: chats per direct client process (default 100: ~0.25 of a core at 20 tokens/s)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="daphne processes (default 1); more than one run on PostgreSQL and Redis, chats round-robin",
    )
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help=f"--processes > 1: the channel layer's Redis (default {REDIS_URL})",
    )
    parser.add_argument("--cooldown", type=float, default=2.0, help="pause between phases, s (default 2)")
    parser.add_argument("--profile", action="store_true", help="also profile daphne with py-spy")
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for daphne, for experiments (e.g. CHATSITE_COALESCE_MS=100); repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="small N for development: implies --no-doc")
    parser.add_argument(
        "--time-limit", type=float, default=1200.0, help="give up after S seconds (default 1200)"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the markdown file alone")
    parser.add_argument(
        "--doc-section",
        default="load",
        help="write between <!-- NAME:start --> and <!-- NAME:end --> (default: load)",
    )
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip() and s.strip() != "none"}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    if args.quick:
        args.burst, args.sweep, args.idle_sockets = [50], [20, 50], [100]
        args.cpu_streams, args.cpu_tokens, args.tokens, args.sweep_tokens = 50, 120, 60, 60
        args.one_socket, args.stop_streams, args.stops, args.stop_tokens = [50], 50, 10, 100
        args.thousand, args.thousand_spread = 100, 2.0
        args.no_doc = True
    if args.direct_procs not in ("auto", "search") and not (
        args.direct_procs.isdigit() and 1 <= int(args.direct_procs) <= DIRECT_PROCS_MAX
    ):
        parser.error(f"--direct-procs is auto, search or a number from 1 to {DIRECT_PROCS_MAX}")
    if any("=" not in kv for kv in args.app_env):
        parser.error("--app-env takes NAME=VALUE")
    if args.processes > 1 and (args.only & {"memory", "sweep"} or args.profile):
        parser.error("--processes > 1 runs the burst and cpu sections only")
    if args.client_procs < 1 or args.rate <= 0 or args.tokens < 2:
        parser.error("--client-procs >= 1, --rate > 0 and --tokens >= 2 please")
    args.write_doc = not args.no_doc
    check_tree_for_doc(parser, write_doc=args.write_doc, allow_dirty=args.allow_dirty)
    started = now()
    res, info = asyncio.run(run(args))
    section = report(res, info, _command(argv), args)
    if res.get("sweep"):
        path = PLOTS / "load-scaling.png"
        if args.write_doc:
            plot_sweep(sweep_points(res["sweep"]), path)
            log(f"wrote {path}")
        else:
            plot_sweep(sweep_points(res["sweep"]), Path(tempfile.gettempdir()) / "chatsite-load-scaling.png")
    print(section)
    log(f"took {now() - started:.0f} s")
    if args.write_doc:
        start_mark, end_mark = f"<!-- {args.doc_section}:start -->", f"<!-- {args.doc_section}:end -->"
        write_doc_section(args.doc, start_mark, end_mark, section, DOC_INTRO, revision=info["revision"])
        log(f"updated {args.doc}")


if __name__ == "__main__":
    main()
