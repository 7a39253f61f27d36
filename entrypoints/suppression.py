"""The suppression list at work: forgotten people's events refused at the door, and withdrawn
from a worker's hands before anything of theirs is written to Pardot.

In: events (payloads at the door, leased events in the worker) and the store's
SuppressionList. Out: which of them belong to a suppressed person.

The door keeps a copy of the list, read again at most every `DOOR_COPY_SECONDS` (a request
costs no read of the store), and a forget made in this process replaces the copy at once; an
event another process's forget suppressed within that second may still be stored, and is then
withdrawn by the worker, whose check reads the list itself for every batch it leased.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from domain.forget import digests, event_identities
from domain.ports import PersonalData, QueuedEvent, SuppressionList

log = structlog.get_logger(__name__)

DOOR_COPY_SECONDS = 1.0


class SuppressionGate:
    def __init__(
        self,
        suppression: SuppressionList,
        personal_data: PersonalData,
        *,
        copy_seconds: float = DOOR_COPY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list = suppression
        self._data = personal_data
        self._copy_seconds = copy_seconds
        self._clock = clock
        self._salt: bytes | None = None
        self._copy: frozenset[str] = frozenset()
        self._copied_at: float | None = None

    async def refused(self, payloads: Sequence[Mapping[str, Any]]) -> set[int]:
        """The door's check: positions of the payloads whose person is suppressed."""
        now = self._clock()
        if self._copied_at is None or now - self._copied_at >= self._copy_seconds:
            self._copy = await self._list.everyone()
            self._copied_at = now
        if not self._copy:
            return set()  # the usual case: no hashing at all
        salt = await self._salt_of_store()
        return {
            position
            for position, payload in enumerate(payloads)
            if digests(salt, event_identities(payload)) & self._copy
        }

    def changed(self) -> None:
        """A forget or a lift in this process: read the list again on the next request."""
        self._copied_at = None

    async def withdraw(self, leased: Sequence[QueuedEvent]) -> set[int]:
        """The worker's check, on a batch it leased: removes the events of suppressed people
        from the queue (another node's forget may have come after the lease) and returns
        their ids, so that nothing of theirs is written to Pardot or to the history."""
        salt = await self._salt_of_store()
        keys = {item.id: digests(salt, event_identities(item.payload)) for item in leased}
        listed = await self._list.suppressed(frozenset().union(*keys.values()))
        if not listed:
            return set()
        theirs = [event_id for event_id, mine in keys.items() if mine & listed]
        await self._data.drop_events(theirs)
        log.info("withdrew events of forgotten people", events=len(theirs))
        return set(theirs)

    async def _salt_of_store(self) -> bytes:
        if self._salt is None:
            self._salt = await self._list.salt()
        return self._salt
