"""Full-text search on the database's own engine: SQLite FTS5 by default,
PostgreSQL full-text search with ``DATABASE_URL=postgres://...``. The same
behaviour is expected of both."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from conversations import search
from conversations.exceptions import QueryTooLong
from conversations.models import Conversation, Message
from conversations.services import conversations as conversation_services
from conversations.services import exchanges as exchange_services
from conversations.services import replies as reply_services
from tests.factories import conversation, logged_in, message

pytestmark = pytest.mark.django_db(transaction=True)

FILLER = "the quick brown fox jumps over the lazy dog while we talk about nothing in particular. "


def find(user, query: str, **kwargs) -> list[search.SearchHit]:
    return search.search_messages(user=user, query=query, **kwargs)


def matched_words(hit: search.SearchHit) -> list[str]:
    return [part["text"].lower() for part in hit.snippet if part["match"]]


def snippet_text(hit: search.SearchHit) -> str:
    return "".join(part["text"] for part in hit.snippet)


def test_finds_a_word_deep_in_a_long_reply_with_a_highlighted_snippet(alice):
    conv = conversation(alice, "travel")
    message(conv, "tell me a long story")
    reply = message(
        conv, FILLER * 300 + "then the caravan reached Zanzibar at dawn. " + FILLER * 300, "assistant"
    )
    hits = find(alice, "zanzibar")
    assert [(h.message_id, h.role, h.kind) for h in hits] == [(reply.pk, "assistant", "message")]
    hit = hits[0]
    assert matched_words(hit) == ["zanzibar"]
    text = snippet_text(hit)
    assert "caravan reached Zanzibar at dawn" in text
    assert len(text) < 400  # a snippet, not the whole reply
    assert hit.conversation_id == conv.pk and hit.conversation_title == "travel"
    assert hit.url == f"/c/{conv.pk}/#m-{reply.pk}"


def test_a_title_match_ranks_above_a_passing_mention(alice):
    titled = conversation(alice, "Kubernetes deployment notes")
    message(titled, "how do I roll back a release?")
    mentioned = conversation(alice, "misc")
    message(mentioned, FILLER * 5 + "someone mentioned kubernetes once. " + FILLER * 5)
    hits = find(alice, "kubernetes")
    assert [h.kind for h in hits] == ["title", "message"]
    assert hits[0].conversation_id == titled.pk and hits[0].message_id is None
    assert hits[0].url == f"/c/{titled.pk}/"
    assert matched_words(hits[0]) == ["kubernetes"]
    assert hits[1].conversation_id == mentioned.pk
    assert hits[0].score > hits[1].score


def test_more_occurrences_rank_higher(alice):
    conv = conversation(alice)
    once = message(conv, "raft " + "filler words here " * 10 + "consensus")
    many = message(conv, "raft raft consensus raft " + "filler words here " * 9 + "raft")
    none = message(conv, "paxos " + "filler words here " * 10)
    hits = find(alice, "raft")
    assert [h.message_id for h in hits] == [many.pk, once.pk]
    assert none.pk not in {h.message_id for h in hits}
    # Every word must match: both messages have "raft" and "consensus".
    assert {h.message_id for h in find(alice, "consensus raft")} == {many.pk, once.pk}
    assert find(alice, "raft paxos") == []


def test_the_last_word_matches_as_a_prefix(alice):
    conv = conversation(alice)
    hit = message(conv, "we discussed deployment strategies for postgres")
    assert [h.message_id for h in find(alice, "deplo")] == [hit.pk]
    assert matched_words(find(alice, "deplo")[0]) == ["deployment"]
    assert [h.message_id for h in find(alice, "postgres strat")] == [hit.pk]
    # Only the last word is a prefix; earlier words are whole words.
    assert find(alice, "deplo strategies") == []
    # From three letters on (a shorter prefix would match too much to be fast).
    assert [h.message_id for h in find(alice, "dep")] == [hit.pk]
    assert find(alice, "de") == []
    assert find(alice, "for/po") == []  # the prefix is "po": too short
    assert [h.message_id for h in find(alice, "for/pos")] == [hit.pk]


def test_never_returns_another_users_content(alice, bob):
    mine = conversation(alice, "shared word alpha")
    message(mine, "alpha in alice's message")
    theirs = conversation(bob, "bob alpha secrets")
    message(theirs, "alpha in bob's message, with bobsecret")
    hits = find(alice, "alpha")
    assert hits and {h.conversation_id for h in hits} == {mine.pk}
    assert find(alice, "bobsecret") == []
    assert find(alice, "secrets") == []
    body = logged_in(alice).get("/api/search/", {"q": "alpha"}).json()
    assert {r["conversation"] for r in body["results"]} == {str(mine.pk)}
    assert "bob" not in str(body)


def test_archived_conversations_are_searched_and_say_so(alice):
    conv = conversation(alice, "old stuff", archived=True)
    msg = message(conv, "the word xylophone")
    hits = find(alice, "xylophone")
    assert [(h.message_id, h.archived) for h in hits] == [(msg.pk, True)]


HOSTILE = [
    '"',
    '""',
    '"unbalanced',
    "*",
    "a*",
    "NEAR(",
    "NEAR(a b, 2)",
    "OR",
    "a OR b",
    "AND NOT",
    "-",
    "-word",
    "+",
    "^",
    "title:x",
    "{title content}: x",
    "owner : u1",
    "(",
    ")",
    "'",
    "\\",
    "a\\b",
    ":*",
    "x:*",
    "&",
    "|",
    "!",
    "!!x",
    "<->",
    "a <-> b",
    "%",
    "_",
    "'); DROP TABLE conversations_message; --",
    "1=1; SELECT * FROM auth_user",
    "\x00",
    "a\x00b",
    "\u202e",  # right-to-left override
    "e\u0301",  # e + combining acute
    "🙂",
    "日本語",
    "שלום",
    "\ue000\ue001",  # our own highlight markers
    " ",
    "\t\n",
]


def test_hostile_queries_never_fail(alice, bob):
    conv = conversation(alice, "near or and not")
    message(conv, 'near or and not: "quoted" a*b title:x owner u1 (x) 日本語 🙂 שלום \ue000mark\ue001')
    message(conversation(bob), "word b a x u1 near or and not")
    client = logged_in(alice)
    for query in HOSTILE:
        hits = find(alice, query)  # must not raise
        assert all(h.conversation_id == conv.pk for h in hits), query
        response = client.get("/api/search/", {"q": query})
        assert response.status_code == 200, query
        assert all(r["conversation"] == str(conv.pk) for r in response.json()["results"]), query


def test_operator_words_are_searched_literally(alice):
    conv = conversation(alice)
    literal = message(conv, "either this OR that, NEAR the end; do NOT panic")
    message(conv, "nothing relevant here")
    assert [h.message_id for h in find(alice, "OR")] == [literal.pk]
    assert [h.message_id for h in find(alice, "NEAR(")] == [literal.pk]
    assert [h.message_id for h in find(alice, '"not" -panic')] == [literal.pk]


def test_punctuation_inside_words_is_a_separator_on_both_engines(alice):
    conv = conversation(alice)
    msg = message(conv, "run /usr/bin/python3 and mail me at e-mail; <div class=box>done</div>")
    for query in ("python3", "usr/bin", "e-mail", "box", "div", "mail"):
        assert [h.message_id for h in find(alice, query)] == [msg.pk], query
    assert matched_words(find(alice, "python3")[0]) == ["python3"]
    assert "<div class=box>" in snippet_text(find(alice, "box")[0])  # markup is text, kept as is


def test_unicode_text_is_searchable(alice):
    conv = conversation(alice, "Café crème")
    msg = message(conv, "Größe matters: naïve café in 東京 😀")
    assert [h.kind for h in find(alice, "café")] == ["title", "message"]
    assert [h.message_id for h in find(alice, "größe")] == [msg.pk]
    assert [h.message_id for h in find(alice, "NAÏVE")] == [msg.pk]  # case-insensitive
    assert [h.message_id for h in find(alice, "東京")] == [msg.pk]


def test_snippets_are_text_parts_never_markup(alice):
    conv = conversation(alice)
    message(conv, "<script>alert('x')</script> <mark>fake</mark> payload needle &amp; more")
    (hit,) = find(alice, "needle")
    assert all(set(part) == {"text", "match"} for part in hit.snippet)
    assert [p["text"] for p in hit.snippet if p["match"]] == ["needle"]
    # Markup stays text, for the client to escape (a snippet starts at a word).
    assert "script>alert('x')</script> <mark>fake</mark> payload" in snippet_text(hit)
    assert "\ue000" not in snippet_text(hit) and "\ue001" not in snippet_text(hit)


def test_empty_and_blank_queries_find_nothing_without_error(alice):
    message(conversation(alice, "anything"), "anything at all")
    for query in ("", "   ", "\n\t", "-- !! **"):
        assert find(alice, query) == []
        response = logged_in(alice).get("/api/search/", {"q": query})
        assert response.status_code == 200
        assert response.json() == {"query": query, "results": [], "next_offset": None}
    assert logged_in(alice).get("/api/search/").json()["results"] == []


def test_a_very_long_query_is_a_clear_400(alice):
    response = logged_in(alice).get("/api/search/", {"q": "a" * 1000})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "query_too_long"
    assert str(search.MAX_QUERY_CHARS) in body["message"]
    with pytest.raises(QueryTooLong):
        find(alice, "word " * 100)


def test_results_page_with_offset(alice):
    conv = conversation(alice)
    made = {message(conv, f"pagination entry number {i}").pk for i in range(7)}
    client = logged_in(alice)
    seen, offset = [], 0
    while offset is not None:
        body = client.get("/api/search/", {"q": "pagination", "limit": 3, "offset": offset}).json()
        seen += [r["message"] for r in body["results"]]
        offset = body["next_offset"]
    assert sorted(seen) == sorted(str(pk) for pk in made)
    assert client.get("/api/search/", {"q": "x", "limit": 0}).status_code == 400
    assert client.get("/api/search/", {"q": "x", "offset": -1}).status_code == 400


def test_the_json_shape(alice):
    conv = conversation(alice, "shape")
    msg = message(conv, "json shape check")
    (hit,) = logged_in(alice).get("/api/search/", {"q": "check"}).json()["results"]
    assert hit == {
        "kind": "message",
        "conversation": str(conv.pk),
        "title": "shape",
        "archived": False,
        "message": str(msg.pk),
        "role": "user",
        "created_at": msg.created_at.isoformat(),
        "snippet": [{"text": "json shape ", "match": False}, {"text": "check", "match": True}],
        "url": f"/c/{conv.pk}/#m-{msg.pk}",
    }


# --- keeping up with writes ---------------------------------------------------


def test_edits_renames_and_deletes_are_reflected(alice):
    conv = conversation(alice, "first title")
    msg = message(conv, "original wording")
    assert find(alice, "original")
    Message.objects.filter(pk=msg.pk).update(content="revised wording")
    assert find(alice, "original") == []
    assert [h.message_id for h in find(alice, "revised")] == [msg.pk]

    conversation_services.conversation_update(user=alice, conversation_id=conv.pk, title="second heading")
    assert [h.kind for h in find(alice, "first")] == []
    assert [h.kind for h in find(alice, "heading")] == ["title"]

    msg.delete()
    assert find(alice, "revised") == []
    assert [h.kind for h in find(alice, "heading")] == ["title"]

    other = message(conv, "still wording here")
    conversation_services.conversation_delete(user=alice, conversation_id=conv.pk)
    assert find(alice, "wording") == []
    assert find(alice, "heading") == []
    assert not Message.objects.filter(pk=other.pk).exists()


def test_a_streaming_reply_is_searchable_once_checkpointed(alice):
    exchange = exchange_services.exchange_start(
        user=alice,
        conversation_id=None,
        client_id="c1",
        text="write a poem",
        model="openai/fake",
        provider="openai",
    )
    reply = exchange.reply
    assert reply.status == "streaming" and reply.content == ""
    assert find(alice, "albatross") == []
    reply_services.reply_checkpoint_many(
        checkpoints=[
            reply_services.ReplyCheckpoint(reply_id=reply.pk, content="an albatross glides", last_seq=3)
        ]
    )
    assert [h.message_id for h in find(alice, "albatross")] == [reply.pk]
    reply_services.reply_finish(
        reply_id=reply.pk, content="an albatross glides over the sea", last_seq=7, status="complete"
    )
    assert [h.message_id for h in find(alice, "sea")] == [reply.pk]
    assert [h.kind for h in find(alice, "poem")] == ["title", "message"]  # the automatic title too


def test_messages_stored_before_their_conversation_are_found(alice):
    # Foreign keys are checked at commit, so a bulk import may store the
    # messages first.
    from django.db import transaction

    conv_id = uuid.uuid4()
    with transaction.atomic():
        msg = Message.objects.create(conversation_id=conv_id, role="user", content="imported quokka")
        Conversation.objects.create(
            id=conv_id, user=alice, title="imported", model="openai/fake", client_id=uuid.uuid4().hex
        )
    assert [h.message_id for h in find(alice, "quokka")] == [msg.pk]


# --- the engines --------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite FTS5")
def test_sqlite_index_is_kept_by_triggers_and_consistent(alice):
    from importlib import import_module

    migration = import_module("conversations.migrations.0004_search")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        triggers = {row[0] for row in cursor.fetchall()}
    # A later migration that rebuilds a table drops its triggers: see 0004_search.
    assert set(migration.SQLITE_TRIGGER_NAMES) <= triggers

    conv = conversation(alice, "consistency")
    msgs = [message(conv, f"text number {i}") for i in range(5)]
    Message.objects.filter(pk=msgs[0].pk).update(content="changed")
    msgs[1].delete()
    conversation_services.conversation_update(user=alice, conversation_id=conv.pk, title="renamed")
    doomed = conversation(alice, "doomed")
    message(doomed, "bye")
    conversation_services.conversation_delete(user=alice, conversation_id=doomed.pk)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO conversations_search (conversations_search) VALUES ('integrity-check')")
        cursor.execute("SELECT count(*) FROM conversations_searchdoc")
        (docs,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM conversations_search")
        (indexed,) = cursor.fetchone()
    expected = Conversation.objects.count() + Message.objects.count()
    assert docs == indexed == expected


def _pg_plan(sql: str, params, **settings: str) -> str:
    with connection.cursor() as cursor:
        for name, value in settings.items():
            cursor.execute(f"SET {name} = {value}")
        try:
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET ALL")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL full-text search")
def test_postgresql_search_predicates_match_the_indexes(alice):
    # The predicates search_messages filters on can be answered by the GIN
    # indexes (on these tiny tables the planner would rather not: sequential
    # and plain index scans are made unattractive). The benchmark shows the
    # plans at scale.
    from django.contrib.postgres.search import SearchQuery, SearchVector

    query = SearchQuery(search.tsquery(["needle"]), config="simple", search_type="raw")
    messages = Message.objects.annotate(d=search._MessageSearchVector()).filter(d=query).values("pk")
    titles = (
        Conversation.objects.annotate(d=SearchVector(search._pg_masked("title"), config="simple"))
        .filter(d=query)
        .values("pk")
    )
    off = {"enable_seqscan": "off", "enable_indexscan": "off"}
    plan = _pg_plan(*messages.query.sql_with_params(), **off)
    assert "conversations_message_search" in plan, plan
    plan = _pg_plan(*titles.query.sql_with_params(), **off)
    assert "conversations_conversation_search" in plan, plan

    conv = conversation(alice, "needle in the title")
    message(conv, "a needle in the content")
    queries: list[str] = []

    def capture(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assert [h.kind for h in find(alice, "needle")] == ["title", "message"]
    assert any('"search_vector" @@' in sql for sql in queries), queries


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL full-text search")
def test_postgresql_indexes_a_huge_message_without_failing(alice):
    # A tsvector is at most 1 MB: the index takes the first 200,000 characters.
    conv = conversation(alice)
    words = " ".join(f"w{i}x" for i in range(400_000))
    msg = message(conv, "findme " + words)
    assert [h.message_id for h in find(alice, "findme")] == [msg.pk]
