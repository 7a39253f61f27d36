"""Pardot's Import API (v3/v4) in the fake: imports, their batches and how rows are applied.

Source: Pardot's own `docs/kb/api-version-{3,4}/import.md` and its error-code page (see
PARDOT_API.md, "Bulk: Import and Export"). Nothing here speaks HTTP (`fake_pardot_bulk` does).

Time is the fake's `clock` (Pardot's time, naive): a submitted import waits
`import_queue_delay` seconds, then its rows are applied at `import_rows_per_second`, a few at a
time whenever the fake is next asked anything (`advance`), so a slow rate shows a real
Processing state and a test that sets the clock decides what has happened.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from contracts.fake_pardot_state import (
    INVALID_EMAIL,
    INVALID_PROSPECT_ID,
    WRITABLE_FIELDS,
    PardotError,
    ProspectRecord,
)

if TYPE_CHECKING:
    from contracts.fake_pardot_state import FakePardot

# Import API error codes (Pardot's error-code page; 165 is printed there as a second "164").
PERMISSION_DENIED = 46  # the user's role lacks the Prospect Import ability
RECORD_NOT_FOUND = 109
INVALID_FIELDS = 130
INVALID_JSON = 150
UNSUPPORTED_CONTENT_TYPE = 151
EMPTY_BODY = 152
MISSING_PROPERTY = 153
INVALID_PROPERTY = 154
NOT_OPEN = 155
NO_DATA = 156
UPLOAD_FAILED = 158
INVALID_CSV = 159
TOO_MANY_BATCHES = 160
STATE_FORBIDS = 161
NO_FILE = 162
TOO_MANY_FILES = 163
DAILY_BATCHES = 164
INVALID_COLUMNS = 165

IMPORT_MESSAGES: dict[int, str] = {
    PERMISSION_DENIED: "This API user lacks sufficient permissions for the requested operation",
    RECORD_NOT_FOUND: "The requested record was not found.",
    INVALID_FIELDS: "One or more of the specified fields are invalid",
    INVALID_JSON: "Input needs to be valid JSON",
    UNSUPPORTED_CONTENT_TYPE: "Unsupported content-type",
    EMPTY_BODY: "Request body can't be empty",
    MISSING_PROPERTY: "Missing required property in request",
    INVALID_PROPERTY: "Invalid property in request",
    NOT_OPEN: 'Can\'t update. Import must be in "Open" state.',
    NO_DATA: "Can't start processing. Import has no associated data.",
    UPLOAD_FAILED: "Uploading a file was unsuccessful",
    INVALID_CSV: "The file is not in a valid CSV format",
    TOO_MANY_BATCHES: "The limit of batches per import has been reached",
    STATE_FORBIDS: "The current state of the import does not allow the operation",
    NO_FILE: "No file was specified or uploaded",
    TOO_MANY_FILES: "Too many files were specified or uploaded",
    DAILY_BATCHES: "Daily limit of import batches has been reached",
    INVALID_COLUMNS: "column options is invalid",
}

MAX_BATCHES_PER_IMPORT = 10
BATCH_BYTES_LIMIT = 10 * 1024 * 1024  # "Each batch must be smaller than 10MB."
DAILY_BATCH_LIMIT = 1000
OPEN_LIFETIME = timedelta(hours=24)  # an import never submitted expires after 24 hours
RESULT_LIFETIME = timedelta(days=7)  # results expire 7 days after completion
# Columns that name the prospect a v4 row updates (v4 imports never create).
V4_IDENTIFIERS = ("prospect_id", "salesforce_fid")
# Pardot's docs do not show the error file's layout: the fake sends each failed row's own
# columns and one more, named here, with the reason.
ERROR_COLUMN = "error"


def refuse(code: int) -> PardotError:
    return PardotError(code, IMPORT_MESSAGES.get(code))


@dataclass(frozen=True)
class Column:
    field: str
    overwrite: bool = True
    null_overwrite: bool = True


@dataclass
class ImportJob:
    id: int
    version: int
    created_at: datetime
    restore_deleted: bool
    columns: dict[str, Column]
    state: str = "Open"  # Open -> Waiting -> Processing -> Complete
    header: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    batches: int = 0
    submitted_at: datetime | None = None
    applied: int = 0
    completed_at: datetime | None = None
    created_count: int = 0
    updated_count: int = 0
    failed: list[tuple[list[str], str]] = field(default_factory=list)

    def expired(self, now: datetime) -> bool:
        if self.state == "Open":
            return now - self.created_at >= OPEN_LIFETIME
        return self.completed_at is not None and now - self.completed_at >= RESULT_LIFETIME


@dataclass
class ImportBook:
    """Every import of the account and the day's batch count."""

    jobs: dict[int, ImportJob] = field(default_factory=dict)
    batches_today: int = 0
    next_id: int = 701


