"""The whole benchmark suite, one script after another, each writing its section.

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks            # everything (~20 min)
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --list     # what it would run
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --only latency,load
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --no-doc   # print only
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python -m benchmarks --allow-dirty  # uncommitted tree: sections marked

Every run is a separate process started from the project root, exactly the
command its section of ``docs/benchmarks.md`` names; one that fails is
reported and the others still run. The exit status is 1 if any failed.

Figures in the docs name the commit they were measured on (``git describe``):
a tree with uncommitted changes (other than the docs the suite writes) is
refused before anything runs, unless ``--allow-dirty``, which each section
then says.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import add_allow_dirty_argument, check_tree_for_doc

ROOT = Path(__file__).resolve().parent.parent

#: name -> the arguments after ``python``; in the order they run.
RUNS: dict[str, list[str]] = {
    "latency": ["benchmarks/latency.py"],
    "stop-and-send": ["benchmarks/stop_and_send.py"],
    "reasoning": ["benchmarks/reasoning.py"],
    "metrics-cost": ["benchmarks/metrics_cost.py"],
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
    "queue": ["benchmarks/queueing.py"],
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
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    if not args.list:
        check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    failed: list[str] = []
    for name in chosen:
        passed = ["--no-doc"] if args.no_doc else ["--allow-dirty"] if args.allow_dirty else []
        command = [sys.executable, *RUNS[name], *passed]
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
