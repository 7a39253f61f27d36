"""A real PostgreSQL server for the tests: a fresh schema per test, dropped afterwards.

The server is `PARDOT_TEST_POSTGRES_URL` (default: the one CI machines run). Without an
answering server the PostgreSQL tests skip, saying why; with `CI=true` they fail instead, so
CI can never pass without having run them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from adapters.postgres.database import describe

POSTGRES_URL = os.environ.get(
    "PARDOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SCHEMA_PREFIX = "pardot_test_"
LEFTOVER_SECONDS = 3600  # schemas of an interrupted run older than this are dropped


@functools.cache
def postgres_problem() -> str | None:
    """Why the test server cannot be used, or None; asked once per run."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
            _drop_leftovers(conn)
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    message = (
        f"PostgreSQL at {describe(POSTGRES_URL)} does not answer ({problem}); "
        "start one or set PARDOT_TEST_POSTGRES_URL"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}. CI=true: the PostgreSQL tests must run", pytrace=False)
    pytest.skip(message)


def with_schema(url: str, schema: str) -> str:
    """`url` whose connections put their tables in `schema` (libpq's options parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A new empty schema; yields a URL that uses it. Dropped with everything in it."""
    require_postgres()
    schema = f"{SCHEMA_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    try:
        yield with_schema(POSTGRES_URL, schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]


def _drop_leftovers(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Schemas of runs that were killed before their clean-up (older than an hour)."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{SCHEMA_PREFIX}%",)
    ).fetchall()
    for (name,) in rows:
        born = str(name).removeprefix(SCHEMA_PREFIX).split("_")[0]
        if born.isdigit() and time.time() - int(born) > LEFTOVER_SECONDS:
            with contextlib.suppress(psycopg.Error):
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')  # type: ignore[arg-type]
