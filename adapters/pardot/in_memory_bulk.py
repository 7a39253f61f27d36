"""The Import and Export APIs in memory, with Pardot's semantics (BulkPardot for InMemoryPardot).

Imports: columns with `overwrite` / `nullOverwrite`, at most 10 batches of under 10 MB, v4
rows updating only by `prospect_id` or `salesforce_fid`, v3 rows matched by email (created
when new), recycle-bin rows skipped unless `restoreDeleted`; failed rows kept with a reason.
An import completes at its first read after submission. Exports: prospects by `updated_at`
range (at most a year, else 177), completed oldest first, dates written in the request's
zone; the store's own times are in `account_zone`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol, TypeVar

from domain.errors import (
    BulkLimitExceeded,
    ImportUnavailable,
    PardotError,
    PermanentPardotError,
)
from domain.ports import (
    BULK_BATCH_BYTES,
    BULK_BATCHES_PER_DAY,
    BULK_BATCHES_PER_IMPORT,
    ExportRequest,
    ExportStatus,
    ImportColumn,
    ImportRowError,
    ImportStatus,
)
from domain.ports.bulk import EXPORT_MAX_RANGE_DAYS, PARDOT_TIME, ExportState, ImportState
from domain.prospect import READ_ONLY_FIELDS, STANDARD_FIELDS, Fields, normalise_email

if TYPE_CHECKING:
    from adapters.pardot.in_memory import _Record

V4_IDENTIFIERS = ("prospect_id", "salesforce_fid")
_JobT = TypeVar("_JobT")
EXPORT_REF = "memory://export/{id}/file/1"
NOT_EXPORTABLE = frozenset({"grade", "notes"})
MAX_EXPORT_FIELDS = 150  # Pardot's export page: the fields of an export "can't exceed 150"


@dataclass
class _Import:
    id: int
    columns: dict[str, ImportColumn]
    restore_deleted: bool
    state: str = "Open"
    header: list[str] | None = None
    rows: list[dict[str, str]] = field(default_factory=list)
    batches: int = 0
    created: int = 0
    updated: int = 0
    failed: list[ImportRowError] = field(default_factory=list)


@dataclass
class _Export:
    id: int
    request: ExportRequest
    state: str = "Waiting"
    rows: list[dict[str, str]] = field(default_factory=list)


class _Host(Protocol):
    """What InMemoryPardot offers its bulk lane: its records, bin, clock and counters."""

    _version: int
    _records: dict[int, _Record]
    _recycle_bin: dict[int, _Record]
    custom_field_types: dict[str, str]
    import_enabled: bool
    account_zone: tzinfo
    bulk_imports: dict[int, _Import]
    bulk_exports: dict[int, _Export]
    export_failures: int
    export_custom_fields: bool
    batches_today: int
    _clock: Iterator[int]

    def _new(self, email: str, fid: str | None) -> _Record: ...
    def _apply(self, record: _Record, fields: Fields) -> None: ...
    def _by_email(self, email: str) -> list[_Record]: ...
    async def _count_async(self, operation: str) -> None: ...


class InMemoryBulk:
    """Mixed into InMemoryPardot (the `_Host`)."""

    async def create_import(
        self: _Host, columns: Sequence[ImportColumn], *, restore_deleted: bool = False
    ) -> ImportStatus:
        await self._count_async("import/create")
        if not self.import_enabled:
            raise ImportUnavailable(
                "This API user lacks sufficient permissions for the requested operation", code=46
            )
        job = _Import(700 + len(self.bulk_imports) + 1, {c.field: c for c in columns},
                      restore_deleted)  # fmt: skip
        self.bulk_imports[job.id] = job
        return _import_status(job)

    async def add_import_batch(self: _Host, import_id: int, csv_data: bytes) -> None:
        if len(csv_data) >= BULK_BATCH_BYTES:
            raise BulkLimitExceeded(
                f"an import batch must be smaller than {BULK_BATCH_BYTES} bytes"
            )
        await self._count_async("import/batch")
        job = _find(self.bulk_imports, import_id)
        if job.state != "Open":
            raise PermanentPardotError(
                "The current state of the import does not allow the operation", code=161
            )
        if job.batches >= BULK_BATCHES_PER_IMPORT:
            raise BulkLimitExceeded("The limit of batches per import has been reached", code=160)
        if self.batches_today >= BULK_BATCHES_PER_DAY:
            raise BulkLimitExceeded("Daily limit of import batches has been reached", code=164)
        header, rows = _read_csv(csv_data)
        _check_header(self, job, header)
        job.header = header
        job.rows.extend(dict(zip(header, row, strict=True)) for row in rows)
        job.batches += 1
        self.batches_today += 1

    async def submit_import(self: _Host, import_id: int) -> ImportStatus:
        await self._count_async("import/update")
        job = _find(self.bulk_imports, import_id)
        if job.state != "Open":
            raise PermanentPardotError('Can\'t update. Import must be in "Open" state.', code=155)
        if not job.rows:
            raise PermanentPardotError(
                "Can't start processing. Import has no associated data.", code=156
            )
        job.state = "Waiting"
        return _import_status(job)

    async def read_import(self: _Host, import_id: int) -> ImportStatus:
        await self._count_async("import/read")
        job = _find(self.bulk_imports, import_id)
        if job.state == "Waiting":
            for row in job.rows:
                _apply_row(self, job, row)
            job.state = "Complete"
        return _import_status(job)

    async def import_errors(self: _Host, import_id: int) -> list[ImportRowError]:
        await self._count_async("import/downloadErrors")
        job = _find(self.bulk_imports, import_id)
        if job.state != "Complete":
            raise PermanentPardotError(
                "The current state of the import does not allow the operation", code=161
            )
        return list(job.failed)

    async def create_export(self: _Host, request: ExportRequest) -> ExportStatus:
        await self._count_async("export/create")
        from adapters.pardot.in_memory import EPOCH  # the store's times count seconds from it

        # Pardot's "now" is the store's clock (ticks), not this host's.
        now = (EPOCH + timedelta(seconds=next(self._clock))).replace(tzinfo=self.account_zone)
        upper = request.updated_before or now
        if upper <= request.updated_after or upper - request.updated_after > timedelta(
            days=EXPORT_MAX_RANGE_DAYS + 1
        ):
            raise PermanentPardotError("Invalid procedure argument.", code=177)
        exportable = {"id", *STANDARD_FIELDS, *READ_ONLY_FIELDS} - NOT_EXPORTABLE
        if self.export_custom_fields:
            exportable |= set(self.custom_field_types)
        if len(request.fields) > MAX_EXPORT_FIELDS or any(
            name not in exportable for name in request.fields
        ):
            # Pardot's docs name no custom field as exportable; `grade` and `notes` are not.
            raise PermanentPardotError("One or more of the specified fields are invalid", code=130)
        job = _Export(201900 + len(self.bulk_exports) + 1, request)
        self.bulk_exports[job.id] = job
        return _export_status(job)

    async def read_export(self: _Host, export_id: int) -> ExportStatus:
        await self._count_async("export/read")
        job = _find(self.bulk_exports, export_id)
        # One at a time, oldest first: reading one finishes every export queued before it.
        for older in sorted(self.bulk_exports.values(), key=lambda j: j.id):
            if older.id > export_id:
                break
            if older.state == "Waiting" and self.export_failures > 0:
                self.export_failures -= 1
                older.state = "Failed"
            elif older.state == "Waiting":
                older.rows = _export_rows(self, older.request)
                older.state = "Complete"
        return _export_status(job)

    async def download_export(self: _Host, ref: str) -> list[dict[str, str]]:
        await self._count_async("export/downloadResults")
        for job in self.bulk_exports.values():
            if EXPORT_REF.format(id=job.id) == ref and job.state == "Complete":
                return [dict(row) for row in job.rows]
        raise PermanentPardotError("The requested record was not found.", code=109)


def _find(jobs: Mapping[int, _JobT], job_id: int) -> _JobT:
    if job_id not in jobs:
        raise PermanentPardotError("The requested record was not found.", code=109)
    return jobs[job_id]


def _import_status(job: _Import) -> ImportStatus:
    state: ImportState = (
        "Complete" if job.state == "Complete" else ("Waiting" if job.state == "Waiting" else "Open")
    )
    return ImportStatus(job.id, state, False, job.created, job.updated, len(job.failed))


def _export_status(job: _Export) -> ExportStatus:
    files = (EXPORT_REF.format(id=job.id),) if job.state == "Complete" and job.rows else ()
    state: ExportState = "Waiting"
    if job.state in ("Complete", "Failed"):
        state = "Complete" if job.state == "Complete" else "Failed"
    return ExportStatus(job.id, state, False, files)


def _read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if row]
    if len(rows) < 2 or any(len(row) != len(rows[0]) for row in rows):
        raise PermanentPardotError("The file is not in a valid CSV format", code=159)
    return [name.strip() for name in rows[0]], rows[1:]


def _check_header(host: _Host, job: _Import, header: Sequence[str]) -> None:
    identifiers = set(V4_IDENTIFIERS) if host._version == 4 else set()
    known = set(STANDARD_FIELDS) | set(host.custom_field_types) | identifiers
    if any(name not in known for name in header) or len(set(header)) != len(header):
        raise PermanentPardotError("One or more of the specified fields are invalid", code=130)
    if job.header is not None and list(header) != job.header:
        raise PermanentPardotError("The file is not in a valid CSV format", code=159)
    if job.columns and set(job.columns) != set(header):
        raise PermanentPardotError("column options is invalid", code=165)


def _apply_row(host: _Host, job: _Import, row: Mapping[str, str]) -> None:
    fields = {k: v for k, v in row.items() if k not in V4_IDENTIFIERS}
    try:
        record = _match(host, job, row)
        if record is None:  # v3: nobody has the row's email
            created = host._new(row["email"], None)
            filled: Fields = {k: v for k, v in fields.items() if v.strip()}
            host._apply(created, filled)
            job.created += 1
            return
        if record.id in host._recycle_bin:
            host._records[record.id] = host._recycle_bin.pop(record.id)
        host._apply(record, _update_fields(job, fields))
        job.updated += 1
    except PardotError as error:
        job.failed.append(ImportRowError(dict(row), error.message))


def _match(host: _Host, job: _Import, row: Mapping[str, str]) -> _Record | None:
    if host._version == 4:
        prospect_id = row.get("prospect_id", "").strip()
        fid = row.get("salesforce_fid", "").strip()
        if not prospect_id and not fid:
            raise PermanentPardotError(
                "No prospect_id or salesforce_fid: a version 4 row is skipped", code=3
            )
        everyone = {**host._recycle_bin, **host._records}
        if prospect_id:
            record = everyone.get(int(prospect_id)) if prospect_id.isdigit() else None
        else:
            record = next((r for r in everyone.values() if r.fid == fid), None)
        if record is None:
            raise PermanentPardotError("Prospect not found", code=3)
    else:
        email = row.get("email", "")
        if normalise_email(email) is None:
            raise PermanentPardotError("Invalid prospect email address", code=4)
        live = host._by_email(email)
        if live:
            return min(live, key=lambda r: r.id)
        wanted = email.strip().lower()
        binned = [r for r in host._recycle_bin.values() if r.email.lower() == wanted]
        if not binned:
            return None
        record = min(binned, key=lambda r: r.id)
    if record.id in host._recycle_bin and not job.restore_deleted:
        raise PermanentPardotError("Prospect is in the recycle bin", code=3)
    return record


def _update_fields(job: _Import, fields: Mapping[str, str]) -> Fields:
    kept: Fields = {}
    for name, value in fields.items():
        column = job.columns.get(name, ImportColumn(name))
        if not column.overwrite or (not value.strip() and not column.null_overwrite):
            continue
        kept[name] = value
    return kept


def _export_rows(host: _Host, request: ExportRequest) -> list[dict[str, str]]:
    from adapters.pardot.in_memory import EPOCH  # the store's times count seconds from it

    def account_time(tick: int) -> datetime:
        return (EPOCH + timedelta(seconds=tick)).replace(tzinfo=host.account_zone)

    pool = list(host._records.values())
    if request.include_deleted:
        pool += list(host._recycle_bin.values())
    rows = []
    for record in sorted(pool, key=lambda r: r.id):
        updated = account_time(record.updated)
        if updated <= request.updated_after:
            continue
        if request.updated_before is not None and updated >= request.updated_before:
            continue
        values: dict[str, str] = {
            "id": str(record.id),
            "email": record.email,
            "salesforce_fid": record.fid or "",
            "created_at": account_time(record.created)
            .astimezone(request.zone)
            .strftime(PARDOT_TIME),
            "updated_at": updated.astimezone(request.zone).strftime(PARDOT_TIME),
        }
        for name, value in record.fields.items():
            if name in STANDARD_FIELDS or name in host.custom_field_types:
                values[name] = value if isinstance(value, str) else ",".join(value)
        rows.append({name: values.get(name, "") for name in request.fields})
    return rows
