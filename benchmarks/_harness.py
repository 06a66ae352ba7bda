"""Reusable pieces for benchmarks: processes, login, a WebSocket client, statistics.

Process layout (chosen so that the processes perturb each other least on a
small, shared machine):

* the **fake upstream** runs in its own process (``python -m benchmarks._harness
  fake``). It is :class:`conversations.testing.fakeupstream.FakeUpstream` (its server
  thread and loop), and the child's main thread answers control requests on
  stdin/stdout (JSON lines) with the per-request records (token write times,
  disconnect time). Its main thread is blocked in a read between requests, so
  it does not compete for the child's GIL while tokens are written;
* **chatsite** runs under daphne in its own process, as in production, with a
  fresh SQLite database in a temporary ``CHATSITE_DATA_DIR``;
* the **clients** (the direct httpx client and the WebSocket client) run on one
  asyncio loop in the benchmark process, which has no other thread, so neither
  the fake nor the app shares a GIL with the code being timed.

Clocks: every timestamp is ``time.monotonic()``. On Linux that is
``clock_gettime(CLOCK_MONOTONIC)``, one system-wide clock, so times taken in
the fake's process and in the benchmark process are directly comparable.
:func:`check_monotonic_clock` checks the implementation and
:meth:`FakeUpstreamProcess.check_clock` checks the ordering across the two
processes at run time.

Nothing here imports Django: the benchmark process only speaks HTTP and
WebSocket, like a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

now = time.monotonic


def python() -> str:
    """The project's interpreter (its venv), else the running one."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_monotonic_clock() -> str:
    """Return the monotonic clock's implementation; fail unless it is system-wide."""
    info = time.get_clock_info("monotonic")
    if sys.platform.startswith("linux") and "CLOCK_MONOTONIC" not in info.implementation:
        raise RuntimeError(f"time.monotonic() is {info.implementation}, not CLOCK_MONOTONIC")
    if not sys.platform.startswith("linux"):
        raise RuntimeError("cross-process timings need Linux's system-wide CLOCK_MONOTONIC")
    return info.implementation


# --------------------------------------------------------------------------
# Statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    p95: float
    p99: float
    min: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        data = sorted(v for v in values if v is not None and not math.isnan(v))
        if not data:
            return cls(0, *([math.nan] * 6))
        return cls(
            len(data),
            percentile(data, 50),
            percentile(data, 95),
            percentile(data, 99),
            data[0],
            data[-1],
            sum(data) / len(data),
        )


# --------------------------------------------------------------------------
# The machine


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _venv_versions() -> dict[str, str]:
    """Versions of the packages the app runs with, asked from the app's interpreter."""
    code = (
        "import json, platform; from importlib import metadata as m\n"
        "v = {'python': platform.python_version()}\n"
        "for d in ('daphne', 'django', 'channels', 'twisted', 'httpx'):\n"
        "    try: v[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: v[d] = '?'\n"
        "print(json.dumps(v))"
    )
    try:
        out = subprocess.run([python(), "-c", code], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)
    except (subprocess.SubprocessError, ValueError, OSError):
        return {}


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "client_python": platform.python_version(),
        "httpx": _version("httpx"),
        "httpx_sse": _version("httpx-sse"),
        "websockets": _version("websockets"),
    }
    info["app"] = _venv_versions()
    return info


#: What the benchmarks write themselves (their sections, plots and profiles): a change there
#: is the run's own output, not code, so it does not make a tree "dirty" for a figure.
OUTPUTS = ("docs/benchmarks.md", "docs/benchmarks")


def git_revision() -> str:
    """``git describe --always`` of the checked-out tree, ``-dirty`` when it has uncommitted changes.

    Like ``git describe --always --dirty``, except that the benchmarks' own
    outputs (:data:`OUTPUTS`) do not count: the suite rewrites
    ``docs/benchmarks.md`` section by section, and the second script of a run
    must not call the tree the first one measured dirty. Untracked files do
    not count either (as for git). "?" outside a git checkout.
    """
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--abbrev=7"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *(f":(exclude){path}" for path in OUTPUTS),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev or "?") + ("-dirty" if dirty else "")


def is_dirty(revision: str) -> bool:
    return revision.endswith("-dirty")


