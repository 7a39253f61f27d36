"""The SQLite queue's schema and its history, step by step.

In: a connection to the queue's file (SQLiteDatabase.prepare and the ingest writer process
run these through `adapters.sqlite.migrations`). Out: `MIGRATIONS`, each step bringing a file
from the previous version to the next, under the component name `SCHEMA_COMPONENT`.
"""

from __future__ import annotations

import sqlite3

from adapters.sqlite.migrations import Step

# Spelled out in each query: SQLite uses a partial index only when a query repeats its WHERE.
_OPEN = "state IN ('pending', 'retry', 'leased')"

# The schema's history: each entry brings a file from the previous version to the next.
# Never edit a released step; append one (adapters.sqlite.migrations explains the mechanism).
_INDEXES = (
    # Leasing walks open events oldest first, then fetches each chosen person's others.
    f"CREATE INDEX IF NOT EXISTS events_open ON events(id, due_at, ordering_key) WHERE {_OPEN}",
    f"CREATE INDEX IF NOT EXISTS events_open_by_key ON events(ordering_key, id) WHERE {_OPEN}",
    "CREATE INDEX IF NOT EXISTS events_by_state ON events(state, id)",
)
_V1_FIRST_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale settle hits nothing
        message_id TEXT UNIQUE,
        ordering_key TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        reason TEXT,
        settled_at INTEGER
    )""",
    *_INDEXES,
    "CREATE TABLE IF NOT EXISTS queue_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _v2_dedupe_scope(conn: sqlite3.Connection) -> None:
    """messageId is unique per sender (write key), no longer across senders.

    SQLite cannot drop a column's UNIQUE, so the table is rebuilt (SQLite's documented
    12-step way). Events stored before have no known sender: they share the scope ''.
    """
    (sequence,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"
    ).fetchone()
    conn.execute(
        """CREATE TABLE events_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stale settle hits nothing
            dedupe_scope TEXT NOT NULL DEFAULT '',  -- who sent it; see webhook.py
            message_id TEXT,
            ordering_key TEXT,
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            received_at INTEGER NOT NULL,
            due_at INTEGER NOT NULL,
            reason TEXT,
            settled_at INTEGER,
            UNIQUE (dedupe_scope, message_id)
        )"""
    )
    columns = (
        "id, message_id, ordering_key, payload, state, attempts, received_at, due_at,"
        " reason, settled_at"
    )
    conn.execute(f"INSERT INTO events_v2 ({columns}) SELECT {columns} FROM events")  # noqa: S608
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_v2 RENAME TO events")
    # Keep AUTOINCREMENT's promise across the rebuild: ids of purged rows stay unused.
    conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'", (sequence,))
    for statement in _INDEXES:
        conn.execute(statement)


def _v3_state_counts(conn: sqlite3.Connection) -> None:
    """Counts per state kept by triggers, so /metrics and the backlog limit read a few rows
    instead of counting the table; every process writing the file keeps them right."""
    conn.execute(
        "CREATE TABLE event_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO event_counts (state, n) SELECT state, count(*) FROM events GROUP BY state"
    )
    add = (
        "INSERT INTO event_counts (state, n) VALUES (NEW.state, 1)"
        " ON CONFLICT (state) DO UPDATE SET n = n + 1;"
    )
    remove = "UPDATE event_counts SET n = n - 1 WHERE state = OLD.state;"
    conn.execute(f"CREATE TRIGGER events_counted_in AFTER INSERT ON events BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER events_counted_out AFTER DELETE ON events BEGIN {remove} END")
    conn.execute(
        "CREATE TRIGGER events_counted_move AFTER UPDATE OF state ON events"
        f" WHEN OLD.state IS NOT NEW.state BEGIN {remove} {add} END"
    )


# Which lease holds a leased event: renewals and settlements name it (see the docstring).
_V4_LEASE_IDS = ("ALTER TABLE events ADD COLUMN lease_id TEXT",)

# Ingest adds to the pending count once per INSERT statement (`_insert_rows`): a trigger
# firing per row was about a sixth of an insert's time (32 rows, measured here). The row
# for 'pending' must exist for that UPDATE, whatever the table held before.
_V5_COUNT_INSERTS_PER_STATEMENT = (
    "DROP TRIGGER events_counted_in",
    "INSERT INTO event_counts (state, n) VALUES ('pending', 0) ON CONFLICT (state) DO NOTHING",
)

MIGRATIONS: tuple[Step, ...] = (
    _V1_FIRST_SCHEMA,
    _v2_dedupe_scope,
    _v3_state_counts,
    _V4_LEASE_IDS,
    _V5_COUNT_INSERTS_PER_STATEMENT,
)
SCHEMA_COMPONENT = "queue"
