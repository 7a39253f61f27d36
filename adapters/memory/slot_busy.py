"""Busy Pardot slot-seconds per 10-second bucket in a dict: one process only."""

from __future__ import annotations


class InMemorySlotBusyLog:
    def __init__(self) -> None:
        self._buckets: dict[int, float] = {}

    async def add(self, bucket: int, seconds: float) -> None:
        self._buckets[bucket] = self._buckets.get(bucket, 0.0) + seconds

    async def busy(self, start: int, end: int) -> float:
        return sum(s for bucket, s in self._buckets.items() if start <= bucket < end)
