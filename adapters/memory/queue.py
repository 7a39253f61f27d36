"""An EventQueue in a dict, with the SQLite queue's semantics and none of its durability."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.forget import event_identities
from domain.ports import (
    PURGEABLE,
    SETTLED,
    STATES,
    QueuedEvent,
    QueueFull,
    Settlement,
    message_id_of,
    ordering_key_of,
)

__all__ = ["InMemoryEventQueue", "QueueFull"]

_OPEN = frozenset({"pending", "retry", "leased"})


@dataclass
class _Event:
    id: int
    payload: dict[str, Any]
    key: str | None
    received_at: datetime
    due_at: datetime  # see the SQLite queue: arrival, not_before, or lease end
    state: str = "pending"
    attempts: int = 0
    reason: str | None = None
    message_id: str | None = None
    settled_at: datetime | None = None
    scope: str = ""
    lease: str | None = None


def _row(e: _Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "messageId": e.message_id,
        "reason": e.reason,
        "attempts": e.attempts,
        "payload": copy.deepcopy(e.payload),
        "settled_at": e.settled_at,
        "received_at": e.received_at,
    }


class InMemoryEventQueue:
    def __init__(
        self,
        *,
        max_pending: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._events: dict[int, _Event] = {}
        self._ids = itertools.count(1)
        self._message_ids: set[tuple[str, str]] = set()
        self._paused: datetime | None = None
        self._max_pending = max_pending
        self._clock = clock

    async def put(self, payloads: Sequence[Mapping[str, Any]], *, scope: str = "") -> int:
        if not payloads:
            return 0
        if self._max_pending is not None:
            open_now = sum(e.state in _OPEN for e in self._events.values())
            if open_now >= self._max_pending:
                raise QueueFull(f"{open_now} events await delivery (limit {self._max_pending})")
        now = self._clock()
        added = 0
        for payload in payloads:
            message_id = message_id_of(payload)
            if message_id is not None:
                if (scope, message_id) in self._message_ids:
                    continue
                self._message_ids.add((scope, message_id))
            event_id = next(self._ids)
            # A deep copy, as SQLite's JSON round trip would: later edits by the caller do not leak.
            stored = copy.deepcopy(dict(payload))
            key = ordering_key_of(payload)
            self._events[event_id] = _Event(
                event_id, stored, key, now, now, message_id=message_id, scope=scope
            )
            added += 1
        return added

    def remove_where(
        self, theirs: Callable[[Mapping[str, Any]], bool], *, dry_run: bool = False
    ) -> list[str]:
        """Remove the events whose payload `theirs` picks (a forgotten person's); returns
        their states. Their messageIds stay known: a resent copy is still a duplicate."""
        chosen = [e for e in self._events.values() if theirs(e.payload)]
        if not dry_run:
            for event in chosen:
                del self._events[event.id]
        return [e.state for e in chosen]

    def identities_naming(self, identities: frozenset[str]) -> frozenset[str]:
        """Every identity the events naming one of `identities` carry."""
        named = [event_identities(e.payload) for e in self._events.values()]
        return frozenset().union(*(names for names in named if names & identities))

    def open_ids(self, event_ids: Collection[int]) -> set[int]:
        """Those of `event_ids` still waiting or leased (the import ledger asks)."""
        return {i for i in event_ids if i in self._events and self._events[i].state in _OPEN}

    def remove(self, event_ids: Sequence[int]) -> int:
        return sum(self._events.pop(i, None) is not None for i in event_ids)

    async def lease(self, limit: int, lease_seconds: float) -> list[QueuedEvent]:
        now = self._clock()
        opened = [e for e in self._events.values() if e.state in _OPEN]
        busy = {e.key for e in opened if e.state == "leased" and e.due_at > now}
        due = [e for e in opened if e.due_at <= now]
        chosen: list[_Event] = []
        for event in due:
            if len(chosen) >= limit:
                break
            if event.key is None:
                chosen.append(event)
            elif event.key not in busy:
                busy.add(event.key)
                chosen.extend([e for e in due if e.key == event.key][: limit - len(chosen)])
        until = now + timedelta(seconds=lease_seconds)
        lease = uuid.uuid4().hex
        for event in chosen:
            event.state, event.due_at, event.attempts = "leased", until, event.attempts + 1
            event.lease = lease
        return [
            QueuedEvent(
                e.id, copy.deepcopy(e.payload), e.attempts, e.received_at, lease, scope=e.scope
            )
            for e in sorted(chosen, key=lambda e: e.id)
        ]

    async def renew(self, lease: str, lease_seconds: float) -> int:
        until = self._clock() + timedelta(seconds=lease_seconds)
        held = [e for e in self._events.values() if e.state == "leased" and e.lease == lease]
        for event in held:
            event.due_at = until
        return len(held)

    async def settle(self, settlements: Mapping[int, Settlement]) -> set[int]:
        for s in settlements.values():
            if s.state not in SETTLED:
                raise ValueError(f"cannot settle an event as {s.state!r}")
        now = self._clock()
        settled: set[int] = set()
        for event_id, s in settlements.items():
            event = self._events.get(event_id)
            if event is None:
                continue
            if s.lease is not None and (event.state != "leased" or event.lease != s.lease):
                continue  # another lease took the event over, as in the SQLite queue
            event.state, event.reason, event.lease = s.state, s.reason, None
            if s.state == "retry" and not s.spent:
                event.attempts = max(event.attempts - 1, 0)
            event.due_at = (s.not_before or now) if s.state == "retry" else now
            event.settled_at = None if s.state == "retry" else now
            settled.add(event_id)
        return settled

    async def pause_until(self, when: datetime | None) -> None:
        self._paused = when

    async def paused_until(self) -> datetime | None:
        return self._paused

    async def counts(self) -> dict[str, int]:
        found = {state: 0 for state in STATES}
        for event in self._events.values():
            found[event.state] += 1
        return found

    async def recent(self, state: str, limit: int = 20) -> list[dict[str, Any]]:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        newest = [e for e in reversed(self._events.values()) if e.state == state][:limit]
        return [_row(e) for e in newest]

    async def dead_letter(self, event_id: int) -> dict[str, Any] | None:
        event = self._events.get(event_id)
        return _row(event) if event is not None and event.state == "dead" else None

    async def replay(self, event_ids: Sequence[int]) -> list[int]:
        now = self._clock()
        wanted = set(event_ids)
        dead = [e for e in self._events.values() if e.state == "dead" and e.id in wanted]
        for event in dead:
            event.state, event.attempts, event.reason, event.due_at = "pending", 0, None, now
            event.settled_at = None
        return sorted(e.id for e in dead)

    async def purge_dead(self, settled_before: datetime) -> int:
        gone = [
            e
            for e in self._events.values()
            if e.state == "dead" and e.settled_at is not None and e.settled_at < settled_before
        ]
        for event in gone:
            del self._events[event.id]
            if event.message_id is not None:
                self._message_ids.discard((event.scope, event.message_id))
        return len(gone)

    async def oldest_pending(self) -> datetime | None:
        waiting = [e.received_at for e in self._events.values() if e.state in _OPEN]
        return min(waiting, default=None)

    async def requeue_dead(self) -> int:
        now = self._clock()
        dead = [e for e in self._events.values() if e.state == "dead"]
        for event in dead:
            event.state, event.attempts, event.reason, event.due_at = "pending", 0, None, now
        return len(dead)

    async def purge(self, settled_before: datetime) -> int:
        gone = [
            e
            for e in self._events.values()
            if e.state in PURGEABLE and e.settled_at is not None and e.settled_at < settled_before
        ]
        for event in gone:
            del self._events[event.id]
            if event.message_id is not None:
                self._message_ids.discard((event.scope, event.message_id))
        return len(gone)

    async def close(self) -> None:
        """Nothing to release; here so either queue can be closed the same way."""

    async def __aenter__(self) -> InMemoryEventQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
