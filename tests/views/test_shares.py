"""Shared links over HTTP: the owner's endpoints, the shared page, the copy.

Tokens are unguessable and looked up by their hash; another user can neither
list, change, revoke nor guess a share; a revoked link answers exactly like one
that never existed; the snapshot is frozen; the page shows nothing else of the
owner's, carries noindex and no-referrer, and leaves hostile text as data.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from conversations.models import Attachment, Conversation, Message, Share
from conversations.services import shares as share_services
from conversations.testing.fakeupstream import HOSTILE_REPLY
from tests import factories
from tests.factories import at, logged_in

pytestmark = pytest.mark.django_db(transaction=True)


def share_of(client: Client, conversation: Conversation, **body) -> dict:
    response = client.post(
        f"/api/conversations/{conversation.pk}/share/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()["share"]


def post(client: Client, path: str, body: dict | None = None):
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


def token_of(share: dict) -> str:
    found = re.fullmatch(r"/s/([A-Za-z0-9_-]+)/", share["url"])
    assert found, share["url"]
    return found.group(1)


def share_data(html: str) -> dict:
    found = re.search(r'<script id="share-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page embeds the snapshot as data"
    return json.loads(found.group(1))


def two_turns(owner, title: str = "Trip plans") -> Conversation:
    c = factories.conversation(owner, title, system_prompt="Secret system prompt of the owner")
    u1 = factories.message(c, "Where should I go?", created_at=at(0))
    a1 = factories.message(
        c, "Try **Lisbon**.", "assistant", parent=u1, created_at=at(1), status="complete", provider="openai"
    )
    u2 = factories.message(c, "And in winter?", parent=a1, created_at=at(2))
    a2 = factories.message(c, "Try Madeira.", "assistant", parent=u2, created_at=at(3), status="complete")
    return factories.lead_to(a2)


# --- tokens -----------------------------------------------------------------------


def test_a_link_carries_a_long_random_token_and_the_database_finds_it_by_its_hash(alice):
    client = logged_in(alice)
    conversation = two_turns(alice)
    tokens = {token_of(share_of(client, conversation)) for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        # secrets.token_urlsafe(24): 32 URL-safe characters, 192 random bits.
        assert len(token) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
        share = Share.objects.get(token_hash=hashlib.sha256(token.encode()).hexdigest())
        assert share.owner == alice
    assert share_services.TOKEN_BYTES >= 16


def test_a_guessed_token_a_revoked_one_and_a_never_made_one_answer_the_same_404(alice, bob):
    owner = logged_in(alice)
    share = share_of(owner, two_turns(alice))
    viewer = logged_in(bob)
    assert viewer.get(share["url"]).status_code == 200
    assert post(owner, f"/api/shares/{share['id']}/revoke/").json() == {"revoked": share["id"]}

    revoked = viewer.get(share["url"])
    never = viewer.get(f"/s/{secrets.token_urlsafe(24)}/")
    near = viewer.get(share["url"][:-2] + ("A/" if share["url"][-2] != "A" else "B/"))
    too_long = viewer.get(f"/s/{'a' * 500}/")
    for response in (revoked, never, near, too_long):
        assert response.status_code == 404
        assert response.content == never.content
        assert response["X-Robots-Tag"].startswith("noindex")
        assert response["Referrer-Policy"] == "no-referrer"
    assert b"doesn't work" in never.content
    # Nor can the revoked link be continued.
    assert viewer.post(share["url"] + "continue/").status_code == 404
    assert not Conversation.objects.filter(user=bob).exists()


# --- the owner's endpoints ------------------------------------------------------------


def test_another_user_cannot_list_change_revoke_or_create_the_owners_shares(alice, bob):
    owner = logged_in(alice)
    conversation = two_turns(alice)
    share = share_of(owner, conversation)
    other = logged_in(bob)

    assert other.get("/api/shares/").json() == {"shares": []}
    assert other.get(f"/api/shares/?conversation={conversation.pk}").json() == {"shares": []}
    for path, body in (
        (f"/api/shares/{share['id']}/revoke/", None),
        (f"/api/shares/{share['id']}/update/", {"show_owner_name": True}),
        (f"/api/conversations/{conversation.pk}/share/", None),
    ):
        foreign = post(other, path, body)
        missing = post(other, re.sub(r"[0-9a-f-]{36}", str(uuid.uuid4()), path), body)
        assert foreign.status_code == 404 and foreign.json()["error"] == "not_found"
        assert foreign.json() == missing.json()
    assert Share.objects.filter(owner=bob).count() == 0
    stored = Share.objects.get(pk=share["id"])
    assert not stored.show_owner_name  # unchanged, and still there
    assert other.get(share["url"]).status_code == 200


def test_the_owner_lists_changes_and_revokes_their_links(alice):
    owner = logged_in(alice)
    first, second = two_turns(alice, "First"), two_turns(alice, "Second")
    a = share_of(owner, first)
    b = share_of(owner, second, show_owner_name=True)
    assert set(a) == {"id", "url", "conversation", "title", "show_owner_name", "created_at"}
    assert (a["title"], a["conversation"], a["show_owner_name"]) == ("First", str(first.pk), False)
    listed = owner.get("/api/shares/").json()["shares"]
    assert [s["id"] for s in listed] == [b["id"], a["id"]]  # newest first
    assert owner.get(f"/api/shares/?conversation={first.pk}").json()["shares"] == [a]

    changed = post(owner, f"/api/shares/{a['id']}/update/", {"show_owner_name": True}).json()["share"]
    assert changed["show_owner_name"] is True
    assert post(owner, f"/api/shares/{a['id']}/revoke/").status_code == 200
    assert [s["id"] for s in owner.get("/api/shares/").json()["shares"]] == [b["id"]]
    assert post(owner, f"/api/shares/{a['id']}/revoke/").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/conversations/{id}/share/", {"show_owner_name": "yes"}, "must be true or false"),
        ("/api/conversations/{id}/share/", {"public": True}, "unknown field 'public'"),
        ("/api/conversations/{id}/share/", [1], "must be a JSON object"),
        ("/api/shares/{share}/update/", {}, "nothing to change"),
        ("/api/shares/?conversation=nope", None, "conversation must be a conversation id"),
    ],
)
def test_a_bad_request_is_400_invalid_and_changes_nothing(alice, path, body, words):
    owner = logged_in(alice)
    conversation = two_turns(alice)
    share = share_of(owner, conversation)
    path = path.format(id=conversation.pk, share=share["id"])
    response = owner.get(path) if body is None else post(owner, path, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid" and words in response.json()["message"]
    assert Share.objects.count() == 1 and not Share.objects.get().show_owner_name


def test_a_conversation_has_at_most_so_many_links(alice, settings):
    owner = logged_in(alice)
    conversation = two_turns(alice)
    for _ in range(share_services.MAX_SHARES_PER_CONVERSATION):
        share_of(owner, conversation)
    refused = post(owner, f"/api/conversations/{conversation.pk}/share/")
    assert refused.status_code == 409 and refused.json()["error"] == "too_many_shares"
    assert "revoke one" in refused.json()["message"]
    assert Share.objects.count() == share_services.MAX_SHARES_PER_CONVERSATION


def test_the_chat_page_knows_which_of_the_users_conversations_are_shared(alice, bob):
    mine, other_mine = two_turns(alice), two_turns(alice, "Unshared")
    share_of(logged_in(alice), mine)
    share_of(logged_in(bob), two_turns(bob))
    html = logged_in(alice).get("/").content.decode()
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    data = json.loads(found[1])
    assert data["shares"] == {"conversations": [str(mine.pk)], "public": False}
    assert str(other_mine.pk) not in data["shares"]["conversations"]


# --- the page -----------------------------------------------------------------------


def test_the_page_needs_a_login_by_default_and_none_when_public_links_are_allowed(alice, settings):
    share = share_of(logged_in(alice), two_turns(alice))
    anonymous = Client()
    response = anonymous.get(share["url"])
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/s/")
    assert response["Referrer-Policy"] == "no-referrer"
    # A token that does not exist is not told apart before the login either.
    assert anonymous.get(f"/s/{secrets.token_urlsafe(24)}/").status_code == 302

    settings.CHATSITE_PUBLIC_SHARES = True
    page = anonymous.get(share["url"])
    assert page.status_code == 200
    assert "Where should I go?" in share_data(page.content.decode())["messages"][0]["content"]
    assert b"Log in to continue this conversation" in page.content
    # Continuing still needs an account of one's own.
    assert anonymous.post(share["url"] + "continue/")["Location"].startswith("/accounts/login/")


def test_the_page_is_noindex_no_referrer_not_cached_and_under_the_same_csp(alice, bob):
    share = share_of(logged_in(alice), two_turns(alice))
    viewer = logged_in(bob)
    page = viewer.get(share["url"])
    chat = viewer.get("/")
    assert page["X-Robots-Tag"] == "noindex, nofollow, noarchive"
    assert page["Referrer-Policy"] == "no-referrer"
    assert "no-store" in page["Cache-Control"]
    assert page["Content-Security-Policy"] == chat["Content-Security-Policy"]
    html = page.content.decode()
    assert '<meta name="robots" content="noindex, nofollow, noarchive">' in html
    assert '<meta name="referrer" content="no-referrer">' in html
    # No script on the page but the import map and its module; the snapshot is JSON data.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert sorted(s.split()[0] for s in scripts) == ['id="share-data"', 'type="importmap"', 'type="module"']
    assert "/static/chat/share.js" in html


def test_the_page_shows_nothing_else_of_the_owners_unless_they_show_their_name(transactional_db):
    owner = get_user_model().objects.create_user(
        "zanzibar-owner", email="owner@secret.example", password="pw-123456", first_name="Zelda"
    )
    viewer = factories.user("viewer")
    conversation = two_turns(owner)
    factories.plain_conversation(owner, title="Other private chat", minutes=10)
    client = logged_in(owner)
    hidden, named = share_of(client, conversation), share_of(client, conversation, show_owner_name=True)

    html = logged_in(viewer).get(hidden["url"]).content.decode()
    for secret in (
        "zanzibar",
        "Zelda",
        "owner@secret.example",
        "Other private chat",
        "Secret system prompt",
        str(conversation.pk),
    ):
        assert secret not in html, secret
    # Nor the ids of the owner's messages.
    for pk in Message.objects.filter(conversation=conversation).values_list("pk", flat=True):
        assert str(pk) not in html
    assert "Trip plans" in html

    shown = logged_in(viewer).get(named["url"]).content.decode()
    assert "Shared by Zelda" in shown and "owner@secret.example" not in shown


def test_hostile_text_is_data_in_the_page_never_markup(alice, bob):
    c = factories.conversation(alice, '<img src=x onerror="alert(1)"> title')
    u = factories.message(c, '<script>alert("user")</script> [x](javascript:alert(2))', created_at=at(0))
    a = factories.message(c, HOSTILE_REPLY, "assistant", parent=u, created_at=at(1), status="complete")
    factories.lead_to(a)
    share = share_of(logged_in(alice), Conversation.objects.get(pk=c.pk))
    html = logged_in(bob).get(share["url"]).content.decode()
    for markup in ("<script>alert", '<img src="x" onerror', "<img src=x onerror", "<svg onload", "<iframe"):
        assert markup not in html, markup
    data = share_data(html)
    assert data["messages"][1]["content"] == HOSTILE_REPLY  # exact, for the sanitizer to render
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; title" in html  # the title, escaped


# --- the snapshot ---------------------------------------------------------------------


def test_the_snapshot_is_the_shown_branch_only_with_new_ids_and_a_streaming_reply_marked(alice, bob):
    c = factories.branchy_conversation(alice)
    tail = c.active_leaf
    streaming = factories.message(
        c,
        "Half a repl",
        "assistant",
        parent=factories.message(c, "More?", parent=tail, created_at=at(8)),
        created_at=at(9),
        status="streaming",
    )
    c = factories.lead_to(streaming)
    share = share_of(logged_in(alice), c)
    messages = share_data(logged_in(bob).get(share["url"]).content.decode())["messages"]
    assert [m["content"] for m in messages] == [
        "How do I sort a list?",
        "`sorted(xs)` returns a new list; `xs.sort()` sorts in place, and",
        "And by length?",
        "Use `key=len`",
        "More?",
        "Half a repl",
    ]
    assert all("versions" not in m for m in messages)
    assert [m["parent"] for m in messages] == [None, *(m["id"] for m in messages[:-1])]
    assert messages[-1]["partial"] is True and messages[-1]["status"] == "streaming"
    assert "partial" not in messages[-3]
    assert messages[1]["status"] == "stopped" and messages[1]["segments"]


def test_the_snapshot_does_not_change_when_the_owner_goes_on(alice, bob):
    conversation = two_turns(alice)
    owner = logged_in(alice)
    share = share_of(owner, conversation)
    viewer = logged_in(bob)
    before = share_data(viewer.get(share["url"]).content.decode())

    # Continue, regenerate (a new version shown), edit in place, rename, settings.
    last = conversation.active_leaf
    u3 = factories.message(conversation, "One more?", parent=last, created_at=at(4))
    factories.message(conversation, "Sure.", "assistant", parent=u3, created_at=at(5), status="complete")
    regenerated = factories.message(
        conversation, "Try the Azores.", "assistant", parent=last.parent, created_at=at(6), status="complete"
    )
    factories.lead_to(regenerated)
    Message.objects.filter(conversation=conversation, content="Try **Lisbon**.").update(content="edited")
    renamed = post(owner, f"/api/conversations/{conversation.pk}/update/", {"title": "Renamed"})
    assert renamed.status_code == 200

    after = viewer.get(share["url"]).content.decode()
    assert share_data(after) == before
    assert "Trip plans" in after and "Renamed" not in after
    # Deleting the conversation drops its links (they answer 404 from then on).
    assert post(owner, f"/api/conversations/{conversation.pk}/delete/").status_code == 200
    assert viewer.get(share["url"]).status_code == 404
    assert not Share.objects.exists()


def test_deleting_the_account_drops_its_shares(alice, bob):
    share = share_of(logged_in(alice), two_turns(alice))
    alice.delete()
    assert not Share.objects.exists()
    assert logged_in(bob).get(share["url"]).status_code == 404


# --- continue as a copy ---------------------------------------------------------------


def test_a_viewer_continues_the_snapshot_as_a_conversation_of_their_own(alice, bob):
    conversation = two_turns(alice)
    share = share_of(logged_in(alice), conversation)
    viewer = logged_in(bob, enforce_csrf_checks=True)
    page = viewer.get(share["url"])
    assert b"Continue this conversation" in page.content
    # The form's CSRF token is required.
    assert viewer.post(share["url"] + "continue/").status_code == 403
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)[1].decode()
    response = viewer.post(share["url"] + "continue/", {"csrfmiddlewaretoken": csrf})
    assert response.status_code == 303
    copy = Conversation.objects.get(user=bob)
    assert response["Location"] == f"/c/{copy.pk}/"
    assert (copy.title, copy.model, copy.system_prompt) == ("Trip plans", conversation.model, "")
    messages = list(Message.objects.filter(conversation=copy).order_by("created_at"))
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Where should I go?"),
        ("assistant", "Try **Lisbon**."),
        ("user", "And in winter?"),
        ("assistant", "Try Madeira."),
    ]
    assert [m.parent_id for m in messages] == [None, *(m.pk for m in messages[:-1])]
    assert copy.active_leaf_id == messages[-1].pk
    assert messages[1].status == "complete" and messages[1].provider == "openai"
    # The owner's conversation is untouched, and the copy opens in the chat page.
    assert Message.objects.filter(conversation=conversation).count() == 4
    assert viewer.get(response["Location"]).status_code == 200


def test_a_copy_of_a_reply_that_was_still_streaming_is_interrupted(alice, bob):
    c = factories.conversation(alice, "Live")
    u = factories.message(c, "Go", created_at=at(0))
    half = factories.message(c, "Half", "assistant", parent=u, created_at=at(1), status="streaming")
    factories.lead_to(half)
    share = share_of(logged_in(alice), Conversation.objects.get(pk=c.pk))
    logged_in(bob).post(share["url"] + "continue/")
    reply = Message.objects.get(conversation__user=bob, role="assistant")
    assert (reply.status, reply.content) == ("interrupted", "Half")


def test_the_pages_script_continues_over_json_and_gets_errors_in_the_envelope(alice, bob):
    share = share_of(logged_in(alice), two_turns(alice))
    viewer = logged_in(bob)
    made = viewer.post(share["url"] + "continue/", HTTP_ACCEPT="application/json")
    assert made.status_code == 201
    copy = Conversation.objects.get(user=bob)
    assert made.json() == {"conversation": str(copy.pk), "url": f"/c/{copy.pk}/"}
    anonymous = Client().post(share["url"] + "continue/", HTTP_ACCEPT="application/json")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "not_authenticated"
    never = viewer.post(f"/s/{secrets.token_urlsafe(24)}/continue/", HTTP_ACCEPT="application/json")
    assert never.status_code == 404 and never.json()["error"] == "not_found"
    assert Conversation.objects.filter(user=bob).count() == 1


def test_a_snapshot_names_the_owners_files_but_never_links_or_serves_them(alice, bob):
    c = two_turns(alice)
    first_user = c.messages.filter(role="user").order_by("created_at").first()
    attachment = Attachment.objects.create(
        user=alice,
        kind="pdf",
        media_type="application/pdf",
        name="passport.pdf",
        size=2048,
        pages=1,
        text="x",
    )
    attachment.messages.add(first_user)
    share = share_of(logged_in(alice), c)
    page = logged_in(bob).get(share["url"]).content.decode()
    [shown] = share_data(page)["messages"][0]["attachments"]
    assert shown == {"kind": "pdf", "name": "passport.pdf", "size": 2048, "pages": 1}
    assert str(attachment.pk) not in page and "/api/attachments/" not in page
    # The viewer still cannot fetch it by its id.
    assert logged_in(bob).get(f"/api/attachments/{attachment.pk}/file").status_code == 404
