"""TeX in replies, rendered by KaTeX: live as it streams and from history, never
inside code, prices left alone, hostile TeX inert and bounded, the CSP strict."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import MATH, MATH_STALLED, login
from .test_chat_page import LAST_REPLY, reply_text, send
from .test_streaming_render import STREAM

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BODY = f"{LAST_REPLY} .message-body"

# Every CSP violation the page reports, from before its first script runs.
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
});
"""

# Markdown → what the renderer made of its formulas: each formula's kind and TeX
# (from the MathML annotation KaTeX writes), and the text outside formulas.
RENDER = """async (texts) => {
  const ui = await import('/static/chat/ui.js');
  const math = await import('/static/chat/math.js');
  const results = [];
  for (const text of texts) {
    const node = ui.assistantMessageEl({ status: 'complete' });
    document.body.append(node);
    ui.renderAssistant(node, text);
    while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const body = node.querySelector('.message-body');
    const formulas = Array.from(body.querySelectorAll('.math-inline, .math-display')).map((el) => [
      el.classList.contains('math-display') ? 'display' : 'inline',
      el.querySelector('annotation')?.textContent ?? null,
    ]);
    const clone = body.cloneNode(true);
    for (const el of clone.querySelectorAll('.math-inline, .math-display')) el.replaceWith('[math]');
    const inCode = body.querySelectorAll('code .katex, pre .katex').length;
    const code = Array.from(body.querySelectorAll('code')).map((c) => c.textContent);
    node.remove();
    results.push({ formulas, text: clone.textContent.trim(), inCode, code });
  }
  return results;
}"""


# Formulas beyond a task's time budget are rendered in later tasks (math.js).
SETTLED = """async () => {
  const math = await import('/static/chat/math.js');
  while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
}"""


def wait_for_math(page) -> None:
    page.evaluate(SETTLED)


def render(page, texts: list[str]) -> list[dict]:
    return page.evaluate(RENDER, texts)


def csp_violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


@pytest.fixture
def math_page(page, server):
    page.add_init_script(CSP_LISTENER)
    login(page, server)
    return page


def test_delimiters_prices_escapes_and_code(math_page):
    cases = [
        # (markdown, formulas, text outside them)
        ("Euler: $e^{i\\pi} + 1 = 0$.", [["inline", "e^{i\\pi} + 1 = 0"]], "Euler: [math]."),
        ("Area \\(A = \\pi r^2\\) here", [["inline", "A = \\pi r^2"]], "Area [math] here"),
        ("$$\\int_0^1 x^2 \\, dx$$", [["display", "\\int_0^1 x^2 \\, dx"]], "[math]"),
        ("\\[\nx = \\frac{-b}{2a}\n\\]", [["display", "\nx = \\frac{-b}{2a}\n"]], "[math]"),
        ("before\n$$\na \\; b\n$$\nafter", [["display", "\na \\; b\n"]], "before\n[math]\nafter"),
        ("so $$a$$ and \\[b\\] inline", [["display", "a"], ["display", "b"]], "so [math] and [math] inline"),
        ("$a +\nb$ over lines", [["inline", "a +\nb"]], "[math] over lines"),
        (
            "$\\frac{a}{b}\\,\\text{m}$ and $\\{x\\}$",
            [["inline", "\\frac{a}{b}\\,\\text{m}"], ["inline", "\\{x\\}"]],
            "[math] and [math]",
        ),
        ("*em* $a_1 * b_1$ **strong**", [["inline", "a_1 * b_1"]], "em [math] strong"),
        # Prices and dollar signs stay text.
        ("It costs $5 and $10 with tax.", [], "It costs $5 and $10 with tax."),
        ("From $5, or $10.50 per month", [], "From $5, or $10.50 per month"),
        ("US$5 and US$10", [], "US$5 and US$10"),
        ("$x$5 is not math", [], "$x$5 is not math"),
        ("$ x$ and $x $", [], "$ x$ and $x $"),
        ("escaped \\$x\\$ dollars", [], "escaped $x$ dollars"),
        ("\\\\(not math\\\\)", [], "\\(not math\\)"),
        ("unclosed $$\\int_0^1 x", [], "unclosed $$\\int_0^1 x"),
        ("$$\na\n\nb\n$$", [], "$$\na\nb\n$$"),
    ]
    results = render(math_page, [c[0] for c in cases])
    for (markdown, formulas, text), result in zip(cases, results, strict=True):
        assert result["formulas"] == formulas, markdown
        assert result["text"] == text, markdown
    # Code spans and blocks keep their dollars as code.
    code_cases = [
        "Use `$x$` and `\\(y\\)` here",
        '```\necho "$HOME" $$x$$\n```',
        "    $$x$$ indented code",
        "$a `b` c$",
        "Set `$A` to $5 and `$B`",
    ]
    results = render(math_page, code_cases)
    for markdown, result in zip(code_cases, results, strict=True):
        assert result["formulas"] == [] and result["inCode"] == 0, markdown
    assert results[0]["code"] == ["$x$", "\\(y\\)"]
    assert results[1]["code"] == ['echo "$HOME" $$x$$\n']
    assert results[3]["code"] == ["b"]
    assert csp_violations(math_page) == []
    assert math_page.problems == []


