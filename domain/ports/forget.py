"""The ports of forgetting a person: removing what a store keeps of them, and suppressing them.

Implemented by each store backend (memory, SQLite, PostgreSQL); `entrypoints.operator.forget`
finds the person (`Person`), the store removes everything of theirs in one transaction and
adds their digests to the suppression list in that same transaction, so no event of theirs
can slip in between (`Removed` says what went, per kind).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True)
class Person:
    """Everything that names one person in the store.

    `identities` are `user:…`, `anonymous:…` and `email:…` (lower case); `prospects` are the
    prospect store's keys of their prospects (ids, or `email:…` under v3).
    """

    identities: frozenset[str]
    prospects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Removed:
    """What a forget removed (or, in a dry run, would remove), per kind."""

    waiting: int = 0  # queued events not yet delivered (pending, retry)
    in_flight: int = 0  # leased by a worker: its write is stopped by the suppression check
    settled: int = 0  # delivered, skipped or rejected events, kept for the retention
    dead: int = 0  # dead letters
    history: int = 0  # delivery history rows
    stamps: int = 0  # field stamps (value and event time of each field written)
    links: int = 0  # identity links, create marks and create locks
    index: int = 0  # prospect index rows (with `--in-pardot`, once Pardot deleted them)

    @property
    def events(self) -> int:
        return self.waiting + self.in_flight + self.settled + self.dead

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class PersonalData(Protocol):
    """What one store keeps about people, removable per person."""

    async def forget(self, person: Person, *, suppress: Collection[str], dry_run: bool) -> Removed:
        """Remove every event, history row, stamp and link of `person` and add `suppress`
        (digests) to the suppression list, in one transaction; a dry run only counts.

        Rows are overwritten as they are freed where the backend can (SQLite's
        secure_delete). The prospect index is left alone: its rows mirror Pardot.
        """
        ...

    async def identities_in_events(self, identities: Collection[str]) -> frozenset[str]:
        """Every identity the stored events naming one of `identities` carry: the anonymousId
        an event of a userId came with, the email it set."""
        ...

    async def drop_events(self, event_ids: Sequence[int]) -> int:
        """Remove these events whatever their state (a suppressed person's, leased by a
        worker that must not deliver them); returns how many were there."""
        ...

    async def scrub(self) -> bool:
        """Leave no old copy of removed rows in the store's own files, where the backend can
        (SQLite: the write-ahead log copied in and emptied, waiting a while for readers);
        returns whether it did. Run once a forget is over, the index's rows dropped too."""
        ...


class SuppressionList(Protocol):
    """Digests of forgotten people's identities (`domain.forget.digest`), never the plain
    email or id, shared by every process and node on the store."""

    async def salt(self) -> bytes:
        """The store's salt, made on first use: a list kept without its salt suppresses no one."""
        ...

    async def suppressed(self, digests: Collection[str]) -> set[str]:
        """Those of `digests` on the list."""
        ...

    async def everyone(self) -> frozenset[str]:
        """The whole list (the door keeps a copy of it)."""
        ...

    async def lift(self, digests: Collection[str]) -> int:
        """Take these digests off the list; returns how many were on it."""
        ...
