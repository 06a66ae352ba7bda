"""A reply rendered as it streams: only its last block is rendered again, and
the finished reply's DOM is exactly that of a full render of the same text."""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Each is streamed in pieces of several sizes; between them they open and close
# every kind of block the renderer must not cut too early.
TEXTS = {
    "blocks of every kind": (
        "# Title\n\nA paragraph with **bold**, `code` and a [link](https://example.com).\n"
        "It goes on for a second line.\n\n"
        "- one\n- two\n\n  still two\n- three\n\n1. first\n2. second\n\n"
        "```python\ndef double(x):\n    return x * 2\n```\n\n"
        "```\nSELECT name FROM users WHERE id = 1;\n```\n\n"
        "| a | b |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |\n\n"
        "> a quote\n> that goes on\n\nSetext heading\n==============\n\nAnother\n---\n\n"
        "    indented code\n\n<div onclick=alert(1)>raw html</div>\n\n"
        "- [ ] a task\n- [x] a done one\n\n* * *\n\nthe last line, without a newline"
    ),
    "a link defined after its use": "See [the docs][d].\n\nMore text.\n\n[d]: https://example.com/docs\n\nEnd.",
    "blocks that interrupt a paragraph": (
        "para\n#not a heading\n# heading\ntext\n| x | y |\n|--|--|\n| 1 | 2 |\nafter the table\n"
        "> quoted\nlazy continuation\n\n- a\n\n- b\n\nloose list above\n"
    ),
    "a fence that never closes": "Some code:\n\n~~~js\nconst a = 1;\n\nconst b = 2;\n",
    "carriage returns": "line one\r\nline two\r\n\r\n- item\r\n- item\r\n\r\ndone",
}

STREAM = """async ([text, steps, compare]) => {
  const ui = await import('/static/chat/ui.js');
  const streamed = ui.assistantMessageEl({ status: 'streaming' });
  document.body.append(streamed);
  const body = streamed.querySelector('.message-body');
  let first = null;
  const differs = [];
  for (const step of steps) {
    for (let at = step; at < text.length + step; at += step) {
      ui.renderAssistant(streamed, text.slice(0, at), { streaming: true });
      if (first === null && at >= text.length / 2) first = body.firstChild;
      if (compare) {
        // What a full render of the text so far shows (a new element: nothing kept).
        const again = ui.assistantMessageEl({ status: 'streaming' });
        ui.renderAssistant(again, text.slice(0, at), { streaming: true });
        const want = again.querySelector('.message-body').innerHTML;
        if (body.innerHTML !== want && differs.length < 3) differs.push(text.slice(0, at));
      }
    }
  }
  ui.renderAssistant(streamed, text);
  const keptFirstBlock = first !== null && body.firstChild === first;
  const fresh = ui.assistantMessageEl({ status: 'complete' });
  ui.renderAssistant(fresh, text);
  const html = body.innerHTML;
  streamed.remove();
  return { streamed: html, full: fresh.querySelector('.message-body').innerHTML, keptFirstBlock, differs };
}"""


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_streamed_reply_ends_exactly_as_a_full_render_of_its_text(page, server, name):
    login(page, server)
    text = TEXTS[name]
    # A link defined later changes earlier blocks: only the end is the same there.
    compare = name != "a link defined after its use"
    for step in (1, 5, 64):
        result = page.evaluate(STREAM, [text, [step], compare])
        assert result["full"], "the full render is not empty"
        assert result["streamed"] == result["full"], f"pieces of {step}"
        # And on the way, every frame shows what a full render of the text so far shows.
        assert result["differs"] == [], f"pieces of {step}"
    assert page.problems == []


def test_the_finished_blocks_of_a_streaming_reply_are_not_rendered_again(page, server):
    login(page, server)
    text = "".join(f"Paragraph {n} with *some* words.\n\n```python\nx = {n}\n```\n\n" for n in range(40))
    result = page.evaluate(STREAM, [text, [7], False])
    # The first block's node, as shown halfway through, is the one shown at the end.
    assert result["keptFirstBlock"]
    assert result["streamed"] == result["full"]
