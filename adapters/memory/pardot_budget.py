"""Pardot calls per account day in a dict: one process only."""

from __future__ import annotations


class InMemoryApiCallCounts:
    def __init__(self) -> None:
        self._days: dict[str, int] = {}

    async def add(self, day: str, calls: int = 1) -> int:
        self._days[day] = self._days.get(day, 0) + calls
        return self._days[day]

    async def used(self, day: str) -> int:
        return self._days.get(day, 0)
