"""The imports in flight in a dict: one process only, beside the in-memory queue."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from domain.ports import RecordedImport


class InMemoryImportLedger:
    """`open_events` (the queue's `open_ids`) tells which events still wait or are leased:
    a row whose event is gone (forgotten, purged) makes no write wait."""

    def __init__(self, open_events: Callable[[Collection[int]], set[int]] | None = None) -> None:
        self._imports: dict[int, RecordedImport] = {}
        self._open_events = open_events

    async def record(self, entry: RecordedImport) -> None:
        self._imports[entry.id] = replace(entry, finished=False)

    async def holding(self, event_ids: Collection[int]) -> list[RecordedImport]:
        wanted = set(event_ids)
        found = []
        for entry in self._imports.values():
            rows = tuple(row for row in entry.rows if wanted.intersection(row.events))
            if rows:
                found.append(replace(entry, rows=rows))
        return found

    async def finish(self, import_id: int) -> None:
        if import_id in self._imports:
            self._imports[import_id] = replace(self._imports[import_id], finished=True)

    async def waiting_on(self, prospects: Collection[str]) -> dict[str, int]:
        wanted = set(prospects)
        found: dict[str, int] = {}
        for entry in self._imports.values():
            if entry.finished:
                continue
            for row in entry.rows:
                if row.prospect in wanted and self._open(row.events):
                    found[row.prospect] = entry.id
        return found

    async def forget(self, event_ids: Sequence[int]) -> None:
        gone = set(event_ids)
        for import_id, entry in list(self._imports.items()):
            if not entry.finished:
                continue
            rows = []
            for row in entry.rows:
                left = tuple(e for e in row.events if e not in gone)
                if left:
                    rows.append(replace(row, events=left))
            if rows:
                self._imports[import_id] = replace(entry, rows=tuple(rows))
            else:
                del self._imports[import_id]

    async def unfinished(self) -> list[RecordedImport]:
        return [entry for entry in self._imports.values() if not entry.finished]

    def _open(self, events: Collection[int]) -> bool:
        return self._open_events is None or bool(self._open_events(events))
