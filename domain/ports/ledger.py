"""The port of the imports this service submitted to Pardot and has not yet settled.

Implemented by each store backend (memory, SQLite, PostgreSQL). An import is recorded once
Pardot created it and before anything is uploaded or submitted; it is `finish`ed once its
outcome is known (Complete and its refusals read, or abandoned before it was submitted), and
its rows go as their events are settled in the queue. So a process that leases events after
a restart finds the import they went into by the events' ids, and follows it instead of
writing them again (domain/sync/recovery.py).

Rows keep digests of the match value and of the prospect key, never an email in clear, and
the names of the columns written, never a value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


def ledger_digest(text: str) -> str:
    """How a ledger names a match value or a prospect key: SHA-256, never the text itself."""
    return hashlib.sha256(b"import-ledger:" + text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class RecordedRow:
    """One row of an import: the queued events it carries, `ledger_digest` of its match value
    as sent (`match`) and of the prospect store's key (`prospect`), and the prospect's id
    when the key is one (v4)."""

    events: tuple[int, ...]
    match: str
    prospect: str
    prospect_id: int | None = None


@dataclass(frozen=True)
class RecordedImport:
    """An import as recorded: its Pardot id, its match column and the columns it writes."""

    id: int
    match: str
    columns: tuple[str, ...]
    rows: tuple[RecordedRow, ...]
    finished: bool = False


class ImportLedger(Protocol):
    """Imports submitted (or about to be) whose events are not all settled, shared by every
    process and node on the store."""

    async def record(self, entry: RecordedImport) -> None:
        """Keep an import and its rows (unfinished), before it is submitted."""
        ...

    async def holding(self, event_ids: Collection[int]) -> list[RecordedImport]:
        """The imports holding any of these events, each with only its rows that hold one
        (every event of such a row, as still recorded)."""
        ...

    async def finish(self, import_id: int) -> None:
        """The import's outcome is known: it makes no write wait any more (`waiting_on`)."""
        ...

    async def waiting_on(self, prospects: Collection[str]) -> dict[str, int]:
        """Of these prospect digests, those in an unfinished import, with its id."""
        ...

    async def forget(self, event_ids: Sequence[int]) -> None:
        """These events are settled: drop their rows from finished imports (rows of an
        unfinished one stay), and every finished import left without rows."""
        ...

    async def unfinished(self) -> list[RecordedImport]:
        """Every unfinished import, for the operator."""
        ...
