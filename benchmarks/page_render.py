"""The chat page's renderer while a long reply streams: before and after.

Run (from the project root)::

    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/page_render.py
    CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/page_render.py --before e07afc8 --repeat 3 --no-doc

A 200 KB markdown reply (headings, paragraphs with inline formatting and
links, lists, code blocks with a language, tables, quotes; the same text every
run) streams into a page in Debian's Chromium (Playwright, headless): on each
animation frame ``--step`` more characters arrive and the reply is rendered
with the page's own ``renderAssistant`` (``static/chat/ui.js``: marked,
DOMPurify, highlight.js and the code-copy buttons), then laid out under the
page's stylesheet, exactly as the page does once per frame while deltas come
in. At the end the reply is rendered once more as finished.

*Before* is the renderer of ``--before`` (a commit: its ``static/`` is taken
with ``git archive``), which renders the whole reply every frame; *after* is
the working tree's, which keeps the finished blocks and renders only the last
one. Both run in the same browser, one after the other (``--repeat`` times,
alternating), each in a fresh page served from a temporary directory on
127.0.0.1.

Figures: the longest main-thread task (``PerformanceObserver`` ``longtask``
entries, which the browser reports for tasks of 50 ms and more), the number
of such tasks, the time spent rendering (the sum over frames of render +
layout, measured with ``performance.now()``), the longest and the p95 frame,
the final render, and whether the finished DOM is the same for both.

``--text math`` streams a reply full of TeX instead (inline ``$…$`` and
``\\(…\\)`` in every paragraph, ``$$…$$`` and ``\\[…\\]`` display formulas between
them, every formula different, so KaTeX's per-formula cache never helps across
formulas), with *before* the last commit without math rendering
(``--before`` defaults to it there), where the formulas are plain text.

Results are printed and written between ``<!-- page-render:start -->`` and
``<!-- page-render:end -->`` in ``docs/benchmarks.md`` (``page-render-math`` for
``--text math``; other sections are kept).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    ROOT,
    Stats,
    add_allow_dirty_argument,
    check_tree_for_doc,
    git_revision,
    loadavg,
    machine_info,
    write_doc_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- page-render:start -->"
END_MARK = "<!-- page-render:end -->"
DOC_INTRO = "# Benchmarks\n"
CHROMIUM = "/usr/bin/chromium"
#: The last commit whose page rendered the whole reply on every frame.
BEFORE = "e07afc8"
#: The last commit whose page showed TeX as text (before static/chat/math.js).
BEFORE_MATH = "565f5b5"
MATH_START_MARK = "<!-- page-render-math:start -->"
MATH_END_MARK = "<!-- page-render-math:end -->"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<link rel="stylesheet" href="chat/style.css">
<link rel="stylesheet" href="vendor/highlightjs/styles/github.min.css">
<link rel="stylesheet" href="vendor/katex/katex.min.css">
<script type="module" src="bench.js"></script></head>
<body class="chat-page"><div class="app"><main class="chat">
<div id="scroller" class="scroller"><div id="messages" class="messages"></div></div>
</main></div></body></html>
"""

# One render per animation frame, as render.js does while a reply streams.
SCRIPT = """import { assistantMessageEl, finishAssistant, renderAssistant } from './chat/ui.js';

const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

window.benchRun = async ({ text, step }) => {
  const longTasks = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longTasks.push(entry.duration);
  });
  observer.observe({ type: 'longtask' });
  const node = assistantMessageEl({ status: 'streaming' });
  document.getElementById('messages').replaceChildren(node);
  const frames = [];
  const started = performance.now();
  for (let at = step; at < text.length + step; at += step) {
    await nextFrame();
    const t = performance.now();
    renderAssistant(node, text.slice(0, at), { streaming: true });
    void node.offsetHeight; // style and layout, as before the frame is painted
    frames.push(performance.now() - t);
  }
  await nextFrame();
  const t = performance.now();
  renderAssistant(node, text);
  finishAssistant(node, { status: 'complete' });
  void node.offsetHeight;
  const final = performance.now() - t;
  const wall = performance.now() - started;
  await nextFrame();
  await nextFrame();
  for (const entry of observer.takeRecords()) longTasks.push(entry.duration);
  observer.disconnect();
  return { frames, final, wall, longTasks, html: node.querySelector('.message-body').innerHTML };
};
// The finished reply rendered at once in a fresh page, as on a reload (nothing cached).
window.benchHistory = async ({ text }) => {
  const longTasks = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longTasks.push(entry.duration);
  });
  observer.observe({ type: 'longtask' });
  await nextFrame();
  const node = assistantMessageEl({ status: 'complete' });
  document.getElementById('messages').replaceChildren(node);
  const t = performance.now();
  renderAssistant(node, text);
  finishAssistant(node, { status: 'complete' });
  void node.offsetHeight;
  const history = performance.now() - t;
  await nextFrame();
  await nextFrame();
  for (const entry of observer.takeRecords()) longTasks.push(entry.duration);
  observer.disconnect();
  return { history, historyLongest: Math.max(0, ...longTasks) };
};
window.benchReady = true;
"""

