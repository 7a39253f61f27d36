"""Looking for a person's email or id in plain text anywhere a store keeps text: every table
and every text column of a SQLite file or a PostgreSQL schema, and the SQLite file's bytes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import psycopg


def sqlite_hits(path: Path, needles: Iterable[str]) -> dict[str, int]:
    """`table.column` -> rows holding one of `needles` (case-insensitive), for every table."""
    found: dict[str, int] = {}
    conn = sqlite3.connect(path)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for needle in needles:
                    (n,) = conn.execute(
                        f'SELECT count(*) FROM "{table}"'
                        f' WHERE instr(lower(CAST("{column}" AS TEXT)), ?) > 0',
                        (needle.lower(),),
                    ).fetchone()
                    if n:
                        found[f"{table}.{column}"] = found.get(f"{table}.{column}", 0) + n
    finally:
        conn.close()
    return found


def file_bytes_hits(path: Path, needles: Iterable[str]) -> list[str]:
    """Which of `needles` the file and its write-ahead log hold anywhere, free pages too."""
    data = b"".join(p.read_bytes().lower() for p in (path, Path(f"{path}-wal")) if p.exists())
    return [n for n in needles if n.lower().encode() in data]


def postgres_hits(url: str, needles: Iterable[str]) -> dict[str, int]:
    """Every text-like column of every table in the URL's schema (the current one)."""
    found: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            " AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'character')"
        ).fetchall()
        for table, column in columns:
            for needle in needles:
                row = conn.execute(
                    f'SELECT count(*) FROM "{table}"'  # type: ignore[arg-type]
                    f' WHERE strpos(lower("{column}"::text), %s) > 0',
                    (needle.lower(),),
                ).fetchone()
                if row and row[0]:
                    found[f"{table}.{column}"] = found.get(f"{table}.{column}", 0) + row[0]
    return found
