"""Each fault an operator meets is named in one line, with no path, host or secret."""

from __future__ import annotations

import errno
import sqlite3
from datetime import UTC, datetime

import psycopg
import psycopg_pool
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sqlite.ingest_writer import IngestWriteFailed
from domain.errors import OutcomeUnknown, PermanentPardotError, RetryableError
from entrypoints.faults import (
    DISK_FULL,
    STORE_UNREACHABLE,
    blameless,
    pardot_unreachable,
    store_fault,
)
from entrypoints.readiness import STORE_FAULT_SECONDS, Readiness, without_paths


def caused(error: BaseException, by: BaseException) -> BaseException:
    try:
        raise error from by
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (sqlite3.OperationalError("database or disk is full"), DISK_FULL),
        (OSError(errno.ENOSPC, "No space left on device", "/var/lib/x/queue.db"), DISK_FULL),
        (IngestWriteFailed("database or disk is full"), DISK_FULL),
        (
            caused(
                RuntimeError("put failed"), sqlite3.OperationalError("database or disk is full")
            ),
            DISK_FULL,
        ),
        (psycopg.OperationalError("connection to server at 10.0.0.5 failed"), STORE_UNREACHABLE),
        (psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"), STORE_UNREACHABLE),
        (caused(RuntimeError("lease"), ConnectionResetError()), STORE_UNREACHABLE),
        (ValueError("something else"), None),
    ],
)
def test_a_store_error_is_named_by_its_kind(error: BaseException, line: str | None) -> None:
    assert store_fault(error) == line


def test_the_lines_are_one_line_without_paths() -> None:
    for line in (DISK_FULL, STORE_UNREACHABLE):
        assert "\n" not in line and without_paths(line) == line


@given(st.integers(min_value=0, max_value=1000) | st.none(), st.text(max_size=20))
def test_pardot_is_unreachable_only_when_it_did_not_answer(code: int | None, text: str) -> None:
    assert pardot_unreachable(RetryableError(text, code=code)) == (code is None)
    assert pardot_unreachable(OutcomeUnknown(text, code=code)) == (code is None)
    assert not pardot_unreachable(PermanentPardotError(text, code=code))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_readiness_names_the_store_fault_until_a_put_works_or_it_is_old() -> None:
    clock = Clock()
    readiness = Readiness(clock=clock)
    readiness.store_failed(DISK_FULL)
    assert readiness.reason == DISK_FULL
    readiness.store_failed(None)
    assert readiness.ready
    readiness.store_failed(STORE_UNREACHABLE)
    clock.now += STORE_FAULT_SECONDS
    assert readiness.ready  # no put failed for a while: the store may be back


def test_readiness_says_since_when_pardot_does_not_answer() -> None:
    readiness = Readiness()
    before = datetime.now(UTC).replace(microsecond=0)
    readiness.pardot_answered(False)
    since = readiness.pardot_down_since
    readiness.pardot_answered(False)  # still down: still since the first
    assert readiness.pardot_down_since == since and since is not None and since >= before
    assert readiness.reason.startswith(f"Pardot unreachable since {since:%Y-%m-%dT%H:%M:%SZ}")
    readiness.pardot_answered(True)
    assert readiness.ready


def test_the_setup_comes_before_the_store_and_the_store_before_pardot() -> None:
    readiness = Readiness()
    readiness.pardot_answered(False)
    readiness.store_failed(DISK_FULL)
    assert readiness.reason == DISK_FULL
    readiness.fail("PARDOT_LOOKUP_FIELD_ID names no field")
    assert readiness.reason == "PARDOT_LOOKUP_FIELD_ID names no field"


@pytest.mark.parametrize(
    ("error", "the_stores"),
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"), True),
        (caused(RuntimeError("sync failed"), psycopg.OperationalError("no route")), True),
        # Whose connection? Pardot's calls end in these too: not taken for the store's.
        (caused(RuntimeError("sync failed"), ConnectionResetError()), False),
        (TimeoutError(), False),
        # The server answered, about a value: the event's, found by isolating it.
        (psycopg.DataError("invalid byte sequence for encoding UTF8: 0x00"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"), False),
        (psycopg.errors.DiskFull("could not extend file"), True),
        (psycopg.errors.TooManyConnections("too many clients"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (sqlite3.IntegrityError("NOT NULL constraint failed"), False),
        (UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed"), False),
        (ValueError("bad"), False),
    ],
)
def test_only_the_stores_own_failures_are_blameless(error: Exception, the_stores: bool) -> None:
    assert blameless(error) is the_stores
