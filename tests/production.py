"""The production configuration, as docs/deploy.md describes it, on loopback.

Everything is read from the shipped files in ``docs/deploy/`` and changed only
where a test machine must differ:

- the settings are ``chatsite.env``'s, with a strong secret key, this stack's
  host, origin, database, Redis and data directory, and the fake upstream as
  the only provider;
- each daphne runs ``chatsite@.service``'s ExecStart with ``%i`` replaced by its
  port (and the venv's ``daphne`` of this checkout), in the unit's working
  directory, with only the environment a systemd service gets;
- nginx runs ``nginx.conf`` with its upstream servers, listen ports, server name
  and certificate replaced, inside the few lines a real ``/etc/nginx/nginx.conf``
  wraps around a site (``events``, ``http``, pid and temp paths);
- ``migrate`` and ``collectstatic --noinput`` run before the processes start, as
  the deploy guide says.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.processes import (
    ROOT,
    Daphne,
    RedisServer,
    create_user,
    free_port,
    manage,
    postgres_database,
    stop_process,
)

DEPLOY = ROOT / "docs" / "deploy"
ENV_FILE = DEPLOY / "chatsite.env"
UNIT_FILE = DEPLOY / "chatsite@.service"
NGINX_SITE = DEPLOY / "nginx.conf"
NGINX = "/usr/sbin/nginx"
# What systemd passes to a service besides its EnvironmentFile (no DJANGO_*, no CI).
SERVICE_ENV_KEEP = ("PATH", "LANG", "HOME", "TZ")


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile= reads them (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{number}: not a KEY=value line: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_unit(path: Path = UNIT_FILE) -> dict[str, str]:
    """The ``[Service]`` section's ``Key=value`` lines (``Environment=`` lines joined by spaces)."""
    service: dict[str, str] = {}
    section = None
    # A line ending in a backslash goes on on the next one.
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service[key] = f"{service[key]} {value}" if key == "Environment" and key in service else value
    return service


def unit_environment(path: Path = UNIT_FILE) -> dict[str, str]:
    """The unit's own ``Environment=`` assignments."""
    environment = read_unit(path).get("Environment", "")
    return dict(item.split("=", 1) for item in shlex.split(environment))


def unit_command(port: int, env: dict[str, str], path: Path = UNIT_FILE) -> list[str]:
    """The unit's ExecStart for instance ``port``, with this checkout's venv for the unit's.

    ``${NAME}`` is replaced by ``env``'s value, one word, as systemd does (a name
    the environment lacks is an error here: systemd would pass an empty word).
    The unit starts ``<WorkingDirectory>/.venv/bin/daphne``; here that is the
    ``daphne`` next to this interpreter (the shared venv).
    """
    unit = read_unit(path)
    argv = shlex.split(unit["ExecStart"].replace("%i", str(port)))
    for i, word in enumerate(argv):
        for name in re.findall(r"\$\{(\w+)\}", word):
            if name not in env:
                raise AssertionError(f"ExecStart uses ${{{name}}}, which the env file does not set")
            word = word.replace(f"${{{name}}}", env[name])
        argv[i] = word
    venv_bin = unit["WorkingDirectory"].rstrip("/") + "/.venv/bin/"
    if not argv[0].startswith(venv_bin):
        raise AssertionError(f"ExecStart no longer starts a program of the venv: {argv[0]}")
    argv[0] = str(Path(sys.executable).parent / argv[0][len(venv_bin) :])
    return argv


def _substitute(text: str, pattern: str, replacement, expected: int | None = None) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0 or (expected is not None and count != expected):
        raise AssertionError(f"nginx.conf changed: {pattern!r} matched {count} times")
    return new