def parse_input(raw: bytes | str) -> Mapping[str, Any]:
    if not raw:
        raise refuse(EMPTY_BODY)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise refuse(INVALID_JSON) from None
    if not isinstance(body, dict):
        raise refuse(INVALID_JSON)
    return body


def create_import(
    fake: FakePardot, version: int, spec: Mapping[str, Any], first_batch: bytes | None
) -> ImportJob:
    if not fake.import_enabled:
        raise refuse(PERMISSION_DENIED)
    for name in ("operation", "object"):
        if name not in spec:
            raise refuse(MISSING_PROPERTY)
    if spec["operation"] != "Upsert" or spec["object"] != "Prospect":
        raise refuse(INVALID_PROPERTY)
    state = spec.get("state")
    if state not in (None, "Ready") or (state == "Ready" and first_batch is None):
        raise refuse(INVALID_PROPERTY)
    restore = spec.get("restoreDeleted", False)
    if not isinstance(restore, bool):
        raise refuse(INVALID_PROPERTY)
    book = fake.imports
    job = ImportJob(book.next_id, version, fake.clock(), restore, _columns(spec.get("columns")))
    if first_batch is not None:
        add_batch(fake, job, first_batch)
    book.next_id += 1
    book.jobs[job.id] = job
    if state == "Ready":
        submit(fake, job)
    return job


def find_import(fake: FakePardot, version: int, import_id: str) -> ImportJob:
    job = fake.imports.jobs.get(int(import_id)) if import_id.isdigit() else None
    if job is None or job.version != version:
        raise refuse(RECORD_NOT_FOUND)
    return job


def add_batch(fake: FakePardot, job: ImportJob, data: bytes) -> None:
    if job.state != "Open" or job.expired(fake.clock()):
        raise refuse(STATE_FORBIDS)
    if job.batches >= MAX_BATCHES_PER_IMPORT:
        raise refuse(TOO_MANY_BATCHES)
    if len(data) >= BATCH_BYTES_LIMIT:
        # Pardot's docs give the limit but not the refusal; this code is the fake's guess.
        raise refuse(UPLOAD_FAILED)
    if fake.imports.batches_today >= DAILY_BATCH_LIMIT:
        raise refuse(DAILY_BATCHES)
    header, rows = _read_csv(data)
    _check_header(fake, job, header)
    if job.header is not None and header != job.header:
        raise refuse(INVALID_CSV)  # every batch: the same columns in the same order
    job.header = header
    job.rows.extend(rows)
    job.batches += 1
    fake.imports.batches_today += 1


def submit(fake: FakePardot, job: ImportJob) -> None:
    if job.state != "Open" or job.expired(fake.clock()):
        raise refuse(NOT_OPEN)
    if not job.rows:
        raise refuse(NO_DATA)
    job.state = "Waiting"
    job.submitted_at = fake.clock()


def advance(fake: FakePardot) -> None:
    """Apply every row whose time has come, by the fake's clock and the import knobs."""
    now = fake.clock()
    for job in fake.imports.jobs.values():
        if job.submitted_at is None or job.state == "Complete":
            continue
        started = job.submitted_at + timedelta(seconds=fake.import_queue_delay)
        if now < started:
            continue
        job.state = "Processing"
        elapsed = (now - started).total_seconds()
        due = min(len(job.rows), int(elapsed * fake.import_rows_per_second))
        while job.applied < due:
            _apply_row(fake, job, job.rows[job.applied])
            job.applied += 1
        if job.applied == len(job.rows):
            job.state = "Complete"
            job.completed_at = now


def describe(fake: FakePardot, job: ImportJob, base: str) -> dict[str, Any]:
    """The import as `read` answers it (and `create`/`update`, which stop after isExpired)."""
    now = fake.clock()
    expired = job.expired(now)
    body: dict[str, Any] = {"id": job.id, "state": job.state, "isExpired": expired}
    prefix = f"{base}/api/import/version/{job.version}/do"
    if job.state == "Open" and not expired:
        body["batchesRef"] = f"{prefix}/batch/id/{job.id}"
    if job.state == "Complete":
        body["createdCount"] = job.created_count
        body["updatedCount"] = job.updated_count
        if not expired and job.failed:
            body["errorsRef"] = f"{prefix}/downloadErrors/id/{job.id}"
            body["errorCount"] = len(job.failed)
    return body


