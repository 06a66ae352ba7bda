# ruff: noqa: E501, RUF001 - the report is markdown: long table lines, and "x" written as the times sign
"""Many chats at once, through the path a browser uses, against a direct client at the same concurrency.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py             # everything, ~4-5 min
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py --quick     # small N, ~1 min, no doc
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/load.py --only burst --burst 200

Processes (all on 127.0.0.1): the fake upstream (its own process, with its
per-request token times over a pipe); chatsite under daphne, served through
``benchmarks.instrumented_asgi`` (the real app plus a database-write counter,
an event-loop lag probe and ``/__bench__/stats``), with a fresh SQLite
database and ``DJANGO_DEBUG=0`` as in production; and ``--client-procs``
client processes (default 2) that each take every other chat, so that no
single Python process reading hundreds of sockets becomes the bottleneck.
This process only orchestrates and samples ``/proc`` (CPU, RSS) 10 times a
second; it does no client work while a phase runs.

A *phase* is: C chats, chat i started at ``t0 + i * spread / C`` (default
spread 2 s), each ``fake?tokens=T&rate=R`` (default T=100, R=20 tokens/s):

* **app**: one logged-in WebSocket per chat (like one browser tab each),
  opened before t0; at its start time the chat sends a ``send`` frame (new
  conversation) and reads until ``reply_finished``;
* **direct**: the same chats from the same client processes with httpx +
  httpx-sse straight to the fake (one ``AsyncClient`` per client process, as
  the app has one).

For each phase it reports completed chats (and every failure by kind), time
to first token, inter-token delay seen by the client (a delta carrying k
tokens delivers all k at its arrival time), per-token relay delay (client
arrival - the fake's write time), CPU seconds per 1,000 tokens of each process
in the steady-state window (all C streams running), database writes per reply
(app), RSS and event-loop lag. Sections:

* ``burst``: C in ``--burst`` (default 200 and 500), T=``--tokens``;
* ``cpu``: ``--cpu-streams`` (200) streams of ``--cpu-tokens`` (200, i.e. 10 s)
  tokens, for a long steady window;
* ``memory``: two fresh daphne processes: RSS idle, with 500 and 1000 idle
  logged-in sockets; and with 200 sockets before / during 200 streaming replies;
* ``sweep``: C in ``--sweep`` (50, 200, 500, 1000), T=``--tokens``; points that
  ``burst`` already ran are reused. Plots go to ``docs/benchmarks/``.
* ``--profile``: one more app phase like ``cpu`` with ``py-spy record
  --nonblocking`` attached to daphne (needs ``py-spy`` in the venv); the top
  functions go into the report.

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

import itertools

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

DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"
DOC_INTRO = "# Benchmarks\n\nSee `benchmarks/README.md` for how to run the suite.\n"
APP_MODULE = "benchmarks.instrumented_asgi:application"
STATS_PATH = "/__bench__/stats"

TARGET_TTFT_ADDED_P95_MS = 100.0
TARGET_GAP_P99_RATIO = 1.2
TARGET_CPU_PER_1K = 0.10


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
        key: max((lag[key] for lag in lags if lag[key] is not None), default=None)
        for key in ("p50_ms", "p99_ms", "max_ms")
    }
    return {
        "pid": [one["pid"] for one in each],
        "db": db,
        "loop_lag": {"n": sum(lag["n"] for lag in lags), **worst},
    }


class ClientWorker:
    def __init__(self) -> None:
        self.sockets: list[Any] = []

    async def open(self, n: int, ws_urls: list[str], cookies: list[str], concurrency: int = 20) -> dict:
        """Have exactly ``n`` logged-in sockets open; socket j logs in with ``cookies[j]`` at ``ws_urls[j]``."""
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

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

    async def app_chats(self, chats: list[dict], deadline: float) -> list[dict]:
        if len(chats) > len(self.sockets):
            raise RuntimeError(f"{len(chats)} chats but {len(self.sockets)} sockets")
        return list(
            await asyncio.gather(
                *(self._app_chat(ws, c, deadline) for ws, c in zip(self.sockets, chats, strict=False))
            )
        )

    async def _app_chat(self, ws: Any, chat: dict, deadline: float) -> dict:
        from websockets.exceptions import ConnectionClosed

        out: dict[str, Any] = {
            "key": chat["key"],
            "sent": None,
            "ack": None,
            "started": None,
            "finished": None,
        }
        times: list[float] = []
        counts: list[int] = []
        texts: list[str] = []
        frame = json.dumps(
            {
                "type": "send",
                "client_id": "c-" + chat["key"],
                "conversation": None,
                "text": "Hello there",
                "model": "openai/" + chat["model"],
            }
        )
        await _sleep_until(chat["at"])
        err = None
        try:
            out["sent"] = now()
            await ws.send(frame)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout_at(loop.time() + max(deadline - now(), 0.001)):
                while True:
                    raw = await ws.recv()
                    at = now()
                    data = json.loads(raw)
                    kind = data["type"]
                    if kind == "delta":
                        times.append(at)
                        texts.append(data["text"])
                        counts.append(data["text"].count(" "))
                    elif kind == "ack":
                        out["ack"] = at
                    elif kind == "reply_started":
                        out["started"] = at
                    elif kind == "reply_finished":
                        out["finished"] = at
                        out["status"] = data["status"]
                        if data["status"] != "complete":
                            err = f"{data['status']}:{data.get('error_kind') or '-'}"
                        break
                    elif kind == "error":
                        err = f"error_frame:{data.get('code')}"
                        break
        except TimeoutError:
            err = "client_timeout"
        except ConnectionClosed:
            err = "socket_closed"
        except Exception as exc:
            err = _kind(exc)
        tokens = sum(counts)
        if err is None and "".join(texts) != _expected_text(chat["tokens"]):
            err = "text_mismatch" if tokens == chat["tokens"] else "short_reply"
        out.update(err=err, times=times, counts=counts, tokens=tokens)
        return out

    async def direct_chats(self, chats: list[dict], deadline: float, base_url: str) -> list[dict]:
        import httpx

        limits = httpx.Limits(max_connections=4000, max_keepalive_connections=4000)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits, trust_env=False) as http:
            return list(
                await asyncio.gather(*(self._direct_chat(http, base_url, c, deadline) for c in chats))
            )

    async def _direct_chat(self, http: Any, base_url: str, chat: dict, deadline: float) -> dict:
        from httpx_sse import EventSource

        body = {
            "model": chat["model"],
            "messages": [{"role": "user", "content": "Hello there"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        out: dict[str, Any] = {"key": chat["key"], "sent": None, "finished": None}
        times: list[float] = []
        texts: list[str] = []
        done = False
        err = None
        await _sleep_until(chat["at"])
        try:
            loop = asyncio.get_running_loop()
            out["sent"] = now()
            async with asyncio.timeout_at(loop.time() + max(deadline - now(), 0.001)):
                async with http.stream(
                    "POST", base_url + "/chat/completions", json=body, headers={"Accept": "text/event-stream"}
                ) as response:
                    if response.status_code != 200:
                        err = f"http_{response.status_code}"
                    else:
                        async for event in EventSource(response).aiter_sse():
                            at = now()
                            if event.data == "[DONE]":
                                done = True
                                continue
                            choices = json.loads(event.data).get("choices") or []
                            if choices:
                                content = (choices[0].get("delta") or {}).get("content")
                                if content:
                                    times.append(at)
                                    texts.append(content)
            out["finished"] = now()
        except TimeoutError:
            err = "client_timeout"
        except Exception as exc:
            err = _kind(exc)
        if err is None and not done:
            err = "no_done"
        if err is None and "".join(texts) != _expected_text(chat["tokens"]):
            err = "text_mismatch"
        out.update(err=err, times=times, counts=[1] * len(times), tokens=len(times))
        return out


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
                    result = await worker.app_chats(request["chats"], request["deadline"])
                elif op == "direct":
                    result = await worker.direct_chats(
                        request["chats"], request["deadline"], request["base_url"]
                    )
                else:
                    raise ValueError(f"unknown op {op!r}")
                answer = {"result": result}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer).encode() + b"\n")
            out.flush()
    finally:
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


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pg_database = ""
        self.shared_services: dict[str, str] = {}
        self.fake: FakeUpstreamProcess | None = None
        self.app: ChatApp | None = None
        self.workers: list[WorkerProc] = []
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

    async def start(self) -> None:
        import httpx

        self.http = httpx.AsyncClient(timeout=30, trust_env=False)
        if self.args.processes > 1:
            # Several processes: the documented deployment, PostgreSQL and Redis.
            self.pg_database = f"chatsite_bench_{os.getpid()}"
            await asyncio.to_thread(_pg_admin, f'CREATE DATABASE "{self.pg_database}"')
            self.shared_services = {
                "DATABASE_URL": f"{PG_SERVER}/{self.pg_database}",
                "REDIS_URL": REDIS_URL,
            }
        self.fake = await FakeUpstreamProcess.start(self.tmp / "fake.log")
        await self.fake.check_clock()
        args = self.args
        users = max([20, args.cpu_streams, *args.burst, *args.sweep])
        self.app = await self.start_app(users)
        self.workers = list(
            await asyncio.gather(
                *(WorkerProc.start(self.tmp / f"client{i}.log") for i in range(self.args.client_procs))
            )
        )
        log(
            f"fake upstream pid {self.fake.proc.pid}; daphne pids {self.app.pids} on {self.app.urls}; "
            f"client pids {[w.pid for w in self.workers]}"
        )

    async def stop(self) -> None:
        for worker in self.workers:
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

    async def open_sockets(self, app: ChatApp, total: int) -> list[dict]:
        k = len(self.workers)
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
                for w_index, (w, n) in enumerate(zip(self.workers, shares, strict=False))
            )
        )
        opened = sum(i["open"] for i in infos)
        if opened < total:
            errors: Counter[str] = Counter()
            for i in infos:
                errors.update(i["errors"])
            raise RuntimeError(f"only {opened} of {total} sockets opened: {dict(errors)}")
        return infos

    async def close_sockets(self) -> None:
        await asyncio.gather(*(w.call(timeout=60, op="close") for w in self.workers))

    def sample(self, app: ChatApp | None) -> Sample:
        if self.fake is None:
            raise RuntimeError("the fake upstream is not running: start() the bench first")
        cpu = {"fake": proc_cpu_seconds(self.fake.proc.pid)}
        for i, w in enumerate(self.workers):
            cpu[f"client{i}"] = proc_cpu_seconds(w.pid)
        rss = 0
        if app is not None and app.procs:
            cpu["app"] = sum(proc_cpu_seconds(pid) for pid in app.pids)
            rss = sum(proc_rss_kib(pid) for pid in app.pids)
        busy, total = machine_cpu()
        return Sample(now(), cpu, rss, busy, total)

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
    ) -> Phase:
        args = self.args
        app = app or self.app
        assert self.fake is not None and app is not None
        await self.fake.reset()
        open_info: list[dict] = []
        if mode == "app":
            open_info = await self.open_sockets(app, streams)
            await self.app_stats(app, reset=True)
        k = len(self.workers)
        t0 = now() + 1.0
        spread = args.spread
        shards: list[list[dict]] = [[] for _ in range(k)]
        for i in range(streams):
            key = f"{label}-{i}"
            shards[i % k].append(
                {
                    "key": key,
                    "model": f"fake?tokens={tokens}&rate={args.rate:g}&key={key}",
                    "tokens": tokens,
                    "at": t0 + i * spread / streams,
                }
            )
        duration = spread + tokens / args.rate
        deadline = t0 + duration * 2 + 20
        if deadline > self.deadline:
            raise TimeoutError(f"--time-limit {args.time_limit:.0f}s would be exceeded by phase {label}")
        extra = {"base_url": self.fake.openai_base_url} if mode == "direct" else {}
        calls = [
            asyncio.create_task(
                w.call(timeout=deadline - now() + 30, op=mode, chats=s, deadline=deadline, **extra)
            )
            for w, s in zip(self.workers, shards, strict=False)
        ]
        samples = [self.sample(app)]
        if before_t0 is not None:
            before_t0(samples[0])
        pending = set(calls)
        try:
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.1)
                samples.append(self.sample(app))
            chats = [chat for task in calls for chat in task.result()]
        finally:
            for task in calls:
                task.cancel()
            if mode == "app":
                with contextlib.suppress(Exception):
                    await self.close_sockets()
        records = {r["key"]: r for r in await self.fake.records(label + "-")}
        stats = await self.app_stats(app, reset=True, since=t0) if mode == "app" else None
        result = Phase(
            label, mode, streams, tokens, args.rate, spread, t0, chats, records, samples, stats, open_info
        )
        result.metrics = analyze(result)
        if mode == "app" and result.metrics["window"]:
            ws, we = result.metrics["window"]
            result.metrics["loop_lag_window"] = (await self.app_stats(app, since=ws, until=we))["loop_lag"]
        log(summary_line(result))
        await asyncio.sleep(args.cooldown)
        return result

    async def pair(self, label: str, streams: int, tokens: int) -> tuple[Phase, Phase]:
        direct = await self.phase(f"{label}d", "direct", streams, tokens)
        app = await self.phase(f"{label}a", "app", streams, tokens)
        return direct, app

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
            await self.phase("memwarm", "app", 10, 10, app=app)
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
    gaps: list[float] = []
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
    gaps_window: list[float] = []
    relay_window: list[float] = []
    for chat in p.chats:
        if chat["err"]:
            errors[chat["err"]] += 1
        times, counts = chat["times"], chat["counts"]
        frames += len(times)
        per_token = [t for t, n in zip(times, counts, strict=False) for _ in range(n)]
        tokens += len(per_token)
        arrivals.extend(per_token)
        if per_token and chat["sent"] is not None:
            ttft.append(per_token[0] - chat["sent"])
            stream_seconds.append(per_token[-1] - per_token[0])
        gaps.extend(b - a for a, b in itertools.pairwise(per_token))
        gaps_window.extend(b - a for a, b in itertools.pairwise(per_token) if a >= ws and b <= we)
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
    m["completed"] = sum(1 for c in p.chats if not c["err"])
    m["errors"] = dict(errors)
    m["ttft"] = Stats.of(_ms(ttft))
    m["gap"] = Stats.of(_ms(gaps))
    m["gap_window"] = Stats.of(_ms(gaps_window))
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

    samples = p.samples
    window = None
    if we - ws >= 1.0:
        a = next((s for s in samples if s.t >= ws), None)
        b = next((s for s in reversed(samples) if s.t <= we), None)
        if a is not None and b is not None and b.t - a.t >= 0.8:
            window = (a, b)
    m["window"] = (window[0].t, window[1].t) if window else None

    def per_1k(a: Sample, b: Sample, toks: int) -> dict[str, float]:
        out = {}
        for role in b.cpu:
            if role in a.cpu:
                out[role] = (b.cpu[role] - a.cpu[role]) / toks * 1000 if toks else math.nan
        out["clients"] = sum(v for r, v in out.items() if r.startswith("client"))
        return out

    def cpu_share(a: Sample, b: Sample) -> dict[str, float]:
        span = b.t - a.t
        out = {r: (b.cpu[r] - a.cpu[r]) / span for r in b.cpu if r in a.cpu}
        out["clients"] = sum(v for r, v in out.items() if r.startswith("client"))
        out["machine_busy"] = (b.busy - a.busy) / (b.total - a.total) if b.total > a.total else math.nan
        # CPU used by processes other than ours (the machine is shared), in cores.
        ours = (
            sum(v for r, v in out.items() if r in ("app", "fake") or r.startswith("client")) - out["clients"]
        )
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
    whole_a, whole_b = samples[0], samples[-1]
    m["cpu_per_1k_whole"] = per_1k(whole_a, whole_b, tokens)
    m["cpu_share_whole"] = cpu_share(whole_a, whole_b)
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
    cpu = m["cpu_per_1k"]
    role = "app" if p.mode == "app" else "clients"
    return (
        f"{p.label:>10} {p.mode:6} C={p.streams:<4} T={p.tokens:<3} completed {m['completed']}/{p.streams} "
        f"{m['errors'] or ''} TTFT p50/p95 {m['ttft'].median:.1f}/{m['ttft'].p95:.1f} ms, "
        f"gap p50/p99 {m['gap'].median:.1f}/{m['gap'].p99:.1f} ms, "
        f"{role} CPU/1k {cpu.get(role, math.nan):.3f} s, clients {cpu.get('clients', math.nan):.3f}, "
        f"fake {cpu.get('fake', math.nan):.3f}, machine busy {m['cpu_share'].get('machine_busy', math.nan):.0%}"
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


def burst_table(direct: Phase, app: Phase) -> list[str]:
    d, a = direct.metrics, app.metrics
    c = app.streams
    added50 = a["ttft"].median - d["ttft"].median
    added95 = a["ttft"].p95 - d["ttft"].p95
    gap_ratio99 = _ratio(a["gap"].p99, d["gap"].p99)
    gap_ratio50 = _ratio(a["gap"].median, d["gap"].median)
    return [
        "| figure | direct client | via the app | app vs direct | target | met |",
        "|---|--:|--:|--:|--:|:-:|",
        f"| completed | {d['completed']} of {c} | {a['completed']} of {c} | | {c} of {c} "
        f"| {_ok(a['completed'] == c)} |",
        f"| failures by kind | {_errors(d)} | {_errors(a)} | | none | |",
        f"| time to first token p50 (ms) | {_f(d['ttft'].median)} | {_f(a['ttft'].median)} "
        f"| {added50:+.1f} | | |",
        f"| time to first token p95 (ms) | {_f(d['ttft'].p95)} | {_f(a['ttft'].p95)} | {added95:+.1f} "
        f"| ≤ +{TARGET_TTFT_ADDED_P95_MS:.0f} | {_ok(added95 <= TARGET_TTFT_ADDED_P95_MS)} |",
        f"| time to first token p99 / max (ms) | {_f(d['ttft'].p99)} / {_f(d['ttft'].max)} "
        f"| {_f(a['ttft'].p99)} / {_f(a['ttft'].max)} | | | |",
        f"| inter-token delay p50 (ms) | {_f(d['gap'].median)} | {_f(a['gap'].median)} "
        f"| {_f(gap_ratio50, 2)}x | | |",
        f"| inter-token delay p99 (ms) | {_f(d['gap'].p99)} | {_f(a['gap'].p99)} | {_f(gap_ratio99, 2)}x "
        f"| ≤ {TARGET_GAP_P99_RATIO}x | {_ok(gap_ratio99 <= TARGET_GAP_P99_RATIO)} |",
        f"| inter-token delay p99, steady window only (ms) | {_f(d['gap_window'].p99)} "
        f"| {_f(a['gap_window'].p99)} | {_f(_ratio(a['gap_window'].p99, d['gap_window'].p99), 2)}x | | |",
        f"| relay delay per token p50 / p99 (ms) | {_f(d['relay'].median)} / {_f(d['relay'].p99)} "
        f"| {_f(a['relay'].median)} / {_f(a['relay'].p99)} | | | |",
        f"| relay delay p50 / p99, steady window only (ms) | {_f(d['relay_window'].median)} / "
        f"{_f(d['relay_window'].p99)} | {_f(a['relay_window'].median)} / {_f(a['relay_window'].p99)} | | | |",
        f"| app: send → `ack` p50 / p95 (ms) | | {_f(a['to_ack'].median)} / {_f(a['to_ack'].p95)} | | | |",
        f"| request sent → fake has it p50 / p95 (ms) | {_f(d['to_upstream'].median)} / "
        f"{_f(d['to_upstream'].p95)} | {_f(a['to_upstream'].median)} / {_f(a['to_upstream'].p95)} | | | |",
        f"| frames per token | 1.00 | {_f(a['frames_per_token'], 2)} | | | |",
        f"| the fake's own lateness p99 (ms) | {_f(d['fake_late'].p99)} | {_f(a['fake_late'].p99)} | | | |",
        *_cpu_rows(d, a),
    ]


def _cpu_rows(d: dict, a: dict) -> list[str]:
    dc, ac = d["cpu_per_1k"], a["cpu_per_1k"]
    ds, as_ = d["cpu_share"], a["cpu_share"]
    if not ac:
        return [
            "| CPU (steady window) | - | - (no moment when all streams ran at once: see the CPU section) "
            "| | | |"
        ]
    return [
        f"| steady window (s) / tokens in it | {_f(d.get('window_seconds', math.nan))} / {d['window_tokens']} "
        f"| {_f(a.get('window_seconds', math.nan))} / {a['window_tokens']} | | | |",
        f"| app (daphne) CPU s per 1,000 tokens | | {_f(ac.get('app'), 3)} | | ≤ {TARGET_CPU_PER_1K} "
        f"| {_ok(ac.get('app', math.inf) <= TARGET_CPU_PER_1K)} |",
        f"| client processes CPU s per 1,000 tokens | {_f(dc.get('clients'), 3)} | {_f(ac.get('clients'), 3)} "
        f"| | | |",
        f"| fake upstream CPU s per 1,000 tokens | {_f(dc.get('fake'), 3)} | {_f(ac.get('fake'), 3)} | | | |",
        f"| CPU use (cores): app / clients / fake | - / {_f(ds.get('clients'), 2)} / {_f(ds.get('fake'), 2)} "
        f"| {_f(as_.get('app'), 2)} / {_f(as_.get('clients'), 2)} / {_f(as_.get('fake'), 2)} | | | |",
        f"| machine busy (all processes, both CPUs) | {_f(100 * ds.get('machine_busy', math.nan), 0)} % "
        f"| {_f(100 * as_.get('machine_busy', math.nan), 0)} % | | | |",
        f"| of which other tenants' processes (cores) | {_f(ds.get('others'), 2)} | {_f(as_.get('others'), 2)} "
        f"| | | |",
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
        if pt["gap_ratio_p99"] > TARGET_GAP_P99_RATIO:
            reasons.append(f"inter-token p99 {pt['gap_ratio_p99']:.2f}x > {TARGET_GAP_P99_RATIO}x")
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
                "direct_gap_p99": d["gap"].p99,
                "app_gap_p99": a["gap"].p99,
                "gap_ratio_p99": _ratio(a["gap"].p99, d["gap"].p99),
                "app_cpu_1k": a["cpu_per_1k"].get("app", math.nan),
                "app_cores_whole": a["cpu_share_whole"].get("app", math.nan),
                "app_cpu_1k_whole": a["cpu_per_1k_whole"].get("app", math.nan),
                "direct_client_cpu_1k": d["cpu_per_1k"].get("clients", math.nan),
                "app_cores": a["cpu_share"].get("app", a["cpu_share_whole"].get("app", math.nan)),
                "busy": a["cpu_share"].get(
                    "machine_busy", a["cpu_share_whole"].get("machine_busy", math.nan)
                ),
                "others": a["cpu_share"].get("others", a["cpu_share_whole"].get("others", math.nan)),
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
    ax.axhline(TARGET_TTFT_ADDED_P95_MS, color="red", lw=0.8, ls=":", label="target: added ≤ 100 ms")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_title("time to first token, p95 (ms)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(xs, [p["direct_gap_p99"] for p in points], "o-", label="direct client")
    ax.plot(xs, [p["app_gap_p99"] for p in points], "s-", label="via the app")
    ax2 = ax.twinx()
    ax2.plot(xs, [p["gap_ratio_p99"] for p in points], "^--", color="gray", label="ratio app / direct")
    ax2.axhline(TARGET_GAP_P99_RATIO, color="red", lw=0.8, ls=":")
    ax2.set_ylabel("ratio (target ≤ 1.2, red)")
    ax.set_title("inter-token delay seen by clients, p99 (ms)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1][0]
    ax.plot(xs, [p["app_cpu_1k"] for p in points], "s-", label="app (daphne), steady window")
    ax.plot(xs, [p["app_cpu_1k_whole"] for p in points], "s:", label="app, whole phase (incl. start/finish)")
    ax.plot(xs, [p["direct_client_cpu_1k"] for p in points], "o-", label="direct client (httpx-sse)")
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
        f"- Date: {info['date']}; code: `{info.get('revision', '?')}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']} (the machine is shared)",
        f"- App: Python {app_v.get('python', '?')}, daphne {app_v.get('daphne', '?')}, "
        f"Django {app_v.get('django', '?')}, Channels {app_v.get('channels', '?')}, "
        f"Twisted {app_v.get('twisted', '?')}, httpx {app_v.get('httpx', '?')}",
        f"- Clients: Python {info['client_python']}, httpx {info['httpx']}, httpx-sse {info['httpx_sse']}, "
        f"websockets {info['websockets']}; {args.client_procs} client processes",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Setup: the fake upstream, chatsite and the clients each run in their own processes on this "
        "machine. chatsite runs under daphne as `benchmarks.instrumented_asgi:application` (the real app "
        "plus a database-write counter, an event-loop lag probe and a stats URL; no app code changed), "
        f"with `DJANGO_DEBUG=0`, {storage} and default "
        "coalescing/checkpoint settings (except those named in the heading). Each chat is its own logged-in WebSocket (one per chat, like a "
        "browser tab per chat), opened before the burst; the direct client is httpx + httpx-sse, one "
        "`AsyncClient` per client process. Chats alternate between the "
        f"{args.client_procs} client processes so that no client process is the bottleneck (their CPU "
        "use is in the tables). In a phase, C chats start evenly spread over "
        f"{args.spread:g} s, each `fake?tokens=T&rate={args.rate:g}`; direct and app phases run one "
        "after the other in the same run against the same fake. Times in ms. *Inter-token delay* is the "
        "gap between consecutive tokens as the client receives them (a delta carrying k tokens delivers "
        "k tokens at once); *relay delay* is client arrival minus the fake's write time of the same "
        "token. The *steady window* runs from the moment every stream has its first token + 0.5 s to the "
        "first stream's last token - 0.5 s, as the phase's client saw them (none when the streams never all "
        "overlap because the app fell behind); CPU seconds are utime+stime from `/proc/<pid>/stat` over that window, divided by the "
        'tokens the clients received in it. "The fake\'s own lateness" is how far behind its own '
        "schedule the fake wrote tokens: when it is high, the machine (not the app) is the bottleneck.",
        "",
    ]
    bursts: dict[int, tuple[Phase, Phase]] = res.get("burst", {})
    if bursts:
        lines += ["### Burst: C chats started within 2 s", ""]
        for c, (d, a) in sorted(bursts.items()):
            lines += [f"**{c} chats**, {a.tokens} tokens each at {a.rate:g} tokens/s:", ""]
            lines += burst_table(d, a)
            lag = a.metrics.get("loop_lag") or {}
            wlag = a.metrics.get("loop_lag_window") or {}
            lines += [
                "",
                f"daphne's event loop lag (how late a 10 ms sleep woke up): whole phase p50 {_lag(lag, 'p50_ms')} "
                f"/ p99 {_lag(lag, 'p99_ms')} / max {_lag(lag, 'max_ms')} ms; steady window p50 "
                f"{_lag(wlag, 'p50_ms')} / p99 {_lag(wlag, 'p99_ms')} / max {_lag(wlag, 'max_ms')} ms.",
                "",
            ]
    cpu: tuple[Phase, Phase] | None = res.get("cpu")
    if cpu:
        d, a = cpu
        dc, ac = d.metrics["cpu_per_1k"], a.metrics["cpu_per_1k"]
        dw, aw = d.metrics["cpu_per_1k_whole"], a.metrics["cpu_per_1k_whole"]
        lines += [
            f"### CPU per 1,000 tokens relayed ({a.streams} streams × {a.rate:g} tokens/s)",
            "",
            f"{a.streams} chats of {a.tokens} tokens ({a.tokens / a.rate:g} s each), started within "
            f"{a.spread:g} s; steady window {_f(a.metrics.get('window_seconds', math.nan))} s "
            f"({a.metrics['window_tokens']} tokens via the app, {d.metrics['window_tokens']} direct).",
            "",
            "| process | CPU s per 1,000 tokens, steady window | whole phase (incl. reply start and finish) "
            "| target | met |",
            "|---|--:|--:|--:|:-:|",
            f"| **app (daphne)** | **{_f(ac.get('app'), 3)}** | {_f(aw.get('app'), 3)} | ≤ {TARGET_CPU_PER_1K} "
            f"| {_ok(ac.get('app', math.inf) <= TARGET_CPU_PER_1K)} |",
            f"| direct client (httpx + httpx-sse), for reference | {_f(dc.get('clients'), 3)} "
            f"| {_f(dw.get('clients'), 3)} | | |",
            f"| WebSocket clients (`websockets`) | {_f(ac.get('clients'), 3)} | {_f(aw.get('clients'), 3)} | | |",
            f"| fake upstream (during the app phase) | {_f(ac.get('fake'), 3)} | {_f(aw.get('fake'), 3)} | | |",
            "",
            f"During the app phase's window daphne used {_f(a.metrics['cpu_share'].get('app'), 2)} of a core "
            f"and the machine was {_f(100 * a.metrics['cpu_share'].get('machine_busy', math.nan), 0)} % busy "
            f"({_f(a.metrics['cpu_share'].get('others'), 2)} cores used by other tenants' processes); "
            f"completed {a.metrics['completed']} of {a.streams} ({_errors(a.metrics)}), "
            f"inter-token p99 {_f(a.metrics['gap'].p99)} ms vs {_f(d.metrics['gap'].p99)} ms direct "
            f"(steady window only: {_f(a.metrics['gap_window'].p99)} vs {_f(d.metrics['gap_window'].p99)} ms; "
            f"daphne's loop lag p99 {_lag(a.metrics.get('loop_lag_window'), 'p99_ms')} ms), "
            f"{_f(a.metrics['frames_per_token'], 2)} frames per token.",
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
            + '. CPU "steady" is over the window in which all C streams were receiving '
            "tokens; when the app fell so far behind that its streams never all overlapped, there is no "
            'such window ("-") and only the whole-phase figure (starts, streaming and finishes) is given. '
            "Daphne cores and machine busy are over the steady window, else the whole phase.",
            "",
            "![scaling](benchmarks/load-scaling.png)",
            "",
            "| C | completed direct / app | TTFT p95 direct / app / added (ms) | inter-token p99 direct / app "
            "(ms), ratio | app CPU s/1k tokens (steady / whole) | direct client CPU s/1k | daphne cores "
            "| machine busy (other tenants, cores) | loop lag p99 phase / steady (ms) | fake lateness p99 (ms) "
            "| frames/token |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for pt in points:
            lines.append(
                f"| {pt['streams']} | {pt['direct_completed']} / {pt['app_completed']} "
                f"| {_f(pt['direct_ttft_p95'])} / {_f(pt['app_ttft_p95'])} / {_f(pt['ttft_added_p95'])} "
                f"| {_f(pt['direct_gap_p99'])} / {_f(pt['app_gap_p99'])}, {_f(pt['gap_ratio_p99'], 2)}x "
                f"| {_f(pt['app_cpu_1k'], 3)} / {_f(pt['app_cpu_1k_whole'], 3)} | {_f(pt['direct_client_cpu_1k'], 3)} "
                f"| {_f(pt['app_cores'], 2)} | {_f(100 * pt['busy'], 0)} % ({_f(pt['others'], 2)}) | {_f(pt['loop_lag_p99'])} / {_f(pt['loop_lag_window_p99'])} "
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
            f"{args.cpu_streams}, TTFT p95 {_f(pm['ttft'].p95)} ms, inter-token p99 {_f(pm['gap'].p99)} ms). "
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


SECTIONS = ("burst", "cpu", "memory", "sweep")


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
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="daphne processes (default 1); more than one run on PostgreSQL and Redis, chats round-robin",
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
        "--time-limit", type=float, default=900.0, help="give up after S seconds (default 900)"
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
        args.no_doc = True
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