def add_allow_dirty_argument(parser: Any) -> None:
    """``--allow-dirty``: the option every script that writes ``docs/benchmarks.md`` takes."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write the docs even from a tree with uncommitted changes (the section is then marked)",
    )


def check_tree_for_doc(parser: Any, *, write_doc: bool, allow_dirty: bool) -> str:
    """The revision; a parser error before anything runs if it would write figures of a dirty tree.

    Figures in the docs must come from a commit someone can check out: a
    section written from uncommitted changes is refused unless
    ``--allow-dirty``, and then :func:`write_doc_section` marks it.
    """
    revision = git_revision()
    if write_doc and is_dirty(revision) and not allow_dirty:
        parser.error(
            f"the work tree has uncommitted changes ({revision}): commit them first so that the figures "
            "name a commit, or pass --allow-dirty (the section is then marked), or --no-doc"
        )
    return revision


def mark_dirty(section: str, revision: str) -> str:
    """``section`` with a warning under its heading when ``revision`` is a dirty tree."""
    if not is_dirty(revision):
        return section
    note = (
        f"> **Not a result:** measured on a tree with uncommitted changes (`{revision}`, written with "
        "`--allow-dirty`); re-run on a commit before quoting these figures.\n\n"
    )
    head, sep, rest = section.partition("\n")
    if head.startswith("#") and sep:
        return f"{head}\n\n{note}{rest.lstrip(chr(10))}"
    return note + section


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (from /proc/<pid>/stat); NaN if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def proc_rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (VmRSS of /proc/<pid>/status); 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs (from /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return math.nan, math.nan
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def write_doc_section(
    path: Path, start_mark: str, end_mark: str, section: str, intro: str, *, revision: str | None = None
) -> None:
    """Replace the text between two marker comments in ``path`` (append the block if absent).

    A section measured on a dirty tree (``revision``, else the tree now; see
    :func:`check_tree_for_doc`) is marked as such.
    """
    section = mark_dirty(section, revision or git_revision())
    block = f"{start_mark}\n{section}{end_mark}"
    if path.exists():
        text = path.read_text()
        start, end = text.find(start_mark), text.find(end_mark)
        if 0 <= start < end:
            text = text[:start] + block + text[end + len(end_mark) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = intro + "\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# Processes


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM one process we started (by its pid), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def child_pipes(proc: asyncio.subprocess.Process) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    """The stdin and stdout of a child started with ``stdin=PIPE, stdout=PIPE``."""
    if proc.stdin is None or proc.stdout is None:
        raise RuntimeError(f"process {proc.pid} was not started with stdin and stdout pipes")
    return proc.stdin, proc.stdout


class FakeUpstreamProcess:
    """The fake upstream in a child process, with its request records reachable.

    ``await FakeUpstreamProcess.start(log_path)``; ``await fake.record(key)``
    returns the record of the request whose scenario ``key`` is ``key`` (put
    ``&key=...`` in the model name to tag a request).
    """

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.stdin, self.stdout = child_pipes(proc)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.openai_base_url = self.url + "/v1"
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, log_path: Path, timeout: float = 30.0) -> FakeUpstreamProcess:
        log = open(log_path, "ab")  # noqa: ASYNC230 - before any timing; handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                python(),
                "-m",
                "benchmarks._harness",
                "fake",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=16 * 1024 * 1024,
            )
        finally:
            log.close()
        try:
            async with asyncio.timeout(timeout):
                line = await child_pipes(proc)[1].readline()
            ready = json.loads(line)
            return cls(proc, int(ready["port"]))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"the fake upstream did not start (see {log_path})") from None

    async def call(self, timeout: float = 30.0, **request: Any) -> Any:
        async with self._lock, asyncio.timeout(timeout):
            self.stdin.write((json.dumps(request) + "\n").encode())
            await self.stdin.drain()
            line = await self.stdout.readline()
        if not line:
            raise RuntimeError("the fake upstream process went away")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"fake upstream control: {answer['error']}")
        return answer["result"]

    async def record(self, key: str, *, wait_disconnected: float = 0.0, wait_found: float = 5.0) -> dict:
        """The request tagged ``key``: path, status, started_at, token_times, disconnected_at, completed."""
        return await self.call(
            op="record",
            key=key,
            wait_disconnected=wait_disconnected,
            wait_found=wait_found,
            timeout=wait_disconnected + wait_found + 10,
        )

    async def records(self, prefix: str, timeout: float = 60.0) -> list[dict]:
        """Every request whose key starts with ``prefix``: key, status, started_at, token_times, ..."""
        return await self.call(op="records", prefix=prefix, timeout=timeout)

    async def reset(self) -> None:
        """Forget the recorded requests (between load phases, to keep the child small)."""
        await self.call(op="reset")

    async def check_clock(self) -> None:
        """Check that the child's monotonic clock is ours (its reading falls between two of ours)."""
        for _ in range(3):
            before = now()
            theirs = await self.call(op="now")
            after = now()
            if not before <= theirs <= after:
                raise RuntimeError(
                    f"the fake's monotonic clock is not comparable: {before} <= {theirs} <= {after} fails"
                )

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
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


