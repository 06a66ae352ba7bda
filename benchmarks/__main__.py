"""The whole benchmark suite, one script after another, each writing its section.

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks            # everything (~15 min)
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --list     # what it would run
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --only latency,load
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --no-doc   # print only

Every run is a separate process started from the project root, exactly the
command its section of ``docs/benchmarks.md`` names; one that fails is
reported and the others still run. The exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> the arguments after ``python``; in the order they run.
RUNS: dict[str, list[str]] = {
    "latency": ["benchmarks/latency.py"],
    "reasoning": ["benchmarks/reasoning.py"],
    "moderation": ["benchmarks/moderation.py"],
    "load": ["benchmarks/load.py", "--profile"],
    "load-fixed-window": [
        "benchmarks/load.py",
        "--only",
        "burst,cpu",
        "--burst",
        "200",
        "--app-env",
        "DJANGO_SETTINGS_MODULE=benchmarks.settings_fixed_window",
        "--doc-section",
        "load-fixed-window",
    ],
    "load-2-processes": [
        "benchmarks/load.py",
        "--only",
        "burst,cpu",
        "--processes",
        "2",
        "--doc-section",
        "load-2-processes",
    ],
    "local-model": ["benchmarks/local_model.py"],
    "history": ["benchmarks/history.py"],
    "page-render": ["benchmarks/page_render.py"],
    "page-render-math": ["benchmarks/page_render.py", "--text", "math"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(RUNS), help=f"runs, comma-separated (default: {','.join(RUNS)})"
    )
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    parser.add_argument(
        "--no-doc", action="store_true", help="pass --no-doc: print only, leave the docs alone"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    failed: list[str] = []
    for name in chosen:
        command = [sys.executable, *RUNS[name], *(["--no-doc"] if args.no_doc else [])]
        print(f"== {name}: {' '.join(RUNS[name])}", flush=True)
        if args.list:
            continue
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, check=False)
        took = time.monotonic() - started
        if result.returncode != 0:
            failed.append(name)
            print(f"== {name} failed (exit {result.returncode}) after {took:.0f} s", flush=True)
        else:
            print(f"== {name} done in {took:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
