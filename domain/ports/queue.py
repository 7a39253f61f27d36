"""The event queue's port and the vocabulary every queue shares.

Implemented by each store backend; the ingest door puts events in, the worker leases them
(`QueuedEvent` out) and settles them (`Settlement` in). The states, and how an event's
messageId and ordering key are read, live here so that every backend means the same by them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from domain.prospect import FieldValue


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
    # Who sent it: the `scope` it was put with (a messageId is unique only within it).
    scope: str = ""


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
    # Whether the attempt its lease counted stays spent. A retry that is nobody's fault (the
    # store unreachable, the daily limit, a shutdown) hands it back: `attempts` goes down by
    # one, so such waits never bring an event nearer its dead letter.
    spent: bool = True

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
