"""chatsite's ASGI application with measurement hooks, for the load benchmark only.

Serve it instead of ``chatsite.asgi:application``::

    daphne -b 127.0.0.1 -p 8000 benchmarks.instrumented_asgi:application

It changes no app code and no setting. It adds:

* **a database write counter**: a ``connection_created`` signal handler installs
  ``connection.execute_wrapper`` on every connection the process opens (the
  event loop's and every ``database_sync_to_async`` thread's), which counts
  the statements that write (``INSERT``, ``UPDATE``, ``DELETE``, ``REPLACE``)
  by verb and table, and the write transactions (``BEGIN ...``: with SQLite's
  ``transaction_mode=IMMEDIATE`` each one takes the database's write lock);
* **an event-loop lag probe**: a task that sleeps 10 ms at a time and records
  how late it wakes up (how long the loop was busy elsewhere);
* **one HTTP view**, ``GET /__bench__/stats`` (``?reset=1`` zeroes the write
  counters after reading them; ``?since=T&until=T`` limits the loop-lag
  percentiles to samples taken between two ``time.monotonic()`` readings, which
  on Linux are comparable across processes), answered before Django sees the
  request; every other request goes to chatsite unchanged.

Each hook costs a few microseconds per SQL statement and ~100 wake-ups per
second, negligible next to what is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import Counter, deque
from urllib.parse import parse_qs

from django.db.backends.signals import connection_created

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

STATS_PATH = "/__bench__/stats"
WRITE_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_TABLE = re.compile(
    r'^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+"?(\w+)"?', re.I
)


class WriteCounter:
    """Counts write statements (by verb and table) and write transactions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statements: Counter[str] = Counter()
        self.transactions = 0
        self.queries = 0  # every statement, writes or not
        self.verbs: Counter[str] = Counter()  # every statement by its first word

    def __call__(self, execute, sql, params, many, context):  # execute_wrapper protocol
        head = sql.lstrip()[:40].upper()
        verb = head.split(None, 1)[0] if head else ""
        key = None
        if verb in WRITE_VERBS:
            match = _TABLE.match(sql)
            key = f"{verb} {match.group(1) if match else '?'}"
        with self._lock:
            self.queries += 1
            self.verbs[verb] += 1
            if key is not None:
                self.statements[key] += 1
            elif verb == "BEGIN":
                self.transactions += 1
        return execute(sql, params, many, context)

    def snapshot(self, reset: bool = False) -> dict:
        with self._lock:
            data = {
                "writes": sum(self.statements.values()),
                "statements": dict(self.statements),
                "transactions": self.transactions,
                "queries": self.queries,
                "verbs": dict(self.verbs),
            }
            if reset:
                self.verbs.clear()
                self.statements.clear()
                self.transactions = 0
                self.queries = 0
        return data


counter = WriteCounter()


def _install(sender, connection, **kwargs) -> None:
    if counter not in connection.execute_wrappers:
        connection.execute_wrappers.append(counter)


connection_created.connect(_install, dispatch_uid="benchmarks.instrumented_asgi")


class LoopLag:
    """How late a 10 ms sleep wakes up on the server's event loop, with the time of each sample."""

    INTERVAL = 0.010
    MAX_SAMPLES = 120_000  # 20 minutes at 100 a second

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float, float | None]] = deque(maxlen=self.MAX_SAMPLES)
        self.task: asyncio.Task | None = None

    def ensure_started(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="bench-loop-lag")

    async def _run(self) -> None:
        from conversations.realtime.registry import registry  # the app's, once it is loaded

        while True:
            before = time.monotonic()
            await asyncio.sleep(self.INTERVAL)
            after = time.monotonic()
            # The coalescing window at the time, while any reply is live.
            window = registry.window if registry.by_id else None
            self.samples.append((after, after - before - self.INTERVAL, window))

    def snapshot(self, since: float = 0.0, until: float = float("inf")) -> dict:
        """Percentiles of the samples taken between two ``time.monotonic()`` readings (the
        loop lag; ``window_*``: the coalescing window while replies were live)."""
        samples = [(lag, window) for at, lag, window in list(self.samples) if since <= at <= until]
        data = sorted(lag for lag, _ in samples)
        windows = sorted(window for _, window in samples if window is not None)

        def q(values: list[float], p: float) -> float | None:
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3) if values else None

        return {
            "n": len(data),
            "p50_ms": q(data, 0.5),
            "p99_ms": q(data, 0.99),
            "max_ms": q(data, 1.0),
            "window_p50_ms": q(windows, 0.5),
            "window_p99_ms": q(windows, 0.99),
            "window_max_ms": q(windows, 1.0),
        }


loop_lag = LoopLag()

from chatsite.asgi import application as chatsite_application  # noqa: E402 - after the signal hook


async def _stats(scope, receive, send) -> None:
    query = parse_qs(scope.get("query_string", b"").decode())
    reset = query.get("reset", [""])[0] == "1"
    since = float(query.get("since", ["0"])[0])
    until = float(query.get("until", ["inf"])[0])
    body = json.dumps(
        {"pid": os.getpid(), "db": counter.snapshot(reset), "loop_lag": loop_lag.snapshot(since, until)}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    loop_lag.ensure_started()
    if scope["type"] == "http" and scope.get("path") == STATS_PATH:
        await _stats(scope, receive, send)
        return
    await chatsite_application(scope, receive, send)