# The snapshots of the reply's body each time the page changes it: is the first
# display formula's opening "$$\\int" shown as text, and is it rendered?
WATCH = """() => {
  window.__snapshots = [];
  const textOutsideMath = (body) => {
    const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT, {
      acceptNode: (n) =>
        n.parentElement.closest('.katex') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
    });
    let text = '';
    while (walker.nextNode()) text += walker.currentNode.data;
    return text;
  };
  new MutationObserver(() => {
    const bodies = document.querySelectorAll('.message[data-role=assistant] .message-body');
    const body = bodies[bodies.length - 1];
    if (!body) return;
    const rendered = Array.from(body.querySelectorAll('.math-display annotation')).some((a) =>
      a.textContent.startsWith('\\\\int_0^1'),
    );
    window.__snapshots.push({ open: textOutsideMath(body).includes('$$\\\\int_0^1'), rendered });
  }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
}"""


def assert_math_reply(page) -> None:
    """The fake's math reply (conversations/testing/fakeupstream.py MATH_REPLY), finished."""
    annotations = page.eval_on_selector_all(
        f"{BODY} .math-inline annotation, {BODY} .math-display annotation",
        "els => els.map(e => e.textContent)",
    )
    assert annotations == [
        "e^{i\\pi} + 1 = 0",
        "A = \\pi r^2",
        "\\int_0^1 x^2 \\, dx = \\frac{1}{3}",
        "ax^2 + bx + c = 0",
        "\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n",
    ]
    assert page.locator(f"{BODY} div.math-display .katex-display").count() == 2
    text = page.inner_text(BODY)
    assert "It costs $5 and $10 with tax; a dollar sign: $3." in text
    assert page.locator(f"{BODY} code .katex, {BODY} pre .katex").count() == 0
    assert page.eval_on_selector_all(f"{BODY} code", "els => els.map(e => e.textContent)") == [
        "$x$",
        'echo "$HOME $$"\n',
    ]
    # KaTeX's layout arrived through the CSSOM: its boxes have their heights.
    strut = page.eval_on_selector(f"{BODY} .math-display .strut", "el => el.getBoundingClientRect().height")
    assert strut > 20
    # The fonts are the self-hosted ones, and they loaded.
    assert page.evaluate(
        "() => document.fonts.check('16px KaTeX_Main') && document.fonts.check('16px KaTeX_Math')"
    )


def math_reply_live_and_from_history(page, server) -> None:
    """Send for the fake's math reply, and see it the same after a reload (also in production)."""
    login(page, server)
    send(page, "Some math, please", MATH)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=20000)
    wait_for_math(page)
    assert_math_reply(page)
    live = page.inner_html(BODY)
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    wait_for_math(page)
    assert page.inner_html(BODY) == live
    assert_math_reply(page)


def test_math_streams_in_shows_an_open_formula_as_text_and_renders_the_same_from_history(math_page, server):
    page = math_page
    fonts: list[tuple[str, int]] = []
    page.on("response", lambda r: "/katex/fonts/" in r.url and fonts.append((r.url, r.status)))
    page.evaluate(WATCH)
    send(page, "Some math, please", MATH)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=20000)
    wait_for_math(page)
    assert_math_reply(page)
    snapshots = page.evaluate("window.__snapshots")
    # The display formula arrived in pieces: shown as text while open, never both.
    assert any(s["open"] and not s["rendered"] for s in snapshots), "the open formula was never shown as text"
    assert not any(s["open"] and s["rendered"] for s in snapshots)
    assert snapshots[-1] == {"open": False, "rendered": True}
    assert fonts and all(status == 200 and url.endswith(".woff2") for url, status in fonts)
    live = page.inner_html(BODY)
    seen_text = reply_text(page)

    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    wait_for_math(page)
    assert reply_text(page) == seen_text
    assert page.inner_html(BODY) == live
    assert_math_reply(page)
    assert csp_violations(page) == []
    assert page.problems == []


