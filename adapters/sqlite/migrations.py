"""Versioned schema migrations for the SQLite store: one numbered list per component.

The queue and the prospect store share one file, so versions are kept per component in a
small table rather than in `PRAGMA user_version` (one number for the whole file). A step is
either SQL statements or a function of the connection; steps run in order, inside the
write transaction that opens the file (BEGIN IMMEDIATE), so two processes starting on one
file cannot both migrate it, and a failed step leaves the file as it was.

Hand-written rather than a migration library: the tools that exist (alembic, yoyo) bring
their own connections and SQLAlchemy, where this store is one sqlite3 connection on one
thread; the whole mechanism is the loop below.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

Step = Sequence[str] | Callable[[sqlite3.Connection], None]

VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


class SchemaTooNew(RuntimeError):
    """The file was written by a newer release: running an older one could corrupt it."""


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    conn.execute(VERSIONS_TABLE)
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, component: str, steps: Sequence[Step]) -> int:
    """Bring `component` to version len(steps); returns the version it was at.

    Files written before versions were recorded count as version 0, so step 1 must be
    written to be harmless on them (CREATE ... IF NOT EXISTS of the first schema).
    """
    found = schema_version(conn, component)
    if found > len(steps):
        raise SchemaTooNew(
            f"the {component} schema in this file is version {found}, newer than this release "
            f"knows ({len(steps)}): run the release that wrote it, or point "
            "DESTINATION_QUEUE_URL at another file"
        )
    for step in steps[found:]:
        if callable(step):
            step(conn)
        else:
            for statement in step:
                conn.execute(statement)
    if found < len(steps):
        conn.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
            " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, len(steps)),
        )
    return found
