"""Imports: the rows a write stage would send by batches in, Pardot imports and the rest out (pure).

In: the pending rows of a batch (`ProspectWrite`, one per prospect), the API version and the
least rows an import must carry to pay. Out: `plan_imports`, a `Plan` of `PlannedImport`s
(columns with their overwrite flags, the rows' positions and the CSV files to upload) and the
positions of the rows that stay with batches of 50.

Pardot's rules (PARDOT_API.md, "Bulk: Import and Export"): every file of an import has the same
header row; a blank value overwrites unless its column says `nullOverwrite: false`; an
`overwrite: false` column only fills new prospects; v4 imports match rows by `prospect_id` or
`salesforce_fid` and never create; v3 imports match by email and create. Rows and files are
processed in no particular order, so one import never carries two rows for one prospect.

Only the columns a row writes go in its file: rows are grouped by the exact set of fields they
write, so a blank cell is always a value an event cleared, never a field the row left alone.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from domain.ports import (
    BATCH_LIMIT,
    BULK_BATCH_BYTES,
    BULK_BATCHES_PER_IMPORT,
    ImportColumn,
    ProspectWrite,
)

MAX_FILE_BYTES = BULK_BATCH_BYTES - 1  # Pardot: each file (batch) smaller than 10 MB
MAX_FILES = BULK_BATCHES_PER_IMPORT
# The calls an import costs beside its files: create, submit, reading the errors, and the
# status reads of a run of a few minutes (backing off from 5 s to 60 s: 5, 10, 20, 40, 60...).
IMPORT_FIXED_CALLS = 11
# The fewest rows whose import (one file) costs fewer calls than batches of 50 (`pays`).
MIN_IMPORT_ROWS = BATCH_LIMIT * (IMPORT_FIXED_CALLS + 1) + 1

Match = Literal["prospect_id", "salesforce_fid", "email"]
_MATCH_BY: dict[str, Match] = {"id": "prospect_id", "fid": "salesforce_fid", "email": "email"}


@dataclass(frozen=True)
class PlannedImport:
    """One import: its columns (the match column first, as in the files), the positions (in
    the rows planned) of the rows it carries, and its files, each with the header row."""

    match: Match
    columns: tuple[ImportColumn, ...]
    rows: tuple[int, ...]
    files: tuple[bytes, ...]


@dataclass(frozen=True)
class Plan:
    imports: list[PlannedImport] = field(default_factory=list)
    by_batches: list[int] = field(default_factory=list)  # positions left to batch calls


def importable(row: ProspectWrite, version: int) -> bool:
    """Whether an import can carry `row` as Pardot would write it by a batch call."""
    values = (*row.fields.values(), *row.create_fields.values())
    if any(isinstance(v, tuple) for v in values):
        return False  # a multi-value field's CSV form is not among our facts
    if any(isinstance(v, str) and v and not v.strip() for v in values):
        return False  # an import takes a cell of spaces for a blank; a batch call writes it
    if version >= 4:
        # v4 imports update only, by id or fid; a create goes by batchCreate.
        return row.by in ("id", "fid") and row.mode == "update" and not row.create_fields
    return row.by == "email" and row.mode == "upsert"


def pays(rows: int, files: int = 1) -> bool:
    """Whether an import of `rows` in `files` costs fewer calls than batches of 50."""
    return -(-rows // BATCH_LIMIT) > IMPORT_FIXED_CALLS + files


def plan_imports(
    rows: Sequence[ProspectWrite],
    *,
    version: int,
    min_rows: int = MIN_IMPORT_ROWS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Plan:
    """Imports for every set of columns written by at least `min_rows` importable rows; every
    other row stays with batches. A set too large for one import's files makes several."""
    sets: dict[tuple[Match, frozenset[str], frozenset[str]], list[int]] = {}
    seen: set[tuple[str, str]] = set()
    plan = Plan()
    for position, row in enumerate(rows):
        if not importable(row, version):
            plan.by_batches.append(position)
            continue
        only_new = frozenset(row.create_fields) - frozenset(row.fields)
        shape = (_MATCH_BY[row.by], frozenset(row.fields), only_new)
        if _seen(row, seen):
            plan.by_batches.append(position)  # one import never holds a prospect twice
            continue
        sets.setdefault(shape, []).append(position)
    for (match, names, only_new), positions in sets.items():
        if len(positions) < min_rows:
            plan.by_batches.extend(positions)
            continue
        members = [rows[p] for p in positions]
        columns = tuple(
            [ImportColumn(match, overwrite=False, null_overwrite=False)]
            + [
                ImportColumn(n, True, any(r.fields[n] == "" for r in members))
                for n in sorted(names)
            ]
            + [ImportColumn(n, overwrite=False, null_overwrite=False) for n in sorted(only_new)]
        )
        plan.imports.extend(_split(match, columns, positions, rows, max_file_bytes))
    plan.by_batches.sort()
    return plan


def _seen(row: ProspectWrite, seen: set[tuple[str, str]]) -> bool:
    """Whether a row for the same prospect came earlier (an email in any case is one)."""
    key = (row.by, row.key.strip().lower() if row.by == "email" else row.key)
    if key in seen:
        return True
    seen.add(key)
    return False


def _split(
    match: Match,
    columns: tuple[ImportColumn, ...],
    positions: list[int],
    rows: Sequence[ProspectWrite],
    max_file_bytes: int,
) -> list[PlannedImport]:
    """The rows as files under `max_file_bytes`, at most MAX_FILES an import."""
    header = _line([c.field for c in columns])
    imports: list[PlannedImport] = []
    files: list[bytes] = []
    carried: list[int] = []
    current = [header]
    size = len(header)
    for position in positions:
        line = _line([rows[position].key, *(_cell(rows[position], c) for c in columns[1:])])
        if len(header) + len(line) > max_file_bytes:
            raise ValueError(f"one row of {len(line)} bytes cannot fit in an import file")
        if size + len(line) > max_file_bytes:
            files.append(b"".join(current))
            current, size = [header], len(header)
            if len(files) == MAX_FILES:
                imports.append(PlannedImport(match, columns, tuple(carried), tuple(files)))
                files, carried = [], []
        current.append(line)
        size += len(line)
        carried.append(position)
    files.append(b"".join(current))
    imports.append(PlannedImport(match, columns, tuple(carried), tuple(files)))
    return imports


def _cell(row: ProspectWrite, column: ImportColumn) -> str:
    value = row.fields[column.field] if column.overwrite else row.create_fields[column.field]
    assert isinstance(value, str)  # importable() let no multi-value field through
    return value


def _line(cells: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()