def _fake_child() -> None:
    """``python -m benchmarks._harness fake``: serve, and answer control requests on stdin."""
    from conversations.testing.fakeupstream import FakeUpstream

    fake = FakeUpstream("127.0.0.1", 0)
    fake.start()

    def find(key: str, wait: float):
        deadline = now() + wait
        while True:
            for record in reversed(list(fake.requests)):
                if record.scenario is not None and record.scenario.key == key:
                    return record
            if now() >= deadline:
                return None
            time.sleep(0.002)

    def describe(record) -> dict:
        return {
            "path": record.path,
            "status": record.status,
            "model": (record.body or {}).get("model"),
            "started_at": record.started_at,
            "token_times": list(record.token_times),
            "thought_times": list(record.thought_times),
            "disconnected_at": record.disconnected_at,
            "completed": record.completed,
        }

    out = sys.stdout
    out.write(json.dumps({"port": fake.port}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            try:
                request = json.loads(line)
                op = request.get("op")
                if op == "quit":
                    break
                if op == "now":
                    result: Any = now()
                elif op == "record":
                    record = find(str(request["key"]), float(request.get("wait_found", 5.0)))
                    if record is None:
                        raise LookupError(f"no request tagged {request['key']!r}")
                    if request.get("wait_disconnected"):
                        record.wait_disconnected(float(request["wait_disconnected"]))
                    result = describe(record)
                elif op == "records":
                    # Every request whose key starts with ``prefix``, compactly (load benchmarks).
                    prefix = str(request.get("prefix", ""))
                    result = [
                        {
                            "key": r.scenario.key,
                            "status": r.status,
                            "started_at": r.started_at,
                            "token_times": list(r.token_times),
                            "disconnected_at": r.disconnected_at,
                            "completed": r.completed,
                        }
                        for r in list(fake.requests)
                        if r.scenario is not None and r.scenario.key.startswith(prefix)
                    ]
                elif op == "reset":
                    fake.reset()
                    result = None
                else:
                    raise ValueError(f"unknown op {op!r}")
                answer = {"result": result}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        fake.stop()


# --------------------------------------------------------------------------
# chatsite under daphne


SESSION_SCRIPT = """
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from importlib import import_module
User = get_user_model()
user = User.objects.create_user("bench", password="bench-password-not-secret")
users = [user]
if USERS > 1:  # more users share the first one's password hash (hashing is slow on purpose)
    User.objects.bulk_create(
        [User(username=f"bench{i}", password=user.password) for i in range(1, USERS)], batch_size=500
    )
    users += list(User.objects.exclude(pk=user.pk).order_by("pk"))
Store = import_module(settings.SESSION_ENGINE).SessionStore
for u in users:
    store = Store()
    store[SESSION_KEY] = str(u.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = u.get_session_auth_hash()
    store.create()
    print("SESSION=" + store.session_key)
"""


class ChatApp:
    """A real chatsite process: fresh data dir, migrated, one logged-in user, daphne.

    ``env`` adds or overrides environment variables (e.g. ``OPENAI_BASE_URL``;
    a ``DATABASE_URL`` or ``REDIS_URL`` given here is used, else the fresh
    SQLite database and the in-memory layer). ``processes=N`` starts N daphne
    processes on N ports over the same database, as ``docs/deploy.md`` runs
    them behind nginx: :attr:`urls` / :attr:`ws_urls` name each, :attr:`url`
    the first. Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        application: str = "chatsite.asgi:application",
        users: int = 1,
        processes: int = 1,
    ) -> None:
        self.host = host
        self.processes = max(1, processes)
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.users = max(1, users)
        self.session_keys: list[str] = []
        self.application = application
        self.port = 0
        self.secret_key = secrets.token_urlsafe(40)
        self.extra_env = env or {}
        self.data_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.session_key = ""
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/chat/"

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{port}" for port in self.ports]

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://{self.host}:{port}/ws/chat/" for port in self.ports]

    @property
    def pid(self) -> int:
        """The first (or only) daphne process's pid."""
        if self.proc is None:
            raise RuntimeError("chatsite is not running: start() it first")
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    @property
    def origin(self) -> str:
        return self.url

    @property
    def cookie(self) -> str:
        return f"sessionid={self.session_key}"

    @property
    def cookies(self) -> list[str]:
        """One session cookie per user (``users=N``); the first is :attr:`cookie`'s."""
        return [f"sessionid={key}" for key in self.session_keys]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
        env.update(
            {
                "CHATSITE_NO_BOOTSTRAP": "1",
                "CHATSITE_DATA_DIR": str(self.data_dir),
                "CHATSITE_LOCAL_MODEL": "off",
                # Each chat is a new conversation: made titles would add an upstream
                # request after every first reply, which no baseline makes.
                "CHATSITE_AUTO_TITLES": "off",
                # As in production (docs/deploy.md): DEBUG off, which also stops
                # Django from recording every SQL statement of the process.
                "DJANGO_DEBUG": "0",
                "DJANGO_SECRET_KEY": self.secret_key,  # one for all its processes and commands
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("DATABASE_URL", None)  # always the fresh SQLite database in the data dir
        env.pop("REDIS_URL", None)
        env.update(self.extra_env)
        return env

    def _manage(self, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [python(), "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, ready_timeout: float = 60.0) -> ChatApp:
        self.data_dir = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
        self.log_path = self.data_dir / "daphne.log"
        self._manage("migrate", "--noinput", "-v", "0")
        # As deployed (docs/deploy.md): with DEBUG off the pages name collected, hashed files.
        self._manage("collectstatic", "--noinput", "-v", "0")
        out = self._manage("shell", "-c", f"USERS = {self.users}\n" + SESSION_SCRIPT)
        self.session_keys = [
            line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("SESSION=")
        ]
        self.session_key = self.session_keys[0]
        daphne = Path(python()).with_name("daphne")
        command = [str(daphne)] if daphne.exists() else [python(), "-m", "daphne"]
        log = open(self.log_path, "ab")  # handed to the children
        try:
            for _ in range(self.processes):
                port = free_port(self.host)
                self.ports.append(port)
                self.procs.append(
                    subprocess.Popen(
                        [*command, "-b", self.host, "-p", str(port), self.application],
                        cwd=ROOT,
                        env=self.env(),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        finally:
            log.close()
        self.proc, self.port = self.procs[0], self.ports[0]
        for url in self.urls:
            self._wait_ready(url, ready_timeout)
        return self

    def _wait_ready(self, url: str, timeout: float) -> None:
        import httpx

        deadline = now() + timeout
        last: Exception | str = "no answer"
        while now() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"daphne exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(
                    url + "/api/models/", headers={"Cookie": self.cookie}, timeout=5, trust_env=False
                )
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"chatsite did not answer within {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        try:
            for proc in self.procs:  # self.proc is the first of them
                stop_process(proc)
        finally:
            self.proc = None
            self.procs, self.ports = [], []
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None

    def __enter__(self) -> ChatApp:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------
# A logged-in WebSocket, as a browser tab would open it


class ChatSocket:
    """One WebSocket to ``/ws/chat/``; every received frame is timestamped on arrival."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, app: ChatApp, timeout: float = 10.0) -> ChatSocket:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        ws = await connect(
            app.ws_url,
            origin=Origin(app.origin),
            additional_headers={"Cookie": app.cookie},
            open_timeout=timeout,
            max_size=2**22,
            proxy=None,
        )
        return cls(ws)

    @property
    def extensions(self) -> str:
        return ", ".join(e.name for e in self.ws.protocol.extensions) or "none"

    async def send(self, **frame: Any) -> float:
        """Send a frame; return the time taken just before it was handed to the socket."""
        text = json.dumps(frame)
        started = now()
        await self.ws.send(text)
        return started

    async def recv(self, timeout: float = 10.0) -> tuple[float, dict]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        return now(), json.loads(raw)

    async def recv_until(self, kind: str, timeout: float = 10.0) -> list[tuple[float, dict]]:
        """Frames up to and including the first of type ``kind``; an ``error`` frame raises."""
        got: list[tuple[float, dict]] = []
        deadline = now() + timeout
        while True:
            at, frame = await self.recv(max(deadline - now(), 0.001))
            got.append((at, frame))
            if frame["type"] == "error":
                raise RuntimeError(f"the app answered an error frame: {frame}")
            if frame["type"] == kind:
                return got

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["fake"]:
        _fake_child()
    else:
        sys.exit("usage: python -m benchmarks._harness fake")