def test_a_formula_cut_off_mid_stream_stays_text_stopped_and_from_history(math_page, server, fake_upstream):
    page = math_page
    before = len(fake_upstream.requests)
    send(page, "Math that stops", MATH_STALLED)
    # The stream stalls inside "$$\\int_0^1 x^2 \\, ": the formula never closes.
    record = fake_upstream.wait_for_requests(before + 1)[before]
    deadline = time.monotonic() + 15
    script = f"() => document.querySelector('{LAST_REPLY}')?.chatsiteText || ''"
    while "x^2 \\, " not in page.evaluate(script):
        assert time.monotonic() < deadline, (
            f"the stalled reply never showed the open formula: {reply_text(page)!r}"
        )
        page.wait_for_timeout(50)
    assert record.text_sent == reply_text(page)
    assert page.locator(f"{BODY} .math-display").count() == 0
    assert page.locator(f"{BODY} .math-inline").count() == 2  # the two before it are rendered
    assert "$$\\int_0^1 x^2" in page.inner_text(BODY)
    page.click("#stop")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    wait_for_math(page)
    live = page.inner_html(BODY)
    assert page.locator(f"{BODY} .math-display").count() == 0
    page.reload()
    page.wait_for_selector(f"{LAST_REPLY}[data-status=stopped]")
    wait_for_math(page)
    assert page.inner_html(BODY) == live
    assert csp_violations(page) == []
    assert page.problems == []


# test_streaming_render's STREAM, then the full render compared again once every
# formula is rendered (the first ones to be rendered may have waited for a later task).
STREAM_SETTLED = (
    "async (args) => { const result = await ("
    + STREAM
    + """)(args);
  const math = await import('/static/chat/math.js');
  while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  const ui = await import('/static/chat/ui.js');
  const again = ui.assistantMessageEl({ status: 'complete' });
  document.body.append(again);
  ui.renderAssistant(again, args[0]);
  while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  again.remove();
  return { ...result, settled: again.querySelector('.message-body').innerHTML };
}"""
)

MATH_TEXTS = {
    "formulas of every kind": (
        "Inline $a^2 + b^2 = c^2$ and \\(\\sqrt{2}\\), prices $5 and $10.\n\n"
        "$$\n\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}\n$$\n\n"
        "Then \\[\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}\\] in a paragraph.\n\n"
        "- a list with $x_1$\n- and $$y$$\n\n"
        "```\n$not math$\n```\n\n"
        "\\[\n\\int_0^\\infty e^{-x^2} \\, dx = \\frac{\\sqrt{\\pi}}{2}\n\\]\nafter"
    ),
}


@pytest.mark.parametrize("name", list(MATH_TEXTS))
def test_a_streamed_reply_with_math_ends_exactly_as_a_full_render(math_page, name):
    text = MATH_TEXTS[name]
    for step in (1, 7, 64):
        result = math_page.evaluate(STREAM_SETTLED, [text, [step], True])
        assert result["settled"].count('class="katex"') == 7
        assert result["streamed"] == result["full"], f"pieces of {step}"
        assert result["differs"] == [], f"pieces of {step}"
    assert csp_violations(math_page) == []
    assert math_page.problems == []


HOSTILE_TEX = [
    "$\\href{javascript:alert(1)}{click}$",
    "$\\url{javascript:alert(2)}$",
    "$\\htmlClass{stop-button}{x}$",
    "$\\htmlId{send}{x}$",
    "$\\htmlStyle{background:url(http://127.0.0.2:9/style.png)}{x}$",
    "$\\htmlData{foo=bar}{x}$",
    "$\\includegraphics[height=1em]{http://127.0.0.2:9/graphic.png}$",
    "$<img src=x onerror=alert(3)>$",
    "$\\text{<script>alert(4)</script>}$",
    "$$\\rule{100000em}{100000em}$$",
    "$a\\kern-1000em b$",
    "$x\\hspace{-500em}y$",
    "$\\raisebox{-1000em}{z}$",
    "$" + "{" * 900 + "x" + "}" * 900 + "$",
    "$\\def\\a{\\a\\a}\\a$",
    "$\\def\\a{xxxxxxxxxx}\\def\\b{\\a\\a\\a\\a\\a\\a\\a\\a\\a\\a}\\def\\c{\\b\\b\\b\\b\\b\\b\\b\\b\\b\\b}\\c\\c\\c\\c$",
    "$\\gdef\\leak{LEAKED}x$ then $\\leak$",
    "$" + "x+" * 1500 + "x$",
    "$\\color{red}{red}$ and $\\colorbox{url(x)}{y}$",
    # KaTeX gives these a style attribute of its own, which must not reach the DOM as one.
    "$\\pmb{x}$ $\\fcolorbox{red}{yellow}{y}$ $\\oiint_S F$",
    "$$\\left( \\begin{matrix} "
    + " \\\\ ".join(f"a_{{{i}}}" for i in range(12))
    + " \\end{matrix} \\right)$$",
]

