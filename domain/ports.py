"""The ports: what the domain needs from the outside world, as small async Protocols."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from domain.errors import PardotError
from domain.prospect import CustomField, Fields, FieldValue, Prospect

BATCH_LIMIT = 50  # Pardot answers error 70 past 50 prospects in one batch call
QUERY_LIMIT = 200  # rows per query call (PARDOT_API.md, "Pulling many prospects")


@dataclass(frozen=True)
class ProspectWrite:
    """One row of a batch write, keyed the way Pardot's URL or batch row names a prospect.

    `mode="update"` never creates; `mode="upsert"` follows Pardot's upsert for that key
    (v4 upsert by email alone always creates, which is why the domain never asks for it).
    """

    by: Literal["email", "id", "fid"]
    key: str
    fields: Fields = field(default_factory=dict)
    create_fields: Fields = field(default_factory=dict)
    mode: Literal["upsert", "update", "create"] = "upsert"


@dataclass(frozen=True)
class ProspectQuery:
    """One page of Pardot's prospect `query`, with a high-water mark rather than an offset.

    Times are Pardot's own `YYYY-MM-DD HH:MM:SS` in the account's zone, taken from values
    Pardot returned (PARDOT_API.md). `fields` asks for only `id` and those fields.
    """

    id_greater_than: int | None = None
    id_less_than: int | None = None
    created_after: str | None = None
    updated_after: str | None = None
    updated_before: str | None = None
    sort_by: Literal["id", "created_at", "updated_at"] = "id"
    sort_order: Literal["ascending", "descending"] = "ascending"
    fields: tuple[str, ...] = ()
    output: Literal["simple", "full", "bulk", "mobile"] = "simple"
    limit: int = QUERY_LIMIT


@dataclass(frozen=True)
class ProspectPage:
    prospects: list[Prospect]
    total: int | None  # Pardot's total_results: every row the query matches, not the page


class PardotRepository(Protocol):
    """Pardot's prospects, as the matching plans need them."""

    @property
    def api_version(self) -> int: ...

    async def detect_version(self) -> int:
        """The API version the account speaks, asking Pardot once when not configured."""
        ...

    async def read_by_email(self, email: str) -> list[Prospect]:
        """Every prospect with this email (one at most in v3); empty when none."""
        ...

    async def read_by_id(self, prospect_id: int) -> Prospect | None: ...

    async def read_by_fid(self, fid: str) -> Prospect | None: ...

    async def create(self, email: str, fields: Fields) -> Prospect:
        """Create one prospect and return it with its new id (batches do not return ids)."""
        ...

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        """Apply up to BATCH_LIMIT writes; one entry per row, None where the row succeeded.

        An error that concerns the whole call (auth, limits, a dropped connection) is raised
        instead of being repeated in every row.
        """
        ...

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        """A page of prospects by ascending id, custom fields included."""
        ...

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        """One call of Pardot's prospect query: a page of rows and the total they belong to."""
        ...

    async def custom_fields(self) -> list[CustomField]:
        """Every custom field of the account (one call)."""
        ...


