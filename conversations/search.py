"""Full-text search over the user's messages and conversation titles.

One function, :func:`search_messages`, on the database's own engine:

* SQLite: the FTS5 table ``conversations_search`` (migration 0004), ranked by
  bm25 with a title worth ten times a message, snippets by FTS5's
  ``snippet()``;
* PostgreSQL: ``SearchQuery``/``SearchRank``/``SearchHeadline`` on the
  ``'simple'`` configuration, over the stored ``search_vector`` column of the
  messages and ``SearchVector`` of the titles, through the GIN indexes of
  migration 0004.

Either way only the newest ``CANDIDATES`` matches are ranked, so a query that
matches most of a large history costs about what a rare one does.

Both engines tokenize alike (lower-cased words, no stemming, no stop words),
so a query finds the same things on either. The user's text is never parsed
as query syntax: it is cut into words at white space, each word is matched
literally (as a phrase of its tokens: ``e-mail`` is ``e`` followed by
``mail``), all words must match, and the last one also matches as a prefix
(search as you type), once it is ``PREFIX_MIN_CHARS`` long.

Snippets come back as parts, ``[{"text": ..., "match": bool}]``: plain text,
never HTML, so stored text cannot inject markup.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.postgres.search import SearchVectorField
from django.db import connection
from django.db.models import Expression, F, Func, Subquery, TextField, Value
from django.db.models.functions import Left
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from conversations.exceptions import QueryTooLong
from conversations.models import Conversation, Message

#: Longer queries are refused (HTTP 400).
MAX_QUERY_CHARS = 256
#: At most this many words are used; more are refused (HTTP 400).
MAX_QUERY_WORDS = 32
#: The last word matches as a prefix once it has this many characters (a
#: shorter prefix would merge the postings of too many words to stay fast).
PREFIX_MIN_CHARS = 3
MAX_LIMIT = 50
#: Ranking reads at most this many matching messages (and as many titles): the
#: most recently written ones. A query with fewer matches is ranked exactly; a
#: very common one ranks its newest matches, so its cost stays bounded.
CANDIDATES = 1000
#: Results past this many are not offered (offset + limit).
MAX_RESULTS = 500
#: A title match counts this many times a content match.
TITLE_WEIGHT = 10.0
#: PostgreSQL indexes the first this many characters of a message, its ASCII
#: punctuation masked as private-use characters (word separators to the parser);
#: the same as migration 0004's index expressions.
PG_CONTENT_CHARS = 200_000
PG_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
PG_MASK = "".join(chr(0xE010 + i) for i in range(len(PG_PUNCTUATION)))
SNIPPET_TOKENS = 24

# Highlight markers inside the database's snippet text: private-use characters,
# split out in Python. (Stored text containing them can at worst mark its own
# text as a match; it can never become markup.)
_START, _STOP, _ELLIPSIS = "\ue000", "\ue001", "…"


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation_id: uuid.UUID
    conversation_title: str
    archived: bool
    message_id: uuid.UUID | None  # None: the conversation's title matched
    role: str | None  # "user" / "assistant"; None for a title
    created_at: datetime  # the message's; for a title, the conversation's last activity
    snippet: list[dict]  # [{"text": str, "match": bool}], in order
    score: float  # higher is better; comparable within one search only

    @property
    def kind(self) -> str:
        return "title" if self.message_id is None else "message"

    @property
    def url(self) -> str:
        """The conversation's page; for a message, with ``#m-<message id>``."""
        url = reverse("conversation", kwargs={"conversation_id": self.conversation_id})
        return url if self.message_id is None else f"{url}#m-{self.message_id}"

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "conversation": str(self.conversation_id),
            "title": self.conversation_title,
            "archived": self.archived,
            "message": str(self.message_id) if self.message_id is not None else None,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "snippet": self.snippet,
            "url": self.url,
        }


# --------------------------------------------------------------------------
# The query


def query_words(query: str) -> list[str]:
    """The words of a user's query: split at white space, control characters
    dropped, words without a letter or digit dropped. Raises
    :class:`QueryTooLong`."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryTooLong(f"the query is longer than {MAX_QUERY_CHARS} characters")
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in query)
    words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
    if len(words) > MAX_QUERY_WORDS:
        raise QueryTooLong(f"the query has more than {MAX_QUERY_WORDS} words")
    return words


def _prefix(word: str) -> bool:
    """Whether the word's last token (what a prefix applies to) is long enough."""
    tokens = "".join(ch if ch.isalnum() else " " for ch in word).split()
    return bool(tokens) and len(tokens[-1]) >= PREFIX_MIN_CHARS


def fts5_query(words: list[str]) -> str:
    """An FTS5 MATCH expression: every word a quoted phrase (so nothing in it
    is syntax), the last one also a prefix, all ANDed."""
    phrases = ['"' + w.replace('"', '""') + '"' for w in words]
    if _prefix(words[-1]):
        phrases[-1] += " *"
    return " AND ".join(phrases)


