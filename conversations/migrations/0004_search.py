"""Full-text search over message content and conversation titles.

SQLite: an FTS5 table (``conversations_search``: title, content) with
one document per message (its content) and one per conversation (its title).
The documents are numbered by ``conversations_searchdoc`` (an INTEGER PRIMARY
KEY, so VACUUM never renumbers them, unlike the implicit rowids of the
UUID-keyed app tables), which maps a document to its message or conversation
and its user. Triggers on the message and conversation tables keep both in
sync, including the checkpoints of a streaming reply (an UPDATE of its
content). A search filters by ``conversations_searchdoc.user_id``. (A user
token in the index would cost more than it saves: bm25 counts the documents
of every phrase of the query, so it would count all of the user's documents
on every search.) The FTS5 table keeps its own copy of the text (for
``snippet()``); an external-content table would need a view over the app
tables, and SQLite refuses to rebuild a table a view refers to, which Django
does for many schema changes. Existing rows are indexed here (the backfill).

Caution: when Django rebuilds a SQLite table (a new table, rows copied, the
old one dropped and the new one renamed: AlterField and friends), the old
table's triggers go with it. A later migration that rebuilds
``conversations_message`` or ``conversations_conversation`` on SQLite must
re-create them afterwards: ``RunPython`` calling ``sqlite_triggers_create``
from this module. ``tests/test_search.py`` checks that they exist after all
migrations.

PostgreSQL: ``conversations_message.search_vector``, a stored generated
column, ``to_tsvector('simple', ...)`` of the content (its first 200,000
characters: a tsvector is at most 1 MB, and a larger one would make the INSERT
fail), with a GIN index, and an index on ``created_at``; a GIN expression index
on the title's ``to_tsvector``. ASCII punctuation is masked in both (see
PG_PUNCTUATION). The column is not a model field: Django never writes it (the
database computes it) and ``conversations/search.py`` reads it by name. Adding
it rewrites the message table once. Caution: PostgreSQL refuses to change the
type of ``content`` while the column depends on it (drop and re-add it around
such a change).
"""

from django.db import migrations

# ---------------------------------------------------------------- SQLite

SQLITE_TABLES = [
    """
    CREATE TABLE conversations_searchdoc (
        id INTEGER PRIMARY KEY,
        conversation_id char(32) NOT NULL,
        message_id char(32) NULL,
        user_id integer NULL
    )
    """,
    # One document per message, one (message_id NULL) per conversation title.
    "CREATE UNIQUE INDEX conversations_searchdoc_message ON conversations_searchdoc (message_id)",
    """
    CREATE UNIQUE INDEX conversations_searchdoc_title ON conversations_searchdoc (conversation_id)
    WHERE message_id IS NULL
    """,
    # Messages stored before their conversation (in one transaction: foreign
    # keys are checked at commit) wait here for its user.
    """
    CREATE INDEX conversations_searchdoc_waiting ON conversations_searchdoc (conversation_id)
    WHERE user_id IS NULL
    """,
    """
    CREATE VIRTUAL TABLE conversations_search USING fts5(
        title, content, tokenize='unicode61 remove_diacritics 2'
    )
    """,
]