def nginx_site(
    *,
    daphne_ports: list[int],
    http_port: int,
    https_port: int,
    cert: Path,
    key: Path,
    path: Path = NGINX_SITE,
) -> str:
    """``docs/deploy/nginx.conf`` pointed at this stack (loopback ports, our certificate)."""
    text = path.read_text()
    ports = iter(daphne_ports)
    text = _substitute(
        text,
        r"^(\s*server )127\.0\.0\.1:\d+;",
        lambda m: f"{m.group(1)}127.0.0.1:{next(ports)};",
        expected=len(daphne_ports),
    )
    text = _substitute(text, r"^(\s*listen )80;", rf"\g<1>127.0.0.1:{http_port};", 1)
    text = _substitute(text, r"^(\s*listen )443( [^;]*)?;", rf"\g<1>127.0.0.1:{https_port}\2;", 1)
    text = _substitute(text, r"^(\s*server_name )[^;]+;", r"\g<1>127.0.0.1;", 2)
    text = _substitute(text, r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{cert};", 1)
    return _substitute(text, r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", 1)


def nginx_main(*, run_dir: Path, site: Path) -> str:
    """The part of a stock /etc/nginx/nginx.conf that a site file relies on."""
    return f"""daemon off;
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    # Which daphne served each request (the tests check that both do).
    log_format upstreams '$request_method $request_uri $status $upstream_addr $http_user_agent';
    access_log {run_dir}/access.log upstreams;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    include {site};
}}
"""


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class ProductionStack:
    """PostgreSQL + a private Redis + two daphnes as the systemd unit runs them + nginx over HTTPS.

    Offers what the browser tests use of a ``Daphne``: ``url`` (nginx's https
    address), ``data_dir``, ``manage``, ``create_user``, ``query`` (``?``
    placeholders, UUIDs returned as hex, as the SQLite tests see them).
    """

    def __init__(self, *, postgres_url: str, settings: dict[str, str], processes: int = 2) -> None:
        """``postgres_url``: any database on the server to create this stack's own database on;
        ``settings``: set on top of chatsite.env (the provider and model settings)."""
        self.postgres_url = postgres_url
        self.extra_settings = settings
        self.processes = processes
        self.root = Path(tempfile.mkdtemp(prefix="chatsite-production-"))
        # nginx's workers run as an unprivileged user when the tests run as root.
        self.root.chmod(0o755)
        self.data_dir = self.root / "data"
        self.nginx_dir = self.root / "nginx"
        self.https_port, self.http_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.redis = RedisServer()
        self.daphnes: list[Daphne] = []
        self.nginx: subprocess.Popen | None = None
        self._database: contextlib.AbstractContextManager[str] | None = None
        self.env: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> ProductionStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._database = postgres_database(self.postgres_url, "chatsite_production")
        database_url = self._database.__enter__()
        self.redis.start()
        self.data_dir.mkdir()
        self.env = {k: os.environ[k] for k in SERVICE_ENV_KEEP if k in os.environ}
        self.env.update(unit_environment())
        self.env.update(read_env_file())
        self.env.update(
            {
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                # As chatsite.env names the site's public origin.
                "DJANGO_CSRF_TRUSTED_ORIGINS": self.url,
                "DATABASE_URL": database_url,
                "REDIS_URL": self.redis.url,
                "CHATSITE_DATA_DIR": str(self.data_dir),
                **self.extra_settings,
            }
        )
        # docs/deploy.md, "3. Settings".
        self.manage("migrate", "-v0")
        self.manage("collectstatic", "--noinput", "-v0")
        # "4. Processes": one daphne per unit instance.
        for _ in range(self.processes):
            port = free_port()
            daphne = Daphne(self.data_dir, port=port, command=unit_command(port, self.env), base_env=self.env)
            self.daphnes.append(daphne)
            daphne.start(migrate=False)
        # "5. Reverse proxy".
        self.nginx_dir.mkdir()
        self.nginx_dir.chmod(0o755)
        cert, key = self_signed_certificate(self.nginx_dir)
        site = self.nginx_dir / "chatsite.conf"
        site.write_text(
            nginx_site(
                daphne_ports=[d.port for d in self.daphnes],
                http_port=self.http_port,
                https_port=self.https_port,
                cert=cert,
                key=key,
            )
        )
        main = self.nginx_dir / "nginx.conf"
        main.write_text(nginx_main(run_dir=self.nginx_dir, site=site))
        log = open(self.nginx_dir / "nginx.out", "ab")
        self.nginx = subprocess.Popen(
            [NGINX, "-p", str(self.nginx_dir), "-e", str(self.nginx_dir / "error.log"), "-c", str(main)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", verify=False, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.nginx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n" + self.nginx_log())
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.nginx)
        for daphne in self.daphnes:
            daphne.stop()
        self.redis.stop()
        if self._database is not None:
            self._database.__exit__(None, None, None)
            self._database = None
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> dict[Path, int]:
        """Every server log (the daphnes', nginx's errors) and its size now."""
        paths = [d.log for d in self.daphnes] + [self.nginx_dir / "error.log"]
        return {p: p.stat().st_size if p.exists() else 0 for p in paths}

    def errors_since(self, sizes: dict[Path, int]) -> list[str]:
        """Tracebacks and error lines written to the server logs after ``sizes`` (from ``logs``)."""
        found = []
        for path, size in sizes.items():
            if not path.exists():
                continue
            with open(path, "rb") as fh:
                fh.seek(size)
                text = fh.read().decode(errors="replace")
            found += [
                f"{path.name}: {line}"
                for line in text.splitlines()
                if re.search(r"Traceback|\b(ERROR|CRITICAL)\b|\[(error|crit|alert|emerg)\]", line)
            ]
        return found

    def nginx_log(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.nginx_dir / "nginx.out", self.nginx_dir / "error.log")
            if p.exists()
        )

    # --- what the tests use --------------------------------------------------------

    def websockets_accepted(self) -> dict[int, int]:
        """How many WebSockets each daphne has accepted so far, by port (from its access log)."""
        return {d.port: d.log.read_text(errors="replace").count('"WSCONNECT ') for d in self.daphnes}

    def served(self) -> list[tuple[str, str, int, int, str]]:
        """(method, path, status, daphne port, user agent) of every request nginx has
        finished (a WebSocket when it closes)."""
        log = self.nginx_dir / "access.log"
        rows = []
        for line in log.read_text().splitlines() if log.exists() else []:
            method, path, status, upstream, agent = line.split(" ", 4)
            port = upstream.rsplit(":", 1)[-1]
            rows.append((method, path, int(status), int(port) if port.isdigit() else 0, agent))
        return rows

    def manage(self, *args: str) -> None:
        manage(self.env, *args)

    def create_user(self, username: str, password: str) -> None:
        create_user(self.env, username, password)

    def query(self, sql: str, *params):
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            rows = conn.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()
        return [tuple(v.hex if isinstance(v, uuid.UUID) else v for v in row) for row in rows]
