"""Real server processes for tests: daphne serving chatsite, on loopback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM a process this test started, and SIGKILL it if it has not gone in 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def manage(env: dict[str, str], *args: str) -> None:
    """``manage.py <args>`` with exactly ``env``, as a server of these tests runs it."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def create_user(env: dict[str, str], username: str, password: str) -> None:
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({username!r}, password={password!r})",
    )


class Daphne:
    """``python -m daphne chatsite.asgi:application`` with its own SQLite database."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        *,
        command: list[str] | None = None,
        base_env: dict[str, str] | None = None,
    ) -> None:
        """``port``: listen there (e.g. a restarted server on its predecessor's port); default a free one.

        ``command``: the whole command line instead of ``python -m daphne ...`` on ``port``
        (e.g. the systemd unit's ExecStart); ``base_env``: the whole environment instead
        of this process's plus the development defaults (``env`` still goes on top).
        """
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = data_dir / "chatsite.sqlite3"
        self.log = data_dir / f"daphne-{self.port}.log"
        if base_env is not None:
            self.env = dict(base_env)
        else:
            self.env = {
                **os.environ,
                "CHATSITE_NO_BOOTSTRAP": "1",
                "CHATSITE_DATA_DIR": str(data_dir),
                "DJANGO_DEBUG": "true",
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
                "CHATSITE_LOCAL_MODEL": "off",
            }
            # The embedded defaults (SQLite, in-memory layer) unless the caller names services.
            self.env.pop("DATABASE_URL", None)
            self.env.pop("REDIS_URL", None)
        self.env.update(env or {})
        self.command = command or [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "chatsite.asgi:application",
        ]
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> None:
        manage(self.env, *args)

    def create_user(self, username: str, password: str) -> None:
        create_user(self.env, username, password)

    def start(self, *, migrate: bool = True, serve: bool = False) -> Daphne:
        """``serve``: start it with ``manage.py serve`` (which migrates and sets daphne's
        options itself) instead of ``self.command``."""
        if migrate:
            self.manage("migrate", "-v0")
        if serve:
            self.spawn(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            )
        else:
            self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                # As a TLS-terminating proxy would ask (no redirect to https outside DEBUG).
                response = httpx.get(f"{self.url}/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=1)
                if response.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("daphne did not start:\n" + self.log.read_text())
            time.sleep(0.1)

    def spawn(self, command: list[str] | None = None) -> None:
        """Start the process (``self.command`` unless told otherwise) and return at
        once: not one request is made to it."""
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            command or self.command,
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def stop(self) -> None:
        stop_process(self.proc)

    def login_cookie(self, username: str, password: str) -> str:
        """Log in through the real form; returns the Cookie header value."""
        with httpx.Client(base_url=self.url) as client:
            page = client.get("/accounts/login/")
            token = csrf_token(page.text)
            response = client.post(
                "/accounts/login/",
                data={"username": username, "password": password, "csrfmiddlewaretoken": token},
                headers={"Referer": f"{self.url}/accounts/login/"},
            )
            assert response.status_code == 302, response.text[:500]
            return "; ".join(f"{k}={v}" for k, v in client.cookies.items())

    def query(self, sql: str, *params):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as conn:
            return conn.execute(sql, params).fetchall()


class RedisServer:
    """A private ``redis-server`` on loopback that a test can stop, freeze and restart."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = (data_dir or Path(tempfile.gettempdir())) / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        """Start (or restart, on the same port), empty: nothing is saved."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start:\n" + self.log.read_text())
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
        self.kill()


@contextlib.contextmanager
def two_daphnes(env: dict[str, str], *, prefix: str, user: tuple[str, str]):
    """Two daphne processes on one data directory and the services ``env`` names
    (a PostgreSQL ``DATABASE_URL``, a ``REDIS_URL``), with ``user`` created."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    servers = [Daphne(data_dir, env), Daphne(data_dir, env)]
    try:
        for server in servers:
            server.start()
        servers[0].create_user(*user)
        yield servers
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(server_url: str, prefix: str):
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped afterwards.

    Yields its URL (``server_url`` with the database name replaced).
    """
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def csrf_token(html: str) -> str:
    """The CSRF token of the form in ``html`` (the login page)."""
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def saved(server: Daphne, reply_id: str):
    """(content, status, last_seq) of a reply in ``server``'s PostgreSQL database."""
    import psycopg

    with psycopg.connect(server.env["DATABASE_URL"]) as conn:
        return conn.execute(
            "select content, status, last_seq from conversations_message where id = %s", (reply_id,)
        ).fetchone()


# --- WebSocket clients for the process tests -----------------------------------


async def open_socket(server: Daphne, username: str, password: str):
    """A logged-in WebSocket to ``server``, through the real login form."""
    import asyncio

    import websockets

    from conversations.realtime import protocol

    cookie = await asyncio.to_thread(server.login_cookie, username, password)
    return await websockets.connect(
        server.url.replace("http", "ws") + protocol.PATH,
        additional_headers={"Cookie": cookie, "Origin": server.url},
        max_size=None,
    )


async def recv(ws, timeout: float = 10.0) -> dict:
    """The next frame, checked against the protocol's declaration."""
    import asyncio
    import json

    from conversations.realtime import protocol

    frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    protocol.check_server_frame(frame)
    return frame


async def until(ws, kind: str, timeout: float = 15.0) -> list[dict]:
    """Frames up to and including the first of type ``kind``."""
    frames: list[dict] = []
    while not frames or frames[-1]["type"] != kind:
        try:
            frames.append(await recv(ws, timeout))
        except TimeoutError:
            raise AssertionError(f"no {kind!r} frame; got {frames}") from None
    return frames


def text_of(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")