WORDS = (
    "the reply streams into the page while a reader follows it and every frame shows a little more "
    "text about servers sockets models tokens lists tables code blocks functions values errors "
    "retries timeouts caches queues workers settings users conversations messages branches"
).split()


def reply_text(size: int, seed: int = 11) -> str:
    """A markdown reply of about ``size`` characters, the same for a given seed."""
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
        i = rng.randrange(len(words))
        words[i] = rng.choice(
            [
                f"**{words[i]}**",
                f"`{words[i]}()`",
                f"*{words[i]}*",
                f"[{words[i]}](https://example.com/{words[i]})",
            ]
        )
        return " ".join(words).capitalize() + "."

    parts: list[str] = []
    n = 0
    while sum(map(len, parts)) < size:
        n += 1
        parts.append(f"## Part {n}: {rng.choice(WORDS)} and {rng.choice(WORDS)}\n\n")
        for _ in range(rng.randint(2, 4)):
            parts.append(" ".join(sentence() for _ in range(rng.randint(3, 6))) + "\n\n")
        parts.append("".join(f"- {sentence()}\n" for _ in range(rng.randint(3, 7))) + "\n")
        lang = rng.choice(["python", "javascript"])
        lines = [
            f"def step_{n}_{i}(value):\n    return value * {i} + {n}"
            if lang == "python"
            else f"function step{n}x{i}(value) {{ return value * {i} + {n}; }}"
            for i in range(rng.randint(3, 10))
        ]
        parts.append(f"```{lang}\n" + "\n".join(lines) + "\n```\n\n")
        if rng.random() < 0.5:
            rows = "".join(
                f"| {rng.choice(WORDS)} | {rng.randint(1, 999)} | {rng.choice(WORDS)} |\n"
                for _ in range(rng.randint(3, 6))
            )
            parts.append("| name | count | note |\n|---|--:|---|\n" + rows + "\n")
        if rng.random() < 0.3:
            parts.append(f"> {sentence()}\n> {sentence()}\n\n")
    return "".join(parts)[:size].rstrip() + "\n"


def math_reply_text(size: int, seed: int = 12) -> str:
    """A reply of about ``size`` characters with a formula or more in every paragraph, all different."""
    rng = random.Random(seed)
    n = 0

    def formula() -> str:
        nonlocal n
        n += 1
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return rng.choice(
            [
                f"x_{{{n}}}^2 + {a}x + {b} = 0",
                f"\\frac{{{a}}}{{{b}}} + \\sqrt{{{n}}}",
                f"\\sum_{{i=1}}^{{{n}}} i^{{{a}}} \\leq {b}n",
                f"\\int_0^{{{a}}} e^{{-{b}t}} \\, dt",
                f"\\alpha_{{{n}}} = \\beta^{{{a}}} \\cdot \\gamma_{{{b}}}",
                f"\\lim_{{x \\to {a}}} \\frac{{\\sin x}}{{x + {n}}}",
            ]
        )

    def sentence() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        at = rng.randrange(len(words))
        words[at] = f"${formula()}$" if rng.random() < 0.6 else f"\\({formula()}\\)"
        return " ".join(words).capitalize() + "."

    parts: list[str] = []
    while sum(map(len, parts)) < size:
        parts.append(" ".join(sentence() for _ in range(rng.randint(2, 4))) + "\n\n")
        if rng.random() < 0.5:
            parts.append(f"$$\n{formula()} \\\\ {formula()}\n$$\n\n")
        else:
            rows = f"a &= {formula()} \\\\ b &= {formula()}"
            parts.append(f"\\[\n\\begin{{aligned}} {rows} \\end{{aligned}}\n\\]\n\n")
    text = "".join(parts)
    return text[: text.rfind("\n\n", 0, size) + 2] if len(text) > size else text


