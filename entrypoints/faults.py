"""The faults an operator meets, each named in one line for `/readyz` and the status page.

A failing store is told apart by what failed, never by where: the lines name no file, host or
credential (the error's own text may hold a path or a URL, so only its kind is read here).
"""

from __future__ import annotations

import errno
from datetime import datetime

from domain.errors import RetryableError

DISK_FULL = (
    "disk full: the store cannot write (events are refused with 503 and nothing is lost); "
    "free space where the queue file is and it goes on by itself"
)
STORE_UNREACHABLE = (
    "store unreachable: PostgreSQL does not answer (events are refused with 503 and nothing "
    "is lost); it goes on by itself once the database answers"
)
_FULL_WORDS = ("database or disk is full", "no space left on device")
_LOCKED = "database is locked"
# psycopg's errors for a server gone or a connection broken (no SQLSTATE: the client's own),
# and the server's classes that speak of the server, never of a value: connection exception,
# transaction rollback (serialization, deadlock), insufficient resources (disk full, too many
# connections), operator intervention (shutdown), system error. Not program limit exceeded
# (54: an index row too large is the event's), though psycopg files it under OperationalError.
_PSYCOPG_UNREACHABLE = ("OperationalError", "InterfaceError")
_SERVERS_OWN_CLASSES = ("08", "40", "53", "57", "58")


def store_fault(error: BaseException) -> str | None:
    """DISK_FULL or STORE_UNREACHABLE when `error` (or what caused it) is one, else None."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return DISK_FULL
        if any(words in str(link).lower() for words in _FULL_WORDS):
            return DISK_FULL
    for link in _chain(error):
        kind = type(link)
        # psycopg's and psycopg_pool's errors (OperationalError, PoolTimeout...): the server
        # is gone or unreachable. Read by module, so this layer needs neither library.
        if kind.__module__.split(".")[0] in ("psycopg", "psycopg_pool"):
            return STORE_UNREACHABLE
        if isinstance(link, ConnectionError | TimeoutError):
            return STORE_UNREACHABLE
    return None


def blameless(error: BaseException) -> bool:
    """Whether `error` says the store failed, not the event: no answer from PostgreSQL (its
    connection or pool failing), the disk full or the SQLite file locked.

    Narrower than `store_fault`: an error the server answered for an odd value (a DataError, a
    NUL byte in a text) is the event's, and stays with it; a connection that failed without
    saying whose it was (a bare ConnectionError) is not taken for the store's.
    """
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return True
        if any(words in str(link).lower() for words in (*_FULL_WORDS, _LOCKED)):
            return True
        # Not a bare ConnectionError or TimeoutError: Pardot's calls end in those too, and a
        # Pardot that never answers must still spend attempts and dead-letter in the end.
        if _psycopg_unreachable(link):
            return True
    return False


def _psycopg_unreachable(error: BaseException) -> bool:
    """Read by module and class name, so this layer needs neither library."""
    for kind in type(error).__mro__:
        library = kind.__module__.split(".")[0]
        if library == "psycopg_pool":
            return True
        if library == "psycopg" and kind.__name__ in _PSYCOPG_UNREACHABLE:
            state = getattr(error, "sqlstate", None)
            return state is None or str(state)[:2] in _SERVERS_OWN_CLASSES
    return False


def pardot_unreachable(error: BaseException) -> bool:
    """No answer from Pardot, or an answer that is not Pardot's (a proxy's 503, a timeout)."""
    return isinstance(error, RetryableError) and error.code is None


def pardot_unreachable_line(since: datetime) -> str:
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"Pardot unreachable since {stamp}: no answer, or answers that are not Pardot's; "
        "events wait and are retried on their schedule (DESTINATION_RETRY_MAX_SECONDS)"
    )


def _chain(error: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in links and len(links) < 10:
        links.append(current)
        current = current.__cause__ or current.__context__
    return links