def tsquery(words: list[str]) -> str:
    """A ``to_tsquery`` text: every word a quoted phrase (its punctuation masked
    as in the index, so no quote or backslash is left to escape), the last one
    also a prefix (``:*``), all ANDed."""
    table = str.maketrans(PG_PUNCTUATION, PG_MASK)
    terms = ["'" + word.translate(table) + "'" for word in words]
    if _prefix(words[-1]):
        terms[-1] += ":*"
    return " & ".join(terms)


def snippet_parts(marked: str) -> list[dict]:
    """Split text with highlight markers into ``{"text", "match"}`` parts."""
    parts: list[dict] = []
    match = False
    buf: list[str] = []

    def flush() -> None:
        if buf:
            text = "".join(buf)
            if parts and parts[-1]["match"] == match:
                parts[-1]["text"] += text
            else:
                parts.append({"text": text, "match": match})
            buf.clear()

    for ch in marked:
        if ch in (_START, _STOP):
            flush()
            match = ch == _START
        else:
            buf.append(ch)
    flush()
    return parts


# --------------------------------------------------------------------------
# The search


def search_messages(
    *, user: AbstractBaseUser, query: str, limit: int = 20, offset: int = 0
) -> list[SearchHit]:
    """The user's messages and conversation titles that match ``query``, best
    first (archived conversations included). An empty query (or one with no
    word) finds nothing. Raises :class:`QueryTooLong`."""
    words = query_words(query)
    limit = max(1, min(int(limit), MAX_LIMIT))
    offset = max(0, int(offset))
    if not words or offset >= MAX_RESULTS:
        return []
    limit = min(limit, MAX_RESULTS - offset)
    if connection.vendor == "postgresql":
        return _search_postgresql(user, words, limit, offset)
    if connection.vendor == "sqlite":
        return _search_sqlite(user, words, limit, offset)
    raise NotImplementedError(f"no full-text search on {connection.vendor}")


