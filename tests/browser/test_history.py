"""History you can live in: search, versions, branches, continue, the sidebar,
export/import, shortcuts and long conversations, in a real Chromium."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from .conftest import FAST_MARKDOWN, SLOW_MARKDOWN, USERNAME, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAST_REPLY = ".message[data-role=assistant]:last-of-type"
CHATGPT_BRANCHES = Path(__file__).resolve().parent.parent / "fixtures" / "chatgpt" / "branches.json"

SEED_SCRIPT = """
import json
from datetime import timedelta
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from conversations.models import Conversation, Message

specs = json.load(open(PATH))
with transaction.atomic():
    for spec in specs:
        user = User.objects.get(username=spec["user"])
        conv = Conversation.objects.create(
            id=spec["id"], user=user, title=spec["title"], model="openai/fake",
            client_id="seed-" + spec["id"], title_is_auto=False,
            pinned=spec["pinned"], archived=spec["archived"],
        )
        age = timedelta(minutes=spec["age_minutes"], seconds=len(spec["messages"]))
        start = timezone.now() - age
        objs, parent = [], None
        for mid, role, content in spec["messages"]:
            assistant = role == "assistant"
            objs.append(Message(
                id=mid, conversation=conv, role=role, content=content, parent_id=parent,
                client_id="" if assistant else "seed-" + mid,
                status="complete" if assistant else "", last_seq=1 if assistant else 0,
                provider="openai" if assistant else "", model="fake" if assistant else "",
                completion_tokens=len(content.split()) if assistant else None,
            ))
            parent = mid
        Message.objects.bulk_create(objs, batch_size=500)
        for i, (mid, _, _) in enumerate(spec["messages"]):
            Message.objects.filter(pk=mid).update(created_at=start + timedelta(seconds=i))
        Conversation.objects.filter(pk=conv.pk).update(
            active_leaf_id=parent, updated_at=start + timedelta(seconds=len(spec["messages"]))
        )
