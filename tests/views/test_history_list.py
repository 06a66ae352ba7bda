"""The conversation list (keyset pages, pinned first, archive, date groups) and
the actions on a conversation (rename, pin, archive, delete), on SQLite and on
PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client

from conversations import selectors, serializers
from conversations.exceptions import NotFound
from conversations.models import Conversation, Message
from conversations.realtime.registry import registry
from conversations.services import conversations as conversation_services
from tests import factories
from tests.factories import logged_in

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def make(user, title="chat", *, at=None, pinned=False, archived=False, messages=0) -> Conversation:
    conversation = factories.conversation(user, title, pinned=pinned, archived=archived)
    for i in range(messages):
        factories.message(conversation, f"{title} message {i}")
    # Last: adding messages moves updated_at.
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=at or T0)
    conversation.refresh_from_db()
    return conversation


def list_order_key(c: Conversation):
    # Pinned first, newest activity first, then id: the documented total order.
    return (not c.pinned, -c.updated_at.timestamp(), c.id)


def all_pages(**kwargs) -> list[list[Conversation]]:
    pages, cursor = [], None
    for _ in range(100):
        page = selectors.conversation_list(cursor=cursor, **kwargs)
        pages.append(list(page))
        cursor = page.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("the pages never ended")


# --- the list --------------------------------------------------------------


def test_pages_cover_every_conversation_exactly_once_even_with_equal_updated_at(alice, bob):
    made = []
    for i in range(9):  # distinct times
        made.append(make(alice, f"distinct {i}", at=T0 - timedelta(minutes=i)))
    for i in range(7):  # one shared time, straddling page boundaries
        made.append(make(alice, f"tied {i}", at=T0 - timedelta(minutes=30)))
    for i in range(4):  # pinned, two of them tied too
        made.append(make(alice, f"pinned {i}", at=T0 - timedelta(days=i // 2), pinned=True))
    make(alice, "archived", archived=True)
    make(bob, "bob's")

    for limit in (1, 3, 4, 5, 50):
        pages = all_pages(user=alice, limit=limit)
        seen = [c.id for page in pages for c in page]
        assert len(seen) == len(set(seen)) == len(made), limit
        assert seen == [c.id for c in sorted(made, key=list_order_key)], limit
        assert all(len(page) == limit for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= limit


def test_pinned_come_first_then_newest_activity(alice):
    old_pinned = make(alice, "old but pinned", at=T0 - timedelta(days=300), pinned=True)
    newest = make(alice, "newest", at=T0)
    older = make(alice, "older", at=T0 - timedelta(hours=5))
    page = selectors.conversation_list(user=alice, now=T0)
    assert [c.id for c in page] == [old_pinned.id, newest.id, older.id]
    assert [item.group for item in page.items] == ["pinned", "today", "today"]
    assert page.next_cursor is None


def test_a_cursor_taken_in_the_pinned_part_continues_into_the_unpinned_part(alice):
    pinned = [make(alice, f"p{i}", at=T0 - timedelta(minutes=i), pinned=True) for i in range(2)]
    rest = [make(alice, f"r{i}", at=T0 - timedelta(minutes=i)) for i in range(3)]
    first = selectors.conversation_list(user=alice, limit=2)
    assert [c.id for c in first] == [c.id for c in pinned]
    second = selectors.conversation_list(user=alice, limit=2, cursor=first.next_cursor)
    assert [c.id for c in second] == [rest[0].id, rest[1].id]
    third = selectors.conversation_list(user=alice, limit=2, cursor=second.next_cursor)
    assert [c.id for c in third] == [rest[2].id]
    assert third.next_cursor is None


def test_archived_are_hidden_from_the_list_and_shown_in_the_archive(alice):
    kept = make(alice, "kept")
    gone = make(alice, "archived one", archived=True)
    assert [c.id for c in selectors.conversation_list(user=alice)] == [kept.id]
    assert [c.id for c in selectors.conversation_list(user=alice, archived=True)] == [gone.id]

    client = logged_in(alice)
    body = client.get("/api/history/").json()
    assert [c["id"] for c in body["conversations"]] == [str(kept.id)]
    body = client.get("/api/history/?archived=1").json()
    assert [c["id"] for c in body["conversations"]] == [str(gone.id)]
    assert body["conversations"][0]["archived"] is True


def test_groups_follow_the_clients_day_not_the_servers():
    now = datetime(2026, 3, 10, 0, 30, tzinfo=UTC)  # 02:30 in UTC+2, 19:30 the day before in UTC-5

    def group(at, tz_offset, pinned=False):
        conversation = Conversation(updated_at=at, pinned=pinned)
        return selectors.conversation_item(conversation=conversation, tz_offset=tz_offset, now=now).group

    late_yesterday_utc = datetime(2026, 3, 9, 23, 0, tzinfo=UTC)
    assert group(late_yesterday_utc, 0) == "yesterday"
    assert group(late_yesterday_utc, 120) == "today"  # 01:00 on the 10th in UTC+2
    assert group(datetime(2026, 3, 9, 20, 0, tzinfo=UTC), -300) == "today"  # 15:00 on the 9th, UTC-5
    assert group(datetime(2026, 3, 9, 0, 10, tzinfo=UTC), -300) == "yesterday"  # 19:10 on the 8th
    assert group(now - timedelta(days=2), 0) == "last_7_days"
    assert group(now - timedelta(days=6), 0) == "last_7_days"
    assert group(now - timedelta(days=7), 0) == "older"
    assert group(now - timedelta(days=400), 0) == "older"
    assert group(now + timedelta(minutes=5), 0) == "today"  # a clock slightly ahead
    assert group(now - timedelta(days=400), 0, pinned=True) == "pinned"


def test_the_list_endpoint_pages_with_an_opaque_cursor(alice, bob):
    made = [make(alice, f"c{i}", at=T0 - timedelta(minutes=i % 3)) for i in range(7)]
    make(bob, "not alice's")
    client = logged_in(alice)
    seen, cursor = [], ""
    while True:
        response = client.get("/api/history/", {"limit": 3, "cursor": cursor, "tz_offset": 60})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"conversations", "next_cursor"}
        for item in body["conversations"]:
            assert set(item) == {"id", "title", "model", "updated_at", "pinned", "archived", "group"}
            assert item["group"] in selectors.GROUPS
        seen += [item["id"] for item in body["conversations"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == [str(c.id) for c in sorted(made, key=list_order_key)]


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "W1tdXQ"},  # valid base64, wrong shape
        {"tz_offset": "abc"},
        {"tz_offset": "100000"},
        {"archived": "maybe"},
        {"limit": "0"},
        {"limit": "100000"},
    ],
)
def test_bad_list_parameters_are_a_400_not_a_500(alice, query):
    response = logged_in(alice).get("/api/history/", query)
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid", "invalid_cursor"}


def test_the_endpoints_need_a_login(alice):
    conversation = make(alice)
    client = Client()
    assert client.get("/api/history/").status_code == 401
    assert client.get("/api/search/?q=x").status_code == 401
    url = f"/api/conversations/{conversation.pk}/update/"
    assert client.post(url, '{"pinned": true}', content_type="application/json").status_code == 401
    assert client.post(f"/api/conversations/{conversation.pk}/delete/").status_code == 401
    conversation.refresh_from_db()
    assert not conversation.pinned


def test_the_old_callers_of_conversation_list_still_work(alice):
    conversation = make(alice, "visible")
    make(alice, "hidden", archived=True)
    page = selectors.conversation_list(user=alice)
    assert [serializers.conversation_to_dict(c)["id"] for c in page] == [str(conversation.id)]
    body = logged_in(alice).get("/api/conversations/").json()
    assert [c["id"] for c in body["conversations"]] == [str(conversation.id)]
    assert logged_in(alice).get("/").status_code == 200


def test_a_page_costs_the_same_few_queries_however_it_is_serialized(alice):
    from django.test.utils import CaptureQueriesContext

    for i in range(30):
        make(alice, f"c{i}", at=T0 - timedelta(minutes=i), pinned=i < 3)
    with CaptureQueriesContext(connection) as queries:
        page = selectors.conversation_list(user=alice, limit=20)
        [serializers.conversation_item_to_dict(item) for item in page.items]
        [serializers.conversation_to_dict(c) for c in page]  # the chat page's sidebar
    assert len(queries) == 2  # the pinned part, then the rest
    with CaptureQueriesContext(connection) as queries:
        selectors.conversation_list(user=alice, limit=20, cursor=page.next_cursor)
    assert len(queries) == 1


def _plan(sql: str, params) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


@pytest.mark.parametrize("with_cursor", [False, True])
def test_the_list_query_walks_the_list_index_without_sorting(alice, with_cursor):
    conversation = make(alice)
    after = selectors._Position(False, conversation.updated_at, conversation.id) if with_cursor else None
    qs = selectors._list_partition(user=alice, archived=False, pinned=False, after=after)[:51]
    sql, params = qs.query.sql_with_params()
    plan = _plan(sql, params)
    assert "conv_user_list" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


# --- actions ---------------------------------------------------------------


def post_json(client: Client, url: str, body, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


def test_rename_trims_and_makes_the_title_the_users(alice):
    conversation = make(alice, "auto title")
    assert conversation.title_is_auto
    response = post_json(
        logged_in(alice),
        f"/api/conversations/{conversation.pk}/update/?tz_offset=0",
        {"title": "  My   trip\nplans  "},
    )
    assert response.status_code == 200
    item = response.json()["conversation"]
    assert item["title"] == "My trip plans"
    assert item["id"] == str(conversation.pk)
    conversation.refresh_from_db()
    assert conversation.title == "My trip plans"
    assert not conversation.title_is_auto
    assert conversation.updated_at == T0  # renaming is not activity: the list order stays


@pytest.mark.parametrize("title", ["", "   \n\t ", "x" * 201, 42, None, ["a"]])
def test_invalid_titles_are_refused_and_change_nothing(alice, title):
    conversation = make(alice, "keep me")
    response = post_json(logged_in(alice), f"/api/conversations/{conversation.pk}/update/", {"title": title})
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid", "invalid_title"}
    conversation.refresh_from_db()
    assert conversation.title == "keep me" and conversation.title_is_auto


def test_a_title_of_exactly_200_characters_is_fine(alice):
    conversation = make(alice)
    title = "é" * 200
    updated = conversation_services.conversation_update(
        user=alice, conversation_id=conversation.pk, title=title
    )
    assert updated.title == title


def test_pin_unpin_archive_unarchive(alice):
    conversation = make(alice, "x")
    other = make(alice, "newer", at=T0 + timedelta(hours=1))
    client = logged_in(alice)
    url = f"/api/conversations/{conversation.pk}/update/"

    body = post_json(client, url, {"pinned": True}).json()["conversation"]
    assert body["pinned"] is True and body["group"] == "pinned"
    assert [c.id for c in selectors.conversation_list(user=alice)] == [conversation.id, other.id]

    assert post_json(client, url, {"pinned": False}).json()["conversation"]["pinned"] is False
    assert [c.id for c in selectors.conversation_list(user=alice)] == [other.id, conversation.id]

    assert post_json(client, url, {"archived": True}).json()["conversation"]["archived"] is True
    assert [c.id for c in selectors.conversation_list(user=alice)] == [other.id]
    assert [c.id for c in selectors.conversation_list(user=alice, archived=True)] == [conversation.id]

    body = post_json(client, url, {"archived": False, "pinned": True, "title": "both"}).json()
    assert body["conversation"]["archived"] is False and body["conversation"]["pinned"] is True
    assert body["conversation"]["title"] == "both"
    conversation.refresh_from_db()
    assert (conversation.archived, conversation.pinned, conversation.updated_at) == (False, True, T0)


@pytest.mark.parametrize(
    "body",
    [{}, {"pinned": "yes"}, {"archived": 1}, {"colour": "red"}, [], "title", None],
)
def test_malformed_action_bodies_are_a_400(alice, body):
    conversation = make(alice)
    response = post_json(logged_in(alice), f"/api/conversations/{conversation.pk}/update/", body)
    assert response.status_code == 400
    conversation.refresh_from_db()
    assert (conversation.pinned, conversation.archived, conversation.title) == (False, False, "chat")


def test_the_body_limit_leaves_room_for_the_longest_settings(alice):
    from conversations.views import history as views_history

    conversation = make(alice)
    prompt = "é🙂" * (views_history.MAX_SYSTEM_PROMPT_CHARS // 2)
    body = json.dumps({"title": "t" * 200, "system_prompt": prompt})  # ASCII-escaped: 6-12 bytes a char
    url = f"/api/conversations/{conversation.pk}/update/"
    response = logged_in(alice).post(url, body, content_type="application/json")
    assert response.status_code == 200, response.content
    too_big = json.dumps({"title": "x" * (views_history.MAX_BODY_BYTES + 1)})
    response = logged_in(alice).post(url, too_big, content_type="application/json")
    assert response.status_code == 400


def test_a_body_that_is_not_json_is_a_400(alice):
    conversation = make(alice)
    response = logged_in(alice).post(
        f"/api/conversations/{conversation.pk}/update/", b"\xff{", content_type="application/json"
    )
    assert response.status_code == 400


def test_actions_are_post_only(alice):
    conversation = make(alice)
    client = logged_in(alice)
    assert client.get(f"/api/conversations/{conversation.pk}/update/").status_code == 405
    assert client.get(f"/api/conversations/{conversation.pk}/delete/").status_code == 405
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_actions_need_the_csrf_token(alice):
    conversation = make(alice)
    client = logged_in(alice, enforce_csrf_checks=True)
    url = f"/api/conversations/{conversation.pk}/update/"
    assert post_json(client, url, {"pinned": True}).status_code == 403
    assert client.post(f"/api/conversations/{conversation.pk}/delete/").status_code == 403
    conversation.refresh_from_db()
    assert not conversation.pinned

    client.get("/")  # the chat page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    assert post_json(client, url, {"pinned": True}, HTTP_X_CSRFTOKEN=token).status_code == 200
    response = client.post(f"/api/conversations/{conversation.pk}/delete/", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_another_users_conversation_is_a_404_exactly_like_a_missing_one(alice, bob):
    theirs = make(bob, "bob's secret", messages=2)
    client = logged_in(alice)
    answers = []
    for conversation_id in (theirs.pk, uuid.uuid4()):
        for url, body in [
            (f"/api/conversations/{conversation_id}/update/", {"title": "mine now"}),
            (f"/api/conversations/{conversation_id}/update/", {"pinned": True}),
            (f"/api/conversations/{conversation_id}/update/", {"archived": True}),
            (f"/api/conversations/{conversation_id}/delete/", {}),
        ]:
            response = post_json(client, url, body)
            answers.append((response.status_code, response.content))
    assert answers[:4] == answers[4:]
    assert {status for status, _ in answers} == {404}
    theirs_after = Conversation.objects.get(pk=theirs.pk)
    assert (theirs_after.title, theirs_after.pinned, theirs_after.archived) == ("bob's secret", False, False)
    assert theirs_after.title_is_auto
    assert Message.objects.filter(conversation=theirs).count() == 2
    with pytest.raises(NotFound):
        conversation_services.conversation_update(user=alice, conversation_id=theirs.pk, pinned=True)
    with pytest.raises(NotFound):
        conversation_services.conversation_delete(user=alice, conversation_id=theirs.pk)


def test_delete_removes_the_conversation_and_its_messages_only(alice):
    doomed = make(alice, "doomed", messages=3)
    kept = make(alice, "kept", messages=2)
    response = logged_in(alice).post(f"/api/conversations/{doomed.pk}/delete/")
    assert response.status_code == 200
    assert response.json() == {"deleted": str(doomed.pk)}
    assert not Conversation.objects.filter(pk=doomed.pk).exists()
    assert not Message.objects.filter(conversation_id=doomed.pk).exists()
    assert Message.objects.filter(conversation=kept).count() == 2
    assert logged_in(alice).post(f"/api/conversations/{doomed.pk}/delete/").status_code == 404


def test_delete_with_a_reply_left_streaming_by_a_dead_process(alice):
    # The database says "streaming" but no live process runs it: nothing to
    # stop, and the delete goes through.
    conversation = make(alice)
    Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", worker="gone-host:1:1"
    )
    assert logged_in(alice).post(f"/api/conversations/{conversation.pk}/delete/").status_code == 200
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


async def asgi_post(user, path: str, body: bytes = b"") -> dict:
    from channels.testing import HttpCommunicator
    from django.utils.crypto import get_random_string

    from chatsite.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(user)
    csrf = get_random_string(32)
    cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}"
    headers = [
        (b"host", b"localhost"),
        (b"cookie", cookie.encode()),
        (b"x-csrftoken", csrf.encode()),
        (b"content-type", b"application/json"),
    ]
    communicator = HttpCommunicator(application, "POST", path, body=body, headers=headers)
    response = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=10)  # the request's thread closes its connection
    return response


@pytest.mark.usefixtures("clean_loop_state")
async def test_delete_stops_a_streaming_reply_first(connect, alice, upstream):
    socket = await connect(alice)
    await socket.send(
        type="send", client_id="c1", conversation=None, text="go on", model="openai/fake?fault=drip&rate=50"
    )
    ack = await socket.recv()
    started = await socket.recv()
    assert started["type"] == "reply_started"
    await socket.recv_until("delta")
    conversation_id = uuid.UUID(ack["conversation"])
    live = registry.for_conversation(conversation_id)
    assert live is not None and not live.finished

    # Through the real ASGI stack, as daphne runs it (a thread per request for
    # its sync parts), on this loop, where the reply runs.
    response = await asgi_post(alice, f"/api/conversations/{conversation_id}/delete/")
    assert response["status"] == 200, response
    assert live.finished and live.status == "stopped"
    assert registry.for_conversation(conversation_id) is None
    finished = (await socket.recv_until("reply_finished"))[-1]
    assert finished["status"] == "stopped"

    @sync_to_async
    def left() -> tuple[bool, int]:
        return (
            Conversation.objects.filter(pk=conversation_id).exists(),
            Message.objects.filter(conversation_id=conversation_id).count(),
        )

    assert await left() == (False, 0)
    await asyncio.sleep(0.3)  # a late checkpoint must not bring anything back
    assert await left() == (False, 0)