def _search_sqlite(user: AbstractBaseUser, words: list[str], limit: int, offset: int) -> list[SearchHit]:
    match = fts5_query(words)
    with connection.cursor() as cursor:
        # The newest CANDIDATES matches (FTS5 walks its doclists by rowid, so
        # this stops early), each with its bm25 (lower is better; a title
        # counts TITLE_WEIGHT times); ranked here.
        cursor.execute(
            f"""
            SELECT s.rowid, bm25(conversations_search, {TITLE_WEIGHT}, 1.0)
            FROM conversations_search s JOIN conversations_searchdoc d ON d.id = s.rowid
            WHERE conversations_search MATCH %s AND d.user_id = %s
            ORDER BY s.rowid DESC LIMIT {CANDIDATES}
            """,
            [match, user.pk],
        )
        ranked = sorted(cursor.fetchall(), key=lambda row: (row[1], -row[0]))[offset : offset + limit]
        if not ranked:
            return []
        ids = [rowid for rowid, _ in ranked]
        # Snippets for the page only. The rowid range is handed to FTS5 (one
        # pass over that stretch of the doclists); ``+rowid IN`` is a plain
        # filter: as an FTS5 constraint it would redo the MATCH (a prefix
        # query's merge included) once per rowid.
        cursor.execute(
            f"""
            SELECT s.rowid, d.conversation_id, d.message_id, c.title, c.archived, c.updated_at,
                   m.role, m.created_at,
                   snippet(conversations_search, -1, '{_START}', '{_STOP}', '{_ELLIPSIS}', {SNIPPET_TOKENS})
            FROM conversations_search s
            JOIN conversations_searchdoc d ON d.id = s.rowid
            JOIN conversations_conversation c ON c.id = d.conversation_id
            LEFT JOIN conversations_message m ON m.id = d.message_id
            WHERE conversations_search MATCH %s AND s.rowid BETWEEN %s AND %s
                  AND +s.rowid IN ({", ".join(["%s"] * len(ranked))}) AND c.user_id = %s
            """,
            [match, min(ids), max(ids), *ids, user.pk],
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    hits = []
    for rowid, score in ranked:
        if rowid not in rows:  # deleted in between
            continue
        conv_id, msg_id, title, archived, updated_at, role, created_at, snippet = rows[rowid]
        hits.append(
            SearchHit(
                conversation_id=uuid.UUID(conv_id),
                conversation_title=title,
                archived=bool(archived),
                message_id=uuid.UUID(msg_id) if msg_id else None,
                role=role,
                created_at=_sqlite_datetime(created_at if msg_id else updated_at),
                snippet=snippet_parts(snippet or ""),
                score=-float(score),
            )
        )
    return hits


def _sqlite_datetime(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        when = value
    else:
        when = parse_datetime(value)
        if when is None:  # pragma: no cover - Django always stores ISO text
            raise ValueError(f"not a datetime: {value!r}")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _pg_masked(expression) -> Func:
    return Func(
        expression,
        Value(PG_PUNCTUATION),
        Value(PG_MASK),
        function="translate",
        output_field=TextField(),
    )


def _pg_unmasked(expression) -> Func:
    return Func(
        expression,
        Value(PG_MASK),
        Value(PG_PUNCTUATION),
        function="translate",
        output_field=TextField(),
    )


class _MessageSearchVector(Expression):
    """``conversations_message.search_vector``: the stored, generated tsvector
    of migration 0004 (not a model field: the database computes it)."""

    output_field = SearchVectorField()

    def as_sql(self, compiler, connection):
        alias = compiler.query.get_initial_alias()  # "U0" and the like inside a subquery
        return f"{compiler.quote_name_unless_alias(alias)}.{connection.ops.quote_name('search_vector')}", []


def _search_postgresql(user: AbstractBaseUser, words: list[str], limit: int, offset: int) -> list[SearchHit]:
    from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector

    query = SearchQuery(tsquery(words), config="simple", search_type="raw")
    wanted = offset + limit
    # Migration 0004's expressions: the title's is its GIN index's; the
    # content's is the generated column's (for the headline).
    content_text = _pg_masked(Left("content", PG_CONTENT_CHARS))
    title_text = _pg_masked("title")
    title = SearchVector(title_text, config="simple")
    # The newest CANDIDATES matches, then the rank of those only. The planner
    # takes the GIN index for a rare word, and walks the created_at index,
    # testing each stored vector, for a common one.
    newest_messages = (
        Message.objects.filter(conversation__user=user)
        .annotate(document=_MessageSearchVector())
        .filter(document=query)
        .order_by("-created_at")
        .values("pk")[:CANDIDATES]
    )
    messages = list(
        Message.objects.filter(pk__in=Subquery(newest_messages))
        .annotate(score=SearchRank(_MessageSearchVector(), query, normalization=1))
        .order_by("-score", "-created_at")
        .values_list("pk", "score")[:wanted]
    )
    newest_titles = (
        Conversation.objects.filter(user=user)
        .annotate(document=title)
        .filter(document=query)
        .order_by("-updated_at")
        .values("pk")[:CANDIDATES]
    )
    titles = list(
        Conversation.objects.filter(pk__in=Subquery(newest_titles))
        .annotate(score=SearchRank(title, query, normalization=1) * TITLE_WEIGHT)
        .order_by("-score", "-updated_at")
        .values_list("pk", "score")[:wanted]
    )
    ranked = sorted(
        [(score, "m", pk) for pk, score in messages] + [(score, "c", pk) for pk, score in titles],
        key=lambda row: -row[0],
    )[offset:wanted]
    options = {
        "config": "simple",
        "start_sel": _START,
        "stop_sel": _STOP,
        "max_words": 35,
        "min_words": 15,
        "max_fragments": 2,
        "fragment_delimiter": f" {_ELLIPSIS} ",
    }
    message_ids = [pk for _, kind, pk in ranked if kind == "m"]
    message_rows = {
        row["pk"]: row
        for row in Message.objects.filter(pk__in=message_ids)
        .annotate(
            snippet=_pg_unmasked(SearchHeadline(content_text, query, **options)),
            title=F("conversation__title"),
            archived=F("conversation__archived"),
        )
        .values("pk", "conversation_id", "role", "created_at", "snippet", "title", "archived")
    }
    title_ids = [pk for _, kind, pk in ranked if kind == "c"]
    title_rows = {
        row["pk"]: row
        for row in Conversation.objects.filter(pk__in=title_ids)
        .annotate(snippet=_pg_unmasked(SearchHeadline(title_text, query, **{**options, "max_fragments": 0})))
        .values("pk", "title", "archived", "updated_at", "snippet")
    }
    hits = []
    for score, kind, pk in ranked:
        if kind == "m":
            row = message_rows.get(pk)
            if row is None:  # deleted in between
                continue
            hits.append(
                SearchHit(
                    conversation_id=row["conversation_id"],
                    conversation_title=row["title"],
                    archived=row["archived"],
                    message_id=pk,
                    role=row["role"],
                    created_at=row["created_at"],
                    snippet=snippet_parts(row["snippet"] or ""),
                    score=float(score),
                )
            )
        else:
            row = title_rows.get(pk)
            if row is None:
                continue
            hits.append(
                SearchHit(
                    conversation_id=pk,
                    conversation_title=row["title"],
                    archived=row["archived"],
                    message_id=None,
                    role=None,
                    created_at=row["updated_at"],
                    snippet=snippet_parts(row["snippet"] or ""),
                    score=float(score),
                )
            )
    return hits