"""


def seed(server, conversations: list[dict]) -> list[dict]:
    """Create conversations through the ORM; each dict: title, messages [(role, content)],
    optional pinned/archived/age_minutes. Returns them with "id" and "message_ids"."""
    specs = []
    for c in conversations:
        ids = [str(uuid.uuid4()) for _ in c["messages"]]
        specs.append(
            {
                "user": USERNAME,
                "id": str(uuid.uuid4()),
                "title": c["title"],
                "pinned": c.get("pinned", False),
                "archived": c.get("archived", False),
                # Old enough that seeded user messages never count against the per-minute limit.
                "age_minutes": c.get("age_minutes", 90),
                "messages": [
                    [mid, role, content] for mid, (role, content) in zip(ids, c["messages"], strict=True)
                ],
            }
        )
        c["id"], c["message_ids"] = specs[-1]["id"], ids
    path = Path(server.data_dir) / f"seed-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(specs))
    server.manage("shell", "-c", f"PATH = {str(path)!r}\n" + SEED_SCRIPT)
    return conversations


def chat(n: int, words: str = "") -> list[tuple[str, str]]:
    return [
        ("user" if i % 2 == 0 else "assistant", f"Message number {i}. " + (words if i % 2 else "A question?"))
        for i in range(n)
    ]


def poll(page, script: str, predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll a page expression (no wait_for_function: the CSP forbids eval)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script)
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last value {value!r}"
        page.wait_for_timeout(50)


def reply_text(page) -> str:
    return page.eval_on_selector(LAST_REPLY, "el => el.chatsiteText")


def send(page, text: str, model: str) -> None:
    page.select_option("#model", value=f"openai/{model}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_status(page, status: str, timeout: float = 20.0) -> None:
    try:
        page.wait_for_selector(f"{LAST_REPLY}[data-status={status}]", timeout=timeout * 1000)
    except Exception:
        print(
            "DEBUG",
            page.url,
            page.evaluate(
                "() => [...document.querySelectorAll('#messages > *')].map(e =>"
                " [e.tagName, e.dataset.role, e.dataset.status, e.getBoundingClientRect().height])"
            ),
            page.problems,
        )
        raise


def conversation_id(page) -> str:
    found = re.search(r"/c/([0-9a-f-]{36})/", page.url)
    assert found, page.url
    return found.group(1)


def api_messages(page, conv_id: str) -> list[dict]:
    return page.evaluate(
        "async (id) => (await (await fetch(`/api/conversations/${id}/`)).json()).messages", conv_id
    )


def in_viewport(page, selector: str) -> bool:
    return page.eval_on_selector(
        selector,
        """el => { const r = el.getBoundingClientRect();
                   const s = document.getElementById('scroller').getBoundingClientRect();
                   return r.bottom > s.top && r.top < s.bottom && r.height > 0; }""",
    )


# --- search --------------------------------------------------------------------


def test_search_finds_a_word_deep_in_a_reply_and_lands_on_that_message(page, server):
    search_lands_on_a_deep_message(page, server)


def search_lands_on_a_deep_message(page, server) -> None:
    """Search for a word deep in a long conversation; the hit opens that message.

    Also run against the production stack (tests/browser/production/).
    """
    word = "quokkaplatypus"
    filler = " ".join(f"filler{i}" for i in range(600))
    messages = chat(160, "ordinary words")
    messages[21] = ("assistant", f"{filler} and here, deep inside, the word {word} appears. {filler}")
    (conv,) = seed(server, [{"title": "A long talk about animals", "messages": messages}])
    target = conv["message_ids"][21]

    login(page, server)
    page.click("#search")
    page.keyboard.type(word)
    page.wait_for_selector("#search-results a.search-result")
    hit = page.locator("#search-results a.search-result").first
    assert hit.locator(".result-title").inner_text() == "A long talk about animals"
    marks = [m.lower() for m in hit.locator("mark").all_inner_texts()]
    assert word in marks
    assert page.is_hidden("#conversation-nav")

    hit.click()
    page.wait_for_url(re.compile(rf"/c/{conv['id']}/#m-{target}$"))
    # Message 21 of 160 is not among the ones rendered at first: it is rendered and scrolled to.
    page.wait_for_selector(f"#m-{target}.highlight", timeout=5000)
    assert in_viewport(page, f"#m-{target}")
    assert word in page.eval_on_selector(f"#m-{target}", "el => el.chatsiteText")
    assert page.problems == []


# --- versions and branches ------------------------------------------------------


def version_label(page, selector: str) -> str:
    return page.evaluate(
        "(sel) => document.querySelector(sel)?.querySelector('.version-label')?.textContent || ''", selector
    )


def test_regenerate_streams_a_new_version_and_the_switcher_flips_between_them(page, server):
    login(page, server)
    send(page, "Regenerate this", FAST_MARKDOWN)
    wait_status(page, "complete")
    first = reply_text(page)
    first_id = page.get_attribute(LAST_REPLY, "data-id")
    assert "canned answer" in first

    # Regenerate with another model of the fake, so the two texts differ.
    page.select_option("#model", value="openai/fake")
    page.click(f"{LAST_REPLY} .regenerate-reply")
    poll(
        page,
        f"() => document.querySelector('{LAST_REPLY} .version-label')?.textContent",
        lambda v: v == "2/2",
        what="the 2/2 switcher",
    )
    second = reply_text(page)
    second_id = page.get_attribute(LAST_REPLY, "data-id")
    assert second_id != first_id and second.startswith("w0 ") and second != first
    assert page.locator(".message[data-role=assistant]").count() == 1  # in place, not added

    page.click(f"{LAST_REPLY} .version-prev")
    poll(
        page,
        "() => document.querySelector('.message[data-role=assistant]')?.dataset.id",
        lambda v: v == first_id,
        what="the first version",
    )
    assert version_label(page, LAST_REPLY) == "1/2"
    assert reply_text(page) == first
    assert page.is_disabled(f"{LAST_REPLY} .version-prev")

    page.click(f"{LAST_REPLY} .version-next")
    poll(
        page,
        "() => document.querySelector('.message[data-role=assistant]')?.dataset.id",
        lambda v: v == second_id,
        what="the second version",
    )
    assert reply_text(page) == second

    # Both are kept, siblings of one user message; the choice survives a reload.
    conv = conversation_id(page)
    rows = server.query(
        "select parent_id from conversations_message where conversation_id = ? and role = 'assistant'",
        conv.replace("-", ""),
    )
    assert len(rows) == 2 and rows[0][0] == rows[1][0]
    page.reload()
    wait_status(page, "complete")
    assert page.get_attribute(LAST_REPLY, "data-id") == second_id
    assert version_label(page, LAST_REPLY) == "2/2"
    assert page.problems == []


def test_edit_a_message_branches_and_the_old_branch_stays_reachable(page, server):
    login(page, server)
    send(page, "The first question", FAST_MARKDOWN)
    wait_status(page, "complete")
    send(page, "The second question", FAST_MARKDOWN)
    poll(
        page,
        "() => document.querySelectorAll('.message[data-role=assistant][data-status=complete]').length",
        lambda n: n == 2,
        what="two replies",
    )
    users = page.locator(".message[data-role=user]")
    assert users.count() == 2
    old_first_id = users.nth(0).get_attribute("data-id")

    users.nth(0).locator(".edit-message").click()
    page.fill(".edit-area", "The edited question")
    page.click(".edit-save")
    poll(
        page,
        "() => document.querySelector('.message[data-role=user] .version-label')?.textContent",
        lambda v: v == "2/2",
        what="the edited message's switcher",
    )
    wait_status(page, "complete")
    texts = page.eval_on_selector_all(".message[data-role=user]", "els => els.map(e => e.chatsiteText)")
    assert texts == ["The edited question"]
    assert page.locator(".message[data-role=assistant]").count() == 1

    page.click(".message[data-role=user] .version-prev")
    poll(
        page,
        "() => document.querySelectorAll('.message[data-role=user]').length",
        lambda n: n == 2,
        what="the old branch",
    )
    texts = page.eval_on_selector_all(".message[data-role=user]", "els => els.map(e => e.chatsiteText)")
    assert texts == ["The first question", "The second question"]
    assert page.get_attribute(".message[data-role=user]", "data-id") == old_first_id
    assert version_label(page, ".message[data-role=user]") == "1/2"
    assert page.problems == []


def test_continue_a_stopped_reply_appends_to_the_same_reply(page, server):
    login(page, server)
    send(page, "Tell me a long story", SLOW_MARKDOWN)
    poll(
        page,
        f"() => (document.querySelector('{LAST_REPLY}')?.chatsiteText || '').length",
        lambda n: n > 80,
        what="some text",
    )
    page.click("#stop")
    wait_status(page, "stopped")
    stopped = reply_text(page)
    reply_id = page.get_attribute(LAST_REPLY, "data-id")
    assert page.is_visible(f"{LAST_REPLY} .continue-reply")

    page.click(f"{LAST_REPLY} .continue-reply")
    wait_status(page, "streaming")
    poll(
        page,
        f"() => (document.querySelector('{LAST_REPLY}')?.chatsiteText || '').length",
        lambda n: n > len(stopped) + 60,
        what="the continuation",
    )
    page.click("#stop")
    wait_status(page, "stopped")
    poll(
        page,
        f"() => document.querySelector('{LAST_REPLY} .metrics')?.textContent || ''",
        lambda t: "Part 2:" in t,
        what="both parts' metrics",
    )

    final = reply_text(page)
    assert page.get_attribute(LAST_REPLY, "data-id") == reply_id  # the same reply
    assert page.locator(".message[data-role=assistant]").count() == 1
    ((content, status, segments),) = server.query(
        "select content, status, segments from conversations_message where id = ?", reply_id.replace("-", "")
    )
    assert status == "stopped"
    assert final == content
    assert final.startswith(stopped) and len(final) > len(stopped)
    assert len(json.loads(segments)) == 1
    metrics = page.inner_text(f"{LAST_REPLY} .metrics")
    assert "Part 1:" in metrics and "tok" in metrics
    assert page.problems == []


def test_copy_puts_the_message_on_the_clipboard(page, server):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, server)
    send(page, "Copy me please", FAST_MARKDOWN)
    wait_status(page, "complete")
    page.click(f"{LAST_REPLY} .copy-message")
    page.wait_for_selector(f"{LAST_REPLY} .copy-message[data-copied]")
    assert page.evaluate("() => navigator.clipboard.readText()") == reply_text(page)
    page.click(".message[data-role=user] .copy-message")
    assert page.evaluate("() => navigator.clipboard.readText()") == "Copy me please"
    assert page.problems == []


# --- the sidebar ---------------------------------------------------------------


def item(page, conv_id: str) -> str:
    return f"#conversation-list li.conversation-item[data-id='{conv_id}']"


def open_menu(page, conv_id: str) -> None:
    page.hover(item(page, conv_id))
    page.click(f"{item(page, conv_id)} .item-menu-button")
    page.wait_for_selector(f"{item(page, conv_id)} .item-menu")


def menu_action(page, conv_id: str, action: str) -> None:
    open_menu(page, conv_id)
    page.click(f"{item(page, conv_id)} .item-menu [data-action={action}]")


def own_conversation_count(server) -> int:
    """The test user's conversations in the list (other tests' users have theirs too)."""
    return server.query(
        "select count(*) from conversations_conversation c join auth_user u on u.id = c.user_id"
        " where c.archived = 0 and u.username = ?",
        USERNAME,
    )[0][0]


def db_conversation(server, conv_id: str):
    return server.query(
        "select title, pinned, archived from conversations_conversation where id = ?",
        conv_id.replace("-", ""),
    )


def test_sidebar_groups_pages_and_actions(page, server):
    bulk = seed(
        server,
        [
            {"title": f"Bulk conversation {i}", "messages": chat(2), "age_minutes": 60 * 24 * 30 + i}
            for i in range(60)
        ]
        + [{"title": "Yesterday's chat", "messages": chat(2), "age_minutes": 60 * 30}],
    )
    (target,) = seed(server, [{"title": "Sidebar subject", "messages": chat(4), "age_minutes": 2}])
    tid = target["id"]
    login(page, server)
    page.wait_for_selector(item(page, tid))
    headings = page.locator("#conversation-list .group-heading").all_inner_texts()
    assert "Today" in headings and headings.index("Today") < len(headings)

    # Infinite scroll: the older conversations come in as the list scrolls.
    total = own_conversation_count(server)
    assert total > 50
    assert page.locator("#conversation-list li.conversation-item").count() <= 50
    poll(
        page,
        """() => { const nav = document.getElementById('conversation-nav'); nav.scrollTop = nav.scrollHeight;
                   return document.querySelectorAll('#conversation-list li.conversation-item').length; }""",
        lambda n: n == total,
        what="all pages",
    )
    headings = page.locator("#conversation-list .group-heading").all_inner_texts()
    assert headings[-2:] == ["Yesterday", "Older"] or headings[-1] == "Older"
    assert page.locator(item(page, bulk[0]["id"])).count() == 1

    # Rename inline.
    menu_action(page, tid, "rename")
    page.fill(f"{item(page, tid)} .rename-input", "Renamed by the test")
    page.press(f"{item(page, tid)} .rename-input", "Enter")
    page.wait_for_selector(f"{item(page, tid)} .conversation-link:has-text('Renamed by the test')")
    assert db_conversation(server, tid)[0][0] == "Renamed by the test"

    # Pin: to the top, under "Pinned".
    menu_action(page, tid, "pin")
    poll(
        page,
        "() => document.querySelector('#conversation-list li.conversation-item[data-pinned]')?.dataset.id",
        lambda v: v == tid,
        what="the pinned conversation",
    )
    assert page.get_attribute("#conversation-list li.conversation-item", "data-id") == tid
    assert page.locator("#conversation-list .group-heading").first.inner_text() == "Pinned"
    assert db_conversation(server, tid)[0][1] == 1
    menu_action(page, tid, "pin")  # unpin
    poll(
        page,
        f'() => !!document.querySelector("{item(page, tid)}")?.dataset.pinned',
        lambda v: v is False,
        what="unpinned",
    )
    assert db_conversation(server, tid)[0][1] == 0

    # Archive: gone from the list, in the archive view, and back.
    menu_action(page, tid, "archive")
    page.wait_for_selector(item(page, tid), state="detached")
    assert db_conversation(server, tid)[0][2] == 1
    page.click("#archive-toggle")
    page.wait_for_selector(item(page, tid))
    assert page.get_attribute("#archive-toggle", "aria-pressed") == "true"
    menu_action(page, tid, "archive")  # unarchive
    page.wait_for_selector(item(page, tid), state="detached")
    assert db_conversation(server, tid)[0][2] == 0
    page.click("#archive-toggle")
    page.wait_for_selector(item(page, tid))

    # Delete asks first, in the page; Cancel keeps it.
    menu_action(page, tid, "delete")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert page.locator(item(page, tid)).count() == 1 and db_conversation(server, tid)
    menu_action(page, tid, "delete")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-ok")
    page.wait_for_selector(item(page, tid), state="detached")
    assert db_conversation(server, tid) == []
    assert page.problems == []


# --- export and import ---------------------------------------------------------


def test_export_json_then_import_gives_the_same_conversation(page, server, tmp_path):
    export_then_import(page, server, tmp_path)


def export_then_import(page, server, tmp_path) -> None:
    """Export as JSON, import the file: the same conversation; a bad file imports nothing.

    Also run against the production stack (tests/browser/production/).
    """
    (conv,) = seed(
        server,
        [
            {
                "title": "Round trip",
                "messages": [
                    ("user", "Hello *there*"),
                    ("assistant", "General Kenobi!\n\n```py\nx = 1\n```"),
                ],
            }
        ],
    )
    login(page, server)
    page.goto(f"{server.url}/c/{conv['id']}/")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    page.click("#export-menu summary")
    with page.expect_download() as info:
        page.click("#export-json")
    path = tmp_path / "export.json"
    info.value.save_as(path)
    exported = json.loads(path.read_text())
    assert "Round trip" in json.dumps(exported)

    before = {r[0] for r in server.query("select id from conversations_conversation")}
    page.click(".sidebar-tools summary")
    page.set_input_files("#import-file", str(path))
    page.wait_for_selector("#import-status:has-text('Imported 1 conversation')")
    new = {r[0] for r in server.query("select id from conversations_conversation")} - before
    assert len(new) == 1
    new_id = str(uuid.UUID(new.pop()))
    original = api_messages(page, conv["id"])
    imported = api_messages(page, new_id)
    keys = ("role", "content", "status")
    assert [tuple(m.get(k) for k in keys) for m in imported] == [
        tuple(m.get(k) for k in keys) for m in original
    ]
    page.wait_for_selector(item(page, new_id))

    # A bad file imports nothing and says why.
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    page.set_input_files("#import-file", str(bad))
    page.wait_for_selector("#import-status[data-kind=error]")
    assert "Import failed" in page.inner_text("#import-status")
    # The envelope's words for people, not its code (``not_json``).
    assert "not valid JSON" in page.inner_text("#import-status")
    assert len({r[0] for r in server.query("select id from conversations_conversation")} - before) == 1
    # The browser logs a failed request (400) as a console error; nothing else may appear.
    assert [p for p in page.problems if "400" not in p] == []


def test_an_import_that_skips_conversations_says_which_and_why(page, server):
    login(page, server)
    page.goto(f"{server.url}/")
    page.click(".sidebar-tools summary")
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "chatgpt" / "other_tools.json"
    page.set_input_files("#import-file", str(fixture))
    page.wait_for_selector("#import-status:has-text('Imported 2 conversations.')")

    assert page.locator("#import-status li").all_inner_texts() == [
        "Skipped conversation 3 ('A broken link'): it could not be read "
        "(node 'x2': its parent 'x9' is not in this conversation).",
        "Skipped conversation 4 ('Nothing but the root'): it has no messages to show "
        "(only hidden, empty or tool messages).",
        "Skipped conversation 5: it could not be read "
        "(node 'q1': its message has no author, so who wrote it is not known).",
    ]
    assert page.problems == []


# --- keyboard ------------------------------------------------------------------


def test_keyboard_shortcuts_and_help(page, server):
    (conv,) = seed(server, [{"title": "Shortcut test", "messages": chat(2)}])
    login(page, server)
    page.goto(f"{server.url}/c/{conv['id']}/")
    page.wait_for_selector(f"{LAST_REPLY}[data-status=complete]")
    page.click("#conversation-title")
    page.keyboard.press("Control+k")
    assert page.evaluate("() => document.activeElement.id") == "search"
    page.keyboard.press("Escape")
    page.click("#conversation-title")
    page.keyboard.press("?")
    page.wait_for_selector("#help-dialog[open]")
    assert "New chat" in page.inner_text("#help-dialog")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help-dialog", state="hidden")
    # "?" typed in the message box is just text.
    page.click("#prompt")
    page.keyboard.press("?")
    assert page.input_value("#prompt") == "?" and page.is_hidden("#help-dialog")
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(f"{server.url}/")
    assert page.inner_text("#conversation-title") == "New chat"
    assert page.problems == []


# --- long conversations --------------------------------------------------------


def test_a_conversation_of_2000_messages_opens_at_its_end_and_scrolls_up(page, server):
    body = "Some **markdown** with `code` and a list:\n\n- one\n- two\n\n" + "lorem ipsum " * 30
    (conv,) = seed(server, [{"title": "Two thousand", "messages": chat(2000, body)}])
    last = conv["message_ids"][-1]
    login(page, server)
    started = time.monotonic()
    page.goto(f"{server.url}/c/{conv['id']}/")
    page.wait_for_selector(f"#m-{last}")
    poll(
        page,
        f"() => {{ const el = document.getElementById('m-{last}');"
        " const s = document.getElementById('scroller');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight < 5 && !!el; }",
        bool,
        what="the end in view",
    )
    elapsed = time.monotonic() - started
    print(f"2,000-message conversation: opened, last message in view, in {elapsed * 1000:.0f} ms")
    assert in_viewport(page, f"#m-{last}")
    rendered = page.locator("#messages .message").count()
    assert rendered < 2000

    # Scrolling up renders earlier messages, keeping the view steady.
    started = time.monotonic()
    poll(
        page,
        "() => { document.getElementById('scroller').scrollTop = 0;"
        " return document.querySelectorAll('#messages .message').length; }",
        lambda n: n == 2000,
        timeout=60,
        what="every message rendered by scrolling up",
    )
    print(f"2,000-message conversation: scrolled to the top in {(time.monotonic() - started) * 1000:.0f} ms")
    page.wait_for_selector(f"#m-{conv['message_ids'][0]}")
    assert page.is_hidden("#load-earlier")
    assert page.problems == []


def test_the_sidebar_shows_the_embedded_first_page_and_asks_only_for_later_ones(page, server):
    seed(server, [{"title": f"Paged conversation {i}", "messages": chat(2)} for i in range(55)])
    asked: list[str] = []
    page.on("request", lambda r: "/api/history/" in r.url and asked.append(r.url))
    login(page, server)
    page.wait_for_selector("#conversation-list li.conversation-item")
    total = own_conversation_count(server)
    assert total > 50
    poll(
        page,
        """() => { const nav = document.getElementById('conversation-nav'); nav.scrollTop = nav.scrollHeight;
                   return document.querySelectorAll('#conversation-list li.conversation-item').length; }""",
        lambda n: n == total,
        what="all pages",
    )
    # The first page came with the page; every request was for a later one.
    assert asked and all("cursor=" in url for url in asked), asked
    assert page.problems == []


def test_a_list_scrolled_to_its_end_while_it_reloads_goes_on_to_later_pages(page, server, tmp_path):
    seed(server, [{"title": f"Reloading list {i}", "messages": chat(2)} for i in range(55)])
    # A one-conversation ChatGPT file of its own title: an import reloads the list.
    (imported,) = json.loads(CHATGPT_BRANCHES.read_text())[1:2]
    imported["title"] = f"Imported while scrolled {uuid.uuid4().hex[:8]}"
    upload = tmp_path / "one.json"
    upload.write_text(json.dumps([imported]))
    login(page, server)
    page.wait_for_selector("#conversation-list li.conversation-item")
    first_page = page.locator("#conversation-list li.conversation-item").count()
    assert first_page == 50

    # The reload's answer is held until the list has been scrolled to its end.
    held: list = []
    page.route("**/api/history/**", lambda route: held.append(route))
    page.click(".sidebar-tools summary")
    page.set_input_files("#import-file", str(upload))
    page.wait_for_selector("#import-status:has-text('Imported 1 conversation')")
    poll(page, "() => null", lambda _: len(held) == 1, what="the list's reload")
    assert "cursor=" not in held[0].request.url
    page.evaluate(
        "() => { const n = document.getElementById('conversation-nav'); n.scrollTop = n.scrollHeight; }"
    )
    # Two frames: the observer has seen the sentinel in view while the list was loading.
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert len(held) == 1
    held[0].continue_()
    page.unroute("**/api/history/**")

    # The list reloaded with the sentinel still in view: the next page comes
    # without another scroll.
    poll(
        page,
        "() => document.querySelectorAll('#conversation-list li.conversation-item').length",
        lambda n: n > first_page,
        what="the next page",
    )
    assert page.problems == []
