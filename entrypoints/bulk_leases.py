"""How many events a round leases when the bulk lane is on: a batch, or enough for an import.

The import lane (domain/sync/import_lane.py) only sees the rows of one round, so a round that
is to import must lease many events at once. While at least an import's worth of events is
due, the conductor leases up to BULK_LEASE_LIMIT of them as one round; the rest of the time,
batches as before. The queue is counted at most once a second: the conductor asks before
every lease, and counting a large queue is not free.
"""

from __future__ import annotations

import time

from domain.ports import EventQueue
from domain.sync.import_lane import ImportLane

# Events one bulk round holds: its resolve, creates and import run over all of them, so the
# round's memory grows with it (about 2 KB an event); 50,000 is a thousand batch calls.
BULK_LEASE_LIMIT = 50_000
CHECK_EVERY_SECONDS = 1.0


class BulkLeases:
    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue
        self._checked_at = float("-inf")

    async def limit(self, lane: ImportLane | None) -> int | None:
        """A lease for an import's worth of due events, or None (lease a batch)."""
        if lane is None or lane.unavailable:
            return None
        now = time.monotonic()
        if now - self._checked_at < CHECK_EVERY_SECONDS:
            return None
        self._checked_at = now
        counts = await self._queue.counts()
        due = counts.get("pending", 0) + counts.get("retry", 0)
        return min(due, BULK_LEASE_LIMIT) if due >= lane.min_rows else None