# The triggers read and write only the search tables (never the other app
# table), so rebuilding one app table never trips over the other's triggers.
# A message finds its user through its conversation's title document; one
# stored before its conversation gets it when the conversation comes.
SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER conversations_search_message_insert AFTER INSERT ON conversations_message
    BEGIN
        INSERT INTO conversations_searchdoc (conversation_id, message_id, user_id) VALUES (
            NEW.conversation_id,
            NEW.id,
            (
                SELECT t.user_id FROM conversations_searchdoc t
                WHERE t.conversation_id = NEW.conversation_id AND t.message_id IS NULL
            )
        );
        INSERT INTO conversations_search (rowid, title, content)
            SELECT d.id, '', NEW.content FROM conversations_searchdoc d WHERE d.message_id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER conversations_search_message_update AFTER UPDATE OF content ON conversations_message
    WHEN OLD.content IS NOT NEW.content
    BEGIN
        UPDATE conversations_search SET content = NEW.content
            WHERE rowid = (SELECT d.id FROM conversations_searchdoc d WHERE d.message_id = NEW.id);
    END
    """,
    """
    CREATE TRIGGER conversations_search_message_delete AFTER DELETE ON conversations_message
    BEGIN
        DELETE FROM conversations_search
            WHERE rowid = (SELECT d.id FROM conversations_searchdoc d WHERE d.message_id = OLD.id);
        DELETE FROM conversations_searchdoc WHERE message_id = OLD.id;
    END
    """,
    """
    CREATE TRIGGER conversations_search_conversation_insert AFTER INSERT ON conversations_conversation
    BEGIN
        INSERT INTO conversations_searchdoc (conversation_id, message_id, user_id)
            VALUES (NEW.id, NULL, NEW.user_id);
        INSERT INTO conversations_search (rowid, title, content)
            SELECT d.id, NEW.title, '' FROM conversations_searchdoc d
            WHERE d.conversation_id = NEW.id AND d.message_id IS NULL;
        UPDATE conversations_searchdoc SET user_id = NEW.user_id
            WHERE conversation_id = NEW.id AND user_id IS NULL;
    END
    """,
    """
    CREATE TRIGGER conversations_search_conversation_update
    AFTER UPDATE OF title ON conversations_conversation
    WHEN OLD.title IS NOT NEW.title
    BEGIN
        UPDATE conversations_search SET title = NEW.title
            WHERE rowid = (
                SELECT d.id FROM conversations_searchdoc d
                WHERE d.conversation_id = NEW.id AND d.message_id IS NULL
            );
    END
    """,
    """
    CREATE TRIGGER conversations_search_conversation_delete AFTER DELETE ON conversations_conversation
    BEGIN
        DELETE FROM conversations_search WHERE rowid IN (
            SELECT d.id FROM conversations_searchdoc d
            WHERE d.conversation_id = OLD.id AND d.message_id IS NULL
        );
        DELETE FROM conversations_searchdoc WHERE conversation_id = OLD.id AND message_id IS NULL;
    END
    """,
]

SQLITE_TRIGGER_NAMES = [
    "conversations_search_message_insert",
    "conversations_search_message_update",
    "conversations_search_message_delete",
    "conversations_search_conversation_insert",
    "conversations_search_conversation_update",
    "conversations_search_conversation_delete",
]

SQLITE_BACKFILL = [
    """
    INSERT INTO conversations_searchdoc (conversation_id, message_id, user_id)
        SELECT id, NULL, user_id FROM conversations_conversation
    """,
    """
    INSERT INTO conversations_searchdoc (conversation_id, message_id, user_id)
        SELECT m.conversation_id, m.id, c.user_id FROM conversations_message m
        JOIN conversations_conversation c ON c.id = m.conversation_id
    """,
    """
    INSERT INTO conversations_search (rowid, title, content)
        SELECT d.id, CASE WHEN d.message_id IS NULL THEN c.title ELSE '' END, COALESCE(m.content, '')
        FROM conversations_searchdoc d
        JOIN conversations_conversation c ON c.id = d.conversation_id
        LEFT JOIN conversations_message m ON m.id = d.message_id
    """,
]

SQLITE_DROP = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGER_NAMES),
    "DROP TABLE IF EXISTS conversations_search",
    "DROP TABLE IF EXISTS conversations_searchdoc",
]

# ------------------------------------------------------------ PostgreSQL

#: Keep in step with ``conversations.search`` (PG_CONTENT_CHARS, PG_PUNCTUATION,
#: PG_MASK): the queries build these same expressions, so the planner uses the
#: indexes (tests/test_search.py checks the plan).
PG_CONTENT_CHARS = 200_000
# ASCII punctuation becomes private-use characters, which the parser treats as
# separators, so "/usr/bin/python3", "<div>" or "e-mail" are words the way
# SQLite's tokenizer sees them (the default parser would keep a path or a URL
# as one token and drop HTML tags), and ts_headline can map them back.
PG_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
PG_MASK = "".join(chr(0xE010 + i) for i in range(len(PG_PUNCTUATION)))


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _masked(column: str) -> str:
    return f"translate({column}, {_sql_text(PG_PUNCTUATION)}, {_sql_text(PG_MASK)})"


# The message's tsvector is a stored generated column, not an expression
# index: ranking reads it instead of re-parsing every candidate's text, and a
# very common word is answered by walking the newest messages (the created_at
# index) and testing each stored vector, instead of fetching every match. A
# conversation's title is short: an expression index is enough.
POSTGRES_COLUMN = f"""
    ALTER TABLE conversations_message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, COALESCE({_masked(f"LEFT(content, {PG_CONTENT_CHARS})")}, ''))
    ) STORED
"""

POSTGRES_INDEXES = [
    """
    CREATE INDEX IF NOT EXISTS conversations_message_search ON conversations_message
    USING gin (search_vector)
    """,
    "CREATE INDEX IF NOT EXISTS conversations_message_created ON conversations_message (created_at)",
    f"""
    CREATE INDEX IF NOT EXISTS conversations_conversation_search ON conversations_conversation
    USING gin (to_tsvector('simple'::regconfig, COALESCE({_masked("title")}, '')))
    """,
]

POSTGRES_DROP_COLUMN = "ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector"

POSTGRES_DROP_INDEXES = [
    "DROP INDEX IF EXISTS conversations_message_search",
    "DROP INDEX IF EXISTS conversations_message_created",
    "DROP INDEX IF EXISTS conversations_conversation_search",
]


def sqlite_triggers_create(schema_editor) -> None:
    """(Re-)create the triggers that keep the SQLite index in sync."""
    for name in SQLITE_TRIGGER_NAMES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)
    for sql in SQLITE_TRIGGERS:
        schema_editor.execute(sql, params=None)


def sqlite_triggers_recreate(apps, schema_editor) -> None:
    """A ``RunPython`` step for every later migration that adds a NOT NULL column
    to the message or conversation table: on SQLite that rebuilds the table, and
    its search triggers go with the old one."""
    if schema_editor.connection.vendor == "sqlite":
        sqlite_triggers_create(schema_editor)


def forwards(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for sql in SQLITE_TABLES:
            schema_editor.execute(sql, params=None)
        for sql in SQLITE_BACKFILL:
            schema_editor.execute(sql, params=None)
        sqlite_triggers_create(schema_editor)
    elif vendor == "postgresql":
        schema_editor.execute(POSTGRES_COLUMN, params=None)
        for sql in POSTGRES_INDEXES:
            schema_editor.execute(sql, params=None)


def backwards(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql, params=None)
    elif vendor == "postgresql":
        for sql in POSTGRES_DROP_INDEXES:
            schema_editor.execute(sql, params=None)
        schema_editor.execute(POSTGRES_DROP_COLUMN, params=None)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0003_history")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
