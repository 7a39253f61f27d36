"""A ProspectIndex in dicts: for tests, dry runs and single-process experiments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from domain.ports import IndexState
from domain.prospect import Prospect


class InMemoryProspectIndex:
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rows: dict[int, tuple[Prospect, str | None]] = {}
        self._state = IndexState()

    async def state(self) -> IndexState:
        return self._state

    async def clock(self) -> datetime:
        return self._clock()

    async def save_state(self, state: IndexState) -> None:
        self._state = state

    async def put(self, rows: Sequence[tuple[Prospect, str | None]]) -> None:
        for prospect, lookup in rows:
            self._rows[prospect.id] = (prospect, lookup)

    async def drop(self, ids: Sequence[int]) -> None:
        for prospect_id in ids:
            self._rows.pop(prospect_id, None)

    async def by_ids(self, ids: Sequence[int]) -> dict[int, Prospect]:
        return {i: self._rows[i][0] for i in ids if i in self._rows}

    async def rows_after(self, prospect_id: int, limit: int) -> list[Prospect]:
        ids = sorted(i for i in self._rows if i > prospect_id)[:limit]
        return [self._rows[i][0] for i in ids]

    async def by_emails(self, emails: Sequence[str]) -> dict[str, list[Prospect]]:
        wanted = {e.strip().lower() for e in emails}
        found: dict[str, list[Prospect]] = {}
        for prospect, _ in sorted(self._rows.values(), key=lambda row: row[0].id):
            key = (prospect.email or "").strip().lower()
            if key in wanted:
                found.setdefault(key, []).append(prospect)
        return found

    async def by_fid(self, fid: str) -> Prospect | None:
        return next((p for p, _ in self._rows.values() if p.fid == fid), None)

    async def holding(self, value: str) -> list[Prospect]:
        return sorted((p for p, v in self._rows.values() if v == value), key=lambda p: p.id)

    async def count(self) -> int:
        return len(self._rows)

    async def clear(self) -> None:
        self._rows.clear()
        self._state = IndexState()