class PardotSlots(Protocol):
    """Pardot's limit of requests in flight per business unit (5; the sixth gets error 66).

    The limit is the account's, so every process that talks to the business unit shares it:
    an implementation counts across every process on the same store.
    """

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Held while one request is in flight; waits while every slot is taken."""
        ...


class TokenProvider(Protocol):
    """Salesforce access tokens for Pardot calls, cached until Pardot refuses one."""

    async def token(self) -> str: ...

    async def invalidate(self, stale: str | None = None) -> None:
        """Forget `stale` (or the current token); the next `token()` fetches a fresh one.

        Passing the token a caller saw refused lets many callers report the same 184 while
        only the first causes a refresh.
        """
        ...


@dataclass(frozen=True)
class QueuedEvent:
    """An accepted event waiting for delivery, as the queue hands it to a worker."""

    id: int
    payload: Mapping[str, Any]
    attempts: int
    received_at: datetime
    # Which lease handed it out: renewing and settling name it, so a worker whose lease
    # lapsed (and was taken over) can neither keep nor settle the event.
    lease: str = ""


# The queue's vocabulary, shared by every EventQueue so that they all mean the same by a state.
STATES = ("pending", "leased", "retry", "delivered", "skipped", "rejected", "dead")
SettledState = Literal["delivered", "skipped", "rejected", "retry", "dead"]
SETTLED: frozenset[str] = frozenset({"delivered", "skipped", "rejected", "dead", "retry"})
# Finished for good; dead letters stay until an operator requeues them.
PURGEABLE: frozenset[str] = frozenset({"delivered", "skipped", "rejected"})


def message_id_of(payload: Mapping[str, Any]) -> str | None:
    """The sender's id of an event: a second event with the same one is a duplicate."""
    return _text(payload.get("messageId"))


def ordering_key_of(payload: Mapping[str, Any]) -> str | None:
    """Events of one person are delivered one lease at a time, in arrival order."""
    return _text(payload.get("userId")) or _text(payload.get("anonymousId"))


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Settlement:
    """What becomes of one leased event. `state` decides whether it ever comes back.

    A delivery also says which prospect (the store's key) it reached and the fields it wrote
    (empty: it was unchanged), for the delivery history that answers "why?".
    """

    state: SettledState
    reason: str
    not_before: datetime | None = None
    # The lease the event was worked under; the queue ignores the settlement once another
    # lease took the event over. None settles whatever the event's lease (operators, tests).
    lease: str | None = None
    prospect: str | None = field(default=None, compare=False)
    fields: Mapping[str, FieldValue] | None = field(default=None, compare=False)

    @property
    def unchanged(self) -> bool:
        return self.state == "delivered" and self.fields is not None and not self.fields


class QueueFull(Exception):
    """The queue holds as many undelivered events as it may: senders should retry later."""