INSPECT = """async (texts) => {
  const ui = await import('/static/chat/ui.js');
  const node = ui.assistantMessageEl({ status: 'complete' });
  document.getElementById('messages').append(node);
  ui.renderAssistant(node, texts.join('\\n\\n'));
  const math = await import('/static/chat/math.js');
  while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  const body = node.querySelector('.message-body');
  const box = body.getBoundingClientRect();
  const tags = new Set(Array.from(body.querySelectorAll('*')).map((e) => e.localName));
  const attrs = new Set();
  for (const e of body.querySelectorAll('*')) for (const a of e.attributes) attrs.add(a.name);
  const classes = new Set();
  for (const e of body.querySelectorAll('.katex *, .katex')) for (const c of e.classList) classes.add(c);
  const outside = Array.from(body.querySelectorAll('.katex-html *')).filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.left < box.left - 200;
  }).map((e) => [e.className, e.textContent.slice(0, 30), e.getBoundingClientRect().left, box.left]);
  const rules = Array.from(body.querySelectorAll('.katex .rule')).map((e) => {
    const r = e.getBoundingClientRect();
    return [r.width, r.height];
  });
  // What is shown: the text without KaTeX's (visually hidden) MathML copy.
  const visible = body.cloneNode(true);
  for (const e of visible.querySelectorAll('.katex-mathml')) e.remove();
  const shown = visible.textContent;
  const styles = new Set();
  for (const e of body.querySelectorAll('[style]')) {
    for (const p of e.style) styles.add(`${p}: ${e.style.getPropertyValue(p)}`);
  }
  const scroller = document.getElementById('scroller');
  return {
    tags: [...tags], attrs: [...attrs], classes: [...classes], outside, rules, styles: [...styles],
    errors: Array.from(body.querySelectorAll('.katex-error')).map((e) => [e.textContent, e.title]),
    pageFits: scroller.scrollWidth <= scroller.clientWidth,
    text: shown, leaked: shown.includes('LEAKED'), fontSize: parseFloat(getComputedStyle(body).fontSize),
    ids: Array.from(body.querySelectorAll('[id]')).map((e) => e.id),
  };
}"""


def test_hostile_tex_stays_inert_and_bounded(math_page, server):
    page = math_page
    foreign: list[str] = []
    page.on("request", lambda r: r.url.startswith(server.url) or foreign.append(r.url))
    result = page.evaluate(INSPECT, HOSTILE_TEX)
    assert not {
        "a",
        "img",
        "script",
        "iframe",
        "object",
        "embed",
        "form",
        "input",
        "style",
        "image",
        "use",
    } & set(result["tags"]), result["tags"]
    assert set(result["attrs"]) <= {
        "class",
        "style",
        "aria-hidden",
        "title",
        "aria-label",
        "type",
        "hidden",
        "encoding",
        "display",
        "mathvariant",
        "stretchy",
        "fence",
        "lspace",
        "rspace",
        "minsize",
        "maxsize",
        "separator",
        "width",
        "height",
        "viewBox",
        "preserveAspectRatio",
        "d",
        "mathcolor",
        "mathbackground",
        "voffset",
        "depth",
        "scriptlevel",
        "displaystyle",
        "linethickness",
        "x1",
        "y1",
        "x2",
        "y2",
        "stroke-width",
        "columnalign",
        "columnspacing",
        "rowspacing",
    }, result["attrs"]
    assert result["ids"] == []
    assert "stop-button" not in result["classes"]
    # Nothing is pulled far to the left of the message (over the text before it),
    # nothing widens the page, and the rule is capped at 10em.
    assert result["outside"] == [], result["outside"]
    assert result["pageFits"]
    ((width, height),) = result["rules"]
    assert width <= 10 * result["fontSize"] * 1.25 and height <= 10 * result["fontSize"] * 1.25
    # Every style came from the allow-list: no url(), and no shift beyond 10em.
    assert not any("url" in s for s in result["styles"]), result["styles"]
    for s in result["styles"]:
        m = re.match(r"(margin-left|margin-right|left): (-?[\d.]+)em$", s)
        assert not m or abs(float(m[2])) <= 10, s
    # Errors are shown as their source, with the reason on hover.
    errors = dict(result["errors"])
    assert any("Too many expansions" in title for title in errors.values()), errors
    # A formula longer than math.js's MAX_TEX_LENGTH is left as text.
    assert "x+x+x+x+" in result["text"]
    assert "\\href" in result["text"] and "\\includegraphics" in result["text"]
    assert not result["leaked"], "a \\gdef reached another formula"
    page.wait_for_timeout(300)  # let any (wrongly) loaded resource be requested
    assert foreign == []
    assert csp_violations(page) == []
    assert page.problems == []


