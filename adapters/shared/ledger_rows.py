"""Import ledger rows as both SQL backends keep them: one line per (import, event), the lines
of one import row sharing its number; these turn them back into `RecordedImport`s."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from domain.ports import RecordedImport, RecordedRow

# (import_id, event_id, row_no, match, prospect, prospect_id)
Line = tuple[int, int, int, str, str, int | None]


def lines_of(entry: RecordedImport) -> list[Line]:
    return [
        (entry.id, event, number, row.match, row.prospect, row.prospect_id)
        for number, row in enumerate(entry.rows)
        for event in row.events
    ]


def columns_text(entry: RecordedImport) -> str:
    return json.dumps(list(entry.columns))


def imports_from(
    heads: Iterable[tuple[Any, ...]], lines: Iterable[tuple[Any, ...]]
) -> list[RecordedImport]:
    """`heads`: (import_id, match, columns JSON, finished); `lines`: as `Line`."""
    rows: dict[int, dict[int, list[Any]]] = {}
    for import_id, event, number, match, prospect, prospect_id in lines:
        row = rows.setdefault(int(import_id), {}).setdefault(
            int(number), [[], match, prospect, prospect_id]
        )
        row[0].append(int(event))
    found = []
    for import_id, match, columns, finished in heads:
        numbered = rows.get(int(import_id), {})
        found.append(
            RecordedImport(
                int(import_id),
                match,
                tuple(json.loads(columns)),
                tuple(
                    RecordedRow(tuple(sorted(r[0])), r[1], r[2], r[3])
                    for _, r in sorted(numbered.items())
                ),
                finished=bool(finished),
            )
        )
    return sorted(found, key=lambda entry: entry.id)
