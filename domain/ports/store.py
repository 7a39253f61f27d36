"""The ports of what the service keeps about the account, shared by every process on a store.

Implemented by each store backend: `ProspectStore` (identity links, `FieldStamp`s, named
locks) for the sync service, `ProspectIndex` with its resumable `IndexState` for the index
keeper, and `ApiCallCounts` (Pardot calls per account day) for the daily budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.prospect import FieldValue, Prospect


@dataclass(frozen=True)
class FieldStamp:
    """A field value we wrote to a prospect and the time of the event it came from."""

    value: FieldValue
    at: datetime | None


class ProspectStore(Protocol):
    """What the service knows about the account's prospects, keyed by prospect.

    A prospect key is the Pardot id as text (`"1234"`); with API v3, where the email is the
    prospect's identity and batch writes return no ids, it is `"email:<address>"`.
    Identities (`user:…`, `anonymous:…`, `lookup:field=value`, `fid:…`) link to prospect keys.
    Every process that shares the store sees the same links, stamps and locks.
    """

    async def links(self, identities: Sequence[str]) -> dict[str, str]:
        """The prospect key each known identity links to; unknown identities are left out."""
        ...

    async def link(self, links: Mapping[str, str]) -> None:
        """Point each identity at its prospect key, replacing an older link."""
        ...

    async def unlink(self, identities: Sequence[str]) -> None:
        """Forget links that proved wrong (the prospect lost the lookup value, say)."""
        ...

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        """The value and event time of every field we wrote to this prospect."""
        ...

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        """Remember what was written; a field keeps the stamp with the later time."""
        ...

    def create_lock(self, email: str) -> AbstractAsyncContextManager[None]:
        """Held while finding or creating the prospect for `email` (case-insensitive):
        `hold([email])`. Every process sharing the store waits for it, so one new email
        never becomes two prospects."""
        ...

    def hold(self, keys: Sequence[str]) -> AbstractAsyncContextManager[None]:
        """Hold the named lock of every key at once, across every process sharing the store.

        Keys compare without case or surrounding blanks; the sync names them so they never
        clash: an email (creates by email), `prospect:<key>` (stamp check to recorded write),
        `lookup:<field>=<value>` (creates by lookup value). They are taken in sorted order,
        so two holders of overlapping sets cannot wait for each other, and given back on exit,
        cancellation included; a lock whose holder died lapses within seconds.
        """
        ...


@dataclass(frozen=True)
class IndexState:
    """How far the prospect index has got, kept with it so any process can resume.

    `ranges` are the id ranges a scan still has to pull, each as (last id pulled, end
    exclusive); `high_water` is the latest `updated_at` Pardot returned (account zone), the
    bound of the next refresh.

    The **watermark** is `high_water` with `watermark_began`: the moment, on the store's clock
    (`ProspectIndex.clock`), the refresh that established it began (held back by the index
    lag). The index reflects every change Pardot had answered for before that moment, so a
    decision about events that all arrived before it may be made from the index.
    `recent_refreshes` are the start times of the latest refreshes (store clock, newest last).
    `lookup_field` and `lookup_type` name the field (and its type) the rows' lookup values
    were computed for. `deleted_after` is where the last refresh's changes began: the next
    reads the recycle bin from there, since a prospect deleted after that refresh's bin query
    answered, while its live pages were still read, can be older than the new `high_water`.
    """

    complete: bool = False
    ranges: tuple[tuple[int, int], ...] = ()
    high_water: str | None = None
    total: int | None = None  # the account's size when the scan began
    watermark_began: datetime | None = None
    recent_refreshes: tuple[datetime, ...] = ()
    lookup_field: str | None = None
    lookup_type: str | None = None
    deleted_after: str | None = None


class ProspectIndex(Protocol):
    """Every prospect of the account: id, email, fid, lookup value, times and field values.

    Filled from Pardot's paged queries and kept fresh from its `updated_after` ones, so the
    service can decide by reading its own store and ask Pardot only what it cannot know.
    Rows are put with the lookup value in the form Pardot stores it (or None).
    """

    async def state(self) -> IndexState: ...

    async def clock(self) -> datetime:
        """Now on the store's clock (PostgreSQL's; the host's for a file every process on
        one machine shares): the one clock event arrivals and refresh starts are read from."""
        ...

    async def save_state(self, state: IndexState) -> None: ...

    async def put(self, rows: Sequence[tuple[Prospect, str | None]]) -> None:
        """Insert or replace prospects by id, each with its lookup value."""
        ...

    async def drop(self, ids: Sequence[int]) -> None:
        """Forget prospects Pardot no longer has (deleted, archived, merged)."""
        ...

    async def by_ids(self, ids: Sequence[int]) -> dict[int, Prospect]: ...

    async def by_emails(self, emails: Sequence[str]) -> dict[str, list[Prospect]]:
        """Prospects per email, keyed by the email in lower case; unknown emails left out."""
        ...

    async def by_fid(self, fid: str) -> Prospect | None: ...

    async def holding(self, value: str) -> list[Prospect]:
        """Every prospect whose lookup value is `value`."""
        ...

    async def rows_after(self, prospect_id: int, limit: int) -> list[Prospect]:
        """Up to `limit` prospects with ids above `prospect_id`, by id (a walk of the index)."""
        ...

    async def count(self) -> int: ...

    async def clear(self) -> None:
        """Forget every prospect and the state (a rebuild from scratch)."""
        ...


class ApiCallCounts(Protocol):
    """Pardot calls spent per account day, shared by every process using the store."""

    async def add(self, day: str, calls: int = 1) -> int:
        """Count `calls` against `day` (ISO date in the account's zone); returns the new total."""
        ...

    async def used(self, day: str) -> int: ...


SLOT_BUCKET_SECONDS = 10


class SlotBusyLog(Protocol):
    """Busy Pardot slot-seconds per 10-second bucket of wall time, added to by every process
    using the store, so `status` (a process of its own) sees what the deliverers kept busy."""

    async def add(self, bucket: int, seconds: float) -> None:
        """Add `seconds` to the bucket starting at `bucket` (Unix seconds, a multiple of 10)."""
        ...

    async def busy(self, start: int, end: int) -> float:
        """Busy slot-seconds of the buckets starting in [start, end)."""
        ...