class EventQueue(Protocol):
    """Durable storage between the webhook's 200 and Pardot's answer."""

    async def put(self, payloads: Sequence[Mapping[str, Any]], *, scope: str = "") -> int:
        """Store events durably before returning; duplicates by messageId are dropped.

        A messageId is a duplicate only within its `scope` (who sent it: one per write key),
        so one sender cannot make another's events vanish by reusing their messageIds.
        Returns how many were new; raises QueueFull when the backlog limit is reached.
        """
        ...

    async def lease(self, limit: int, lease_seconds: float) -> list[QueuedEvent]:
        """Take up to `limit` due events under one new lease (`QueuedEvent.lease`).

        Unsettled events come back `lease_seconds` after the lease was taken or last renewed.
        """
        ...

    async def renew(self, lease: str, lease_seconds: float) -> int:
        """The heartbeat: keep the lease's unsettled events for `lease_seconds` from now.

        Returns how many it still holds; 0 means the lease lapsed and another took them.
        """
        ...

    async def settle(self, settlements: Mapping[int, Settlement]) -> set[int]:
        """Record what became of leased events, by event id; `retry` makes one due again.

        A settlement naming a lease applies only while the event is still leased under it:
        a stale worker cannot overwrite what another took over. Returns the ids that applied,
        so the caller records (history, logs, metrics) only what really happened.
        """
        ...

    async def pause_until(self, when: datetime | None) -> None:
        """Hold every delivery until `when` (Pardot's daily limit); None lifts the pause.

        Stored with the events, so a restart does not spend the next day's budget early.
        """
        ...

    async def paused_until(self) -> datetime | None: ...

    async def counts(self) -> dict[str, int]:
        """How many events are in each state: pending, leased, delivered, skipped, ..."""
        ...

    async def recent(self, state: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest events in `state` with their reasons: the dead-letter listing.

        Each row: id, messageId, reason, attempts, payload, and `settled_at` (the last try).
        """
        ...

    async def requeue_dead(self) -> int:
        """Give every dead event a fresh start once an operator fixed what killed it."""
        ...

    async def dead_letter(self, event_id: int) -> dict[str, Any] | None:
        """One dead event as `recent` describes it, or None when no dead event has that id."""
        ...

    async def replay(self, event_ids: Sequence[int]) -> list[int]:
        """Requeue these dead events (their arrival, hence their event time, is kept).

        Returns the ids that were dead and are pending again.
        """
        ...

    async def purge_dead(self, settled_before: datetime) -> int:
        """Forget dead letters given up on before the cutoff; returns how many."""
        ...

    async def oldest_pending(self) -> datetime | None:
        """When the oldest event still waiting for delivery arrived; None when none waits."""
        ...

    async def purge(self, settled_before: datetime) -> int:
        """Forget delivered, skipped and rejected events settled before the cutoff.

        Their messageIds may then be accepted again: retention is the de-duplication window.
        Dead letters are kept until requeued. Returns how many were forgotten.
        """
        ...


@dataclass(frozen=True)
class HistoryEntry:
    """What one attempt at one event came to, kept for `explain` and the status page.

    `outcome` is a settled state, or `unchanged` for a delivery that needed no write.
    """

    at: datetime
    outcome: str
    reason: str
    message_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    prospect: str | None = None
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    source: str = "queue"  # or "sync" (a file run by `sync FILE`)
    seen: tuple[str, ...] = ()  # every field id the event's traits map to, written or not


class DeliveryHistory(Protocol):
    """The recent past of deliveries: per event, per prospect, and counted per minute."""

    async def record(self, entries: Sequence[HistoryEntry]) -> None: ...

    async def touching(
        self,
        *,
        prospects: Sequence[str],
        user_ids: Sequence[str],
        emails: Sequence[str],
        limit: int = 20,
    ) -> list[HistoryEntry]:
        """The newest entries for these prospects, people (userId) or emails."""
        ...  # fmt: skip

    async def per_minute(self, since: datetime) -> dict[datetime, dict[str, int]]:
        """Entries per minute (the minute's start) and outcome, since `since`."""
        ...

    async def fields_seen(self, since: datetime) -> dict[str, int]:
        """Every field id events carried since `since`, with how many events carried it."""
        ...

    async def prospects_with_email(self, email: str) -> list[str]:
        """Prospect keys whose email we wrote as `email`, or events with it reached."""
        ...

    async def identities_of(self, prospect: str) -> list[str]:
        """The identities (user:…, lookup:…, fid:…) linked to a prospect key."""
        ...

    async def note(self, key: str, value: Any) -> None:
        """Keep a small JSON value (a cached field list, a file's progress); None forgets it."""
        ...

    async def noted(self, key: str) -> Any:
        """The value kept under `key`, or None."""
        ...


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
        """Held while finding or creating the prospect for `email` (case-insensitive).

        Every process sharing the store waits for it, so one new email never becomes two
        prospects; a lock whose holder died expires within seconds.
        """
        ...


@dataclass(frozen=True)
class IndexState:
    """How far the prospect index has got, kept with it so any process can resume.

    `ranges` are the id ranges a scan still has to pull, each as (last id pulled, end
    exclusive); `high_water` is the latest `updated_at` Pardot returned (account zone), the
    bound of the next refresh; `created_high_water` the same for `created_at`.
    """

    complete: bool = False
    ranges: tuple[tuple[int, int], ...] = ()
    high_water: str | None = None
    created_high_water: str | None = None
    total: int | None = None  # the account's size when the scan began


class ProspectIndex(Protocol):
    """Every prospect of the account: id, email, fid, lookup value, times and field values.

    Filled from Pardot's paged queries and kept fresh from its `updated_after` ones, so the
    service can decide by reading its own store and ask Pardot only what it cannot know.
    Rows are put with the lookup value in the form Pardot stores it (or None).
    """

    async def state(self) -> IndexState: ...

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