def errors_csv(fake: FakePardot, job: ImportJob) -> str:
    if job.state != "Complete" or job.expired(fake.clock()):
        raise refuse(STATE_FORBIDS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(job.header or []), ERROR_COLUMN])
    for row, reason in job.failed:
        writer.writerow([*row, reason])
    return out.getvalue()


# ---- rows ------------------------------------------------------------------------------


def _apply_row(fake: FakePardot, job: ImportJob, row: Sequence[str]) -> None:
    values = dict(zip(job.header or [], row, strict=True))
    fields = {k: v for k, v in values.items() if k not in V4_IDENTIFIERS}
    try:
        record = _match(fake, job, values)
        if record is None:  # v3 only: no live prospect has the row's email
            fake.create_record(fields)
            job.created_count += 1
            return
        fake.update_record(record, _update_fields(job, fields))
        record.archived = False  # only reached for a binned one under restoreDeleted
        job.updated_count += 1
    except PardotError as err:
        job.failed.append((list(row), err.message))


def _match(fake: FakePardot, job: ImportJob, values: Mapping[str, str]) -> ProspectRecord | None:
    """The prospect a row updates; None: v3 creates it. Raises for a row that is skipped."""
    if job.version == 4:
        record = _match_v4(fake, values)
    else:
        email = fake.check_email(values.get("email", ""))
        live = fake.find_by_email(email)
        if live:
            return live[0]
        binned = [
            r for r in fake.records.values() if r.archived and r.email.lower() == email.lower()
        ]
        if not binned:
            return None
        record = min(binned, key=lambda r: r.id)
    if record.archived and not job.restore_deleted:
        raise PardotError(INVALID_PROSPECT_ID, "Prospect is in the recycle bin")
    return record


def _match_v4(fake: FakePardot, values: Mapping[str, str]) -> ProspectRecord:
    prospect_id = values.get("prospect_id", "").strip()
    fid = values.get("salesforce_fid", "").strip()
    if not prospect_id and not fid:
        raise PardotError(
            INVALID_PROSPECT_ID, "No prospect_id or salesforce_fid: a version 4 row is skipped"
        )
    record = None
    if prospect_id:
        record = fake.records.get(int(prospect_id)) if prospect_id.isdigit() else None
    elif fid:
        record = fake.find_by_fid(fid)
    if record is None:
        raise PardotError(INVALID_PROSPECT_ID, "Prospect not found")
    return record


def _update_fields(job: ImportJob, fields: Mapping[str, str]) -> dict[str, str]:
    """What an update keeps of a row: `overwrite: false` columns never, blank values only
    where `nullOverwrite` allows (a create keeps everything)."""
    kept: dict[str, str] = {}
    for name, value in fields.items():
        column = job.columns.get(name, Column(name))
        if not column.overwrite:
            continue
        if not value.strip() and not column.null_overwrite:
            continue
        kept[name] = value
    return kept


# ---- input checks -----------------------------------------------------------------------


def _columns(raw: Any) -> dict[str, Column]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise refuse(INVALID_COLUMNS)
    columns: dict[str, Column] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str):
            raise refuse(INVALID_COLUMNS)
        overwrite = item.get("overwrite", True)
        null_overwrite = item.get("nullOverwrite", True)
        if not isinstance(overwrite, bool) or not isinstance(null_overwrite, bool):
            raise refuse(INVALID_COLUMNS)
        columns[item["field"]] = Column(item["field"], overwrite, null_overwrite)
    return columns


def _read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    try:
        text = data.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error):
        raise refuse(INVALID_CSV) from None
    rows = [row for row in rows if row]
    if len(rows) < 2 or any(len(row) != len(rows[0]) for row in rows):
        raise refuse(INVALID_CSV)  # one header row, at least one data row, all as wide
    return [name.strip() for name in rows[0]], rows[1:]


def _check_header(fake: FakePardot, job: ImportJob, header: Sequence[str]) -> None:
    identifiers = set(V4_IDENTIFIERS) if job.version == 4 else set()
    known = WRITABLE_FIELDS | fake.custom_fields | identifiers
    if any(name not in known for name in header) or len(set(header)) != len(header):
        raise refuse(INVALID_FIELDS)
    if job.version == 3 and "email" not in header:
        raise PardotError(INVALID_EMAIL, "A version 3 import matches rows by email")
    if job.columns and set(job.columns) != set(header):
        raise refuse(INVALID_COLUMNS)  # "the columns must include the same number of fields"