def static_tree(rev: str | None, into: Path) -> Path:
    """``static/`` of commit ``rev`` (None: the working tree) under ``into``, with the bench page."""
    into.mkdir(parents=True)
    if rev is None:
        shutil.copytree(ROOT / "static", into / "static")
    else:
        archive = subprocess.run(["git", "archive", rev, "static"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "static" / "bench.html").write_text(PAGE)
    (into / "static" / "bench.js").write_text(SCRIPT)
    return into / "static"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".css": "text/css",
    }

    def log_message(self, *args) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_once(browser, url: str, text: str, step: int) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        page.goto(f"{url}/bench.html")
        page.wait_for_function("() => window.benchReady === true")
        result = page.evaluate("(args) => window.benchRun(args)", {"text": text, "step": step})
        fresh = context.new_page()
        fresh.on("pageerror", lambda exc: problems.append(str(exc)))
        fresh.goto(f"{url}/bench.html")
        fresh.wait_for_function("() => window.benchReady === true")
        result.update(fresh.evaluate("(args) => window.benchHistory(args)", {"text": text}))
    finally:
        context.close()
    if problems:
        raise RuntimeError(f"the page failed: {problems}")
    return result


def measure(args, text: str) -> dict[str, list[dict]]:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="chatsite-page-render-"))
    servers = []
    try:
        urls = {}
        for name, rev in (("before", args.before), ("after", None)):
            server, url = serve(static_tree(rev, work / name))
            servers.append(server)
            urls[name] = url
        results: dict[str, list[dict]] = {"before": [], "after": []}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                for _ in range(args.repeat):
                    for name in ("before", "after"):
                        print(f"{name}: streaming {len(text):,} characters…", file=sys.stderr, flush=True)
                        results[name].append(run_once(browser, urls[name], text, args.step))
            finally:
                browser.close()
        return results
    finally:
        for server in servers:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def summary(runs: list[dict]) -> dict:
    frames = [ms for run in runs for ms in run["frames"]]
    stats = Stats.of(frames)
    return {
        "runs": len(runs),
        "frames": len(runs[0]["frames"]),
        "longest_task": max((max(run["longTasks"], default=0.0) for run in runs), default=0.0),
        "long_tasks": sum(len(run["longTasks"]) for run in runs) / len(runs),
        "render_s": sum(sum(run["frames"]) + run["final"] for run in runs) / len(runs) / 1000,
        "frame_p50": stats.median,
        "frame_p95": stats.p95,
        "frame_max": max(frames),
        "final": max(run["final"] for run in runs),
        "history": max(run["history"] for run in runs),
        "history_task": max(run["historyLongest"] for run in runs),
        "wall_s": sum(run["wall"] for run in runs) / len(runs) / 1000,
        "html": {hashlib.sha256(run["html"].encode()).hexdigest() for run in runs},
    }


