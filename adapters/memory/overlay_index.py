"""A ProspectIndex over the real one that keeps its own puts, drops and state in memory.

In: the index a real run would use. Out: the same port, read through to it, where what a run
puts (prospects it wrote or learned), drops and saves as the index's state (the watermark)
stays in this object: a dry run sees its own changes, the shared index never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from domain.ports import IndexState, ProspectIndex
from domain.prospect import Prospect


def _email_key(prospect: Prospect) -> str:
    return (prospect.email or "").strip().lower()


class OverlayProspectIndex:
    def __init__(self, index: ProspectIndex) -> None:
        self._index = index
        self._rows: dict[int, tuple[Prospect, str | None]] = {}
        self._hidden: set[int] = set()  # rows of the real index replaced or dropped here
        self._by_email: dict[str, set[int]] = {}
        self._by_lookup: dict[str, set[int]] = {}
        self._by_fid: dict[str, int] = {}
        self._state: IndexState | None = None
        self._cleared = False

    async def state(self) -> IndexState:
        return self._state if self._state is not None else await self._index.state()

    async def clock(self) -> datetime:
        return await self._index.clock()

    async def save_state(self, state: IndexState) -> None:
        self._state = state

    async def put(self, rows: Sequence[tuple[Prospect, str | None]]) -> None:
        for prospect, lookup in rows:
            self._forget(prospect.id)
            self._rows[prospect.id] = (prospect, lookup)
            self._hidden.add(prospect.id)
            self._by_email.setdefault(_email_key(prospect), set()).add(prospect.id)
            if lookup is not None:
                self._by_lookup.setdefault(lookup, set()).add(prospect.id)
            if prospect.fid:
                self._by_fid[prospect.fid] = prospect.id

    async def drop(self, ids: Sequence[int]) -> None:
        for prospect_id in ids:
            self._forget(prospect_id)
            self._hidden.add(prospect_id)

    async def by_ids(self, ids: Sequence[int]) -> dict[int, Prospect]:
        found = {i: self._rows[i][0] for i in ids if i in self._rows}
        rest = [i for i in ids if i not in self._hidden]
        if rest and not self._cleared:
            found.update(await self._index.by_ids(rest))
        return found

    async def by_emails(self, emails: Sequence[str]) -> dict[str, list[Prospect]]:
        real = await self._index.by_emails(emails) if not self._cleared else {}
        found: dict[str, list[Prospect]] = {}
        for email in {e.strip().lower() for e in emails}:
            mine = self._mine(self._by_email.get(email, ()))
            rows = self._merged(real.get(email, []), mine)
            if rows:
                found[email] = rows
        return found

    async def by_fid(self, fid: str) -> Prospect | None:
        if fid in self._by_fid:
            return self._rows[self._by_fid[fid]][0]
        real = await self._index.by_fid(fid) if not self._cleared else None
        return real if real is not None and real.id not in self._hidden else None

    async def holding(self, value: str) -> list[Prospect]:
        real = await self._index.holding(value) if not self._cleared else []
        return self._merged(real, self._mine(self._by_lookup.get(value, ())))

    async def rows_after(self, prospect_id: int, limit: int) -> list[Prospect]:
        while True:
            real = [] if self._cleared else await self._index.rows_after(prospect_id, limit)
            # Past a full page of real rows lie more: answer only up to its last id.
            end = real[-1].id if len(real) == limit else None
            rows = {p.id: p for p in real if p.id not in self._hidden}
            rows.update(
                (i, self._rows[i][0])
                for i in self._rows
                if i > prospect_id and (end is None or i <= end)
            )
            if rows or end is None:
                return [rows[i] for i in sorted(rows)][:limit]
            prospect_id = end  # every real row of that page is replaced or dropped here

    async def count(self) -> int:
        if self._cleared:
            return len(self._rows)
        hidden = await self._index.by_ids(sorted(self._hidden)) if self._hidden else {}
        return await self._index.count() - len(hidden) + len(self._rows)

    async def clear(self) -> None:
        for prospect_id in list(self._rows):
            self._forget(prospect_id)
        self._cleared = True
        self._state = IndexState()

    def _mine(self, ids: Iterable[int]) -> list[Prospect]:
        return [self._rows[i][0] for i in ids]

    def _merged(self, real: list[Prospect], mine: list[Prospect]) -> list[Prospect]:
        rows = [p for p in real if p.id not in self._hidden] + mine
        return sorted(rows, key=lambda p: p.id)

    def _forget(self, prospect_id: int) -> None:
        row = self._rows.pop(prospect_id, None)
        if row is None:
            return
        prospect, lookup = row
        self._by_email.get(_email_key(prospect), set()).discard(prospect_id)
        if lookup is not None:
            self._by_lookup.get(lookup, set()).discard(prospect_id)
        if prospect.fid and self._by_fid.get(prospect.fid) == prospect_id:
            del self._by_fid[prospect.fid]