def test_math_looks_right_on_a_phone_and_on_a_desktop(math_page, browser, server, tmp_path):
    page = math_page
    send(page, "Some math, please", MATH)
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]", timeout=20000)
    wait_for_math(page)
    page.evaluate("document.fonts.ready")
    page.screenshot(path=str(tmp_path / "math-desktop.png"))
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        small = phone.new_page()
        small.add_init_script(CSP_LISTENER)
        login(small, server)
        small.goto(page.url)
        small.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
        wait_for_math(small)
        small.evaluate("document.fonts.ready")
        assert small.inner_html(BODY) == page.inner_html(BODY)
        small.locator(f"{BODY} div.math-display").last.scroll_into_view_if_needed()
        small.screenshot(path=str(tmp_path / "math-phone.png"))
        # A display formula wider than the message would scroll within itself; the page never does.
        widths = small.eval_on_selector_all(
            f"{BODY} div.math-display", "els => els.map(e => [e.clientWidth, e.parentElement.clientWidth])"
        )
        assert widths and all(client <= parent for client, parent in widths)
        assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert csp_violations(small) == []
    finally:
        phone.close()
    assert csp_violations(page) == []


MANY = """async (count) => {
  const ui = await import('/static/chat/ui.js');
  const math = await import('/static/chat/math.js');
  const step = (i) => `Step ${i}: $\\\\frac{${i}}{${i + 1}} + x_{${i}}^2$.`;
  const text = Array.from({ length: count }, (_, i) => step(i)).join('\\n\\n');
  const node = ui.assistantMessageEl({ status: 'complete' });
  document.getElementById('messages').append(node);
  ui.renderAssistant(node, text);
  const body = node.querySelector('.message-body');
  const atOnce = body.querySelectorAll('.katex').length;
  const waiting = math.pendingMath();
  while (math.pendingMath() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  const settled = body.innerHTML;
  // Now every formula is cached: a render of the same text is complete at once.
  const again = ui.assistantMessageEl({ status: 'complete' });
  document.getElementById('messages').append(again);
  ui.renderAssistant(again, text);
  return { atOnce, waiting, rendered: body.querySelectorAll('.katex').length, settled,
           again: again.querySelector('.message-body').innerHTML, pendingAfter: math.pendingMath() };
}"""


def test_many_formulas_render_in_slices_and_end_as_one_render(math_page):
    result = math_page.evaluate(MANY, 300)
    # Not all 300 in the task that rendered the reply: the rest came in later tasks.
    assert result["atOnce"] < 300 and result["waiting"] == 300 - result["atOnce"]
    assert result["rendered"] == 300
    assert result["again"] == result["settled"] and result["pendingAfter"] == 0
    assert csp_violations(math_page) == []
    assert math_page.problems == []


COPY = """async () => {
  const ui = await import('/static/chat/ui.js');
  const node = ui.assistantMessageEl({ status: 'complete' });
  document.getElementById('messages').append(node);
  ui.renderAssistant(node, 'The area $A = \\\\pi r^2$ of a circle.');
  const paragraph = node.querySelector('.message-body p');
  const range = document.createRange();
  range.selectNodeContents(paragraph);
  getSelection().removeAllRanges();
  getSelection().addRange(range);
  let copied = null;
  const listen = (e) => { copied = e.clipboardData.getData('text/plain'); };
  document.addEventListener('copy', listen);
  document.execCommand('copy');
  document.removeEventListener('copy', listen);
  return copied;
}"""


def test_copying_text_with_a_formula_copies_its_tex(math_page):
    assert math_page.evaluate(COPY) == "The area $A = \\pi r^2$ of a circle."