def report(results: dict[str, list[dict]], info: dict, command: str, args, size: int) -> str:
    before, after = summary(results["before"]), summary(results["after"])
    same = "yes" if before["html"] == after["html"] and len(after["html"]) == 1 else "no"

    def ms(value: float) -> str:
        return f"{value:,.1f}"

    def longest(s: dict) -> str:
        return ms(s["longest_task"]) if s["long_tasks"] else "none ≥ 50"

    rows = [
        ("longest main-thread task, ms", longest(before), longest(after)),
        ("tasks of 50 ms or more, per run", f"{before['long_tasks']:,.0f}", f"{after['long_tasks']:,.0f}"),
        ("time spent rendering, s per run", f"{before['render_s']:,.2f}", f"{after['render_s']:,.2f}"),
        ("frame (render + layout), median ms", ms(before["frame_p50"]), ms(after["frame_p50"])),
        ("frame, p95 ms", ms(before["frame_p95"]), ms(after["frame_p95"])),
        ("frame, longest ms", ms(before["frame_max"]), ms(after["frame_max"])),
        ("final render when finished, ms (longest run)", ms(before["final"]), ms(after["final"])),
        ("the finished reply in a fresh page (a reload), ms", ms(before["history"]), ms(after["history"])),
        (
            "longest task of that render, ms",
            ms(before["history_task"]) if before["history_task"] else "none ≥ 50",
            ms(after["history_task"]) if after["history_task"] else "none ≥ 50",
        ),
        ("stream start to finished render, s", f"{before['wall_s']:,.1f}", f"{after['wall_s']:,.1f}"),
    ]
    if args.text == "math":
        title = f"## Page: rendering a {size // 1000} KB reply with {args.formulas:,} formulas as it streams"
        what = (
            f"A reply of {size:,} characters with {args.formulas:,} TeX formulas, all different "
            "(inline `$…$` and `\\(…\\)` in every paragraph, `$$…$$` and `\\[…\\]` displays between them), "
            "streams into the page "
            f"{args.step:,} characters per animation frame ({before['frames']} frames); each frame renders "
            "it with the page's `renderAssistant` and lays it out, and the finished reply is rendered once "
            "more. *Before* is the last renderer without math (the formulas are text); *after* renders "
            "each formula with KaTeX once (`static/chat/math.js` keeps it by its source) as it closes, "
            "new formulas getting at most 16 ms of a task (the rest follow in later slices, shown as "
            "their source until then). The reload row is the task that renders the reply in a fresh "
            "page; its remaining formulas are filled in afterwards. "
            f"{args.repeat} run(s) of each, alternating, in one browser. Long tasks are the browser's own "
            "`longtask` entries (it reports tasks of 50 ms and more)."
        )
    else:
        title = "## Page: rendering a 200 KB reply as it streams"
        what = (
            f"A markdown reply of {size:,} characters (headings, paragraphs with inline formatting and "
            "links, lists, code blocks with a language, tables, quotes) streams into the page "
            f"{args.step:,} characters per animation frame ({before['frames']} frames); each frame renders "
            "it with the page's `renderAssistant` (marked, DOMPurify, highlight.js, code-copy buttons) and "
            "lays it out under the page's stylesheet, and the finished reply is rendered once more. "
            "*Before* renders the whole reply every frame, so a frame costs as much as the text so far and "
            "the stream as much as the square of its length; *after* keeps the finished blocks and "
            "renders only the last, still open one (`static/chat/markdown.js`); a single block that grows "
            "for the whole reply (one 200 KB code block or list) would still be rendered whole each frame. "
            f"{args.repeat} run(s) of each, alternating, in one browser. Long tasks are the browser's own "
            "`longtask` entries (it reports tasks of 50 ms and more)."
        )
    lines = [
        title,
        "",
        f"- Date: {info['date']}; code: `{info.get('revision') or git_revision()}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average "
        f"(1/5/15 min) before {info['load_before']}, after {info['load_after']}",
        f"- Browser: {info['browser']} (headless, 1280 x 800)",
        f"- Renderer: after {info['revision']}, before `{args.before}`",
        "",
        "Produced by:",
        "",
        "```sh",
        command,
        "```",
        "",
        what,
        "",
        "| figure | before | after |",
        "|---|--:|--:|",
        *(f"| {label} | {b} | {a} |" for label, b, a in rows),
        "",
        (
            f"The finished reply's DOM is the same before and after: {same}."
            if args.text != "math"
            else f"Every run of *after* ends with the same DOM: {'yes' if len(after['html']) == 1 else 'no'}."
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def _command(argv: list[str]) -> str:
    head = "CHATSITE_NO_BOOTSTRAP=1 .venv/bin/python benchmarks/page_render.py"
    return " ".join([head, *(shlex.quote(a) for a in argv)])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="benchmarks/page_render.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before",
        default=None,
        help=f"the commit whose renderer is 'before' (default {BEFORE}; {BEFORE_MATH} with --text math)",
    )
    parser.add_argument(
        "--text", choices=("markdown", "math"), default="markdown", help="the reply (default markdown)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="characters in the reply (200,000; with --text math 50,000)"
    )
    parser.add_argument(
        "--step", type=int, default=1_000, help="characters per animation frame (default 1,000)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each renderer (default 1)")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the markdown file alone")
    add_allow_dirty_argument(parser)
    args = parser.parse_args(argv)
    check_tree_for_doc(parser, write_doc=not args.no_doc, allow_dirty=args.allow_dirty)
    if args.before is None:
        args.before = BEFORE_MATH if args.text == "math" else BEFORE
    if args.size is None:
        args.size = 50_000 if args.text == "math" else 200_000
    if args.size < 1 or args.step < 1 or args.repeat < 1:
        parser.error("--size, --step and --repeat must be positive")
    text = math_reply_text(args.size) if args.text == "math" else reply_text(args.size)
    displays = text.count("$$") // 2
    args.formulas = displays + (text.count("$") - 4 * displays) // 2 + text.count("\\(") + text.count("\\[")
    info = machine_info()
    info["load_before"] = loadavg()
    info["revision"] = git_revision()
    info["browser"] = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    results = measure(args, text)
    info["load_after"] = loadavg()
    section = report(results, info, _command(argv), args, len(text))
    print(section)
    if not args.no_doc:
        marks = (MATH_START_MARK, MATH_END_MARK) if args.text == "math" else (START_MARK, END_MARK)
        write_doc_section(args.doc, *marks, section, DOC_INTRO)
        print(f"updated {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
