"""Pardot's Export API (v3/v4) for prospects in the fake: one export at a time, CSV results.

Source: Pardot's own `docs/kb/api-version-{3,4}/export.md` (see PARDOT_API.md, "Bulk: Import
and Export"). The prospect procedure is `filter_by_updated_at` (`updated_after`, optional
`updated_before`, at most one year apart, `deleted` = `all`); `grade` and `notes` cannot be
exported. Exports of an account run one after another, oldest first; each waits
`export_queue_delay` seconds, then takes `rows / export_rows_per_second` on the fake's clock.

Dates, in the arguments and in the files, are in the time zone of the user who created the
export (`export_user_time_zone`), not the account's (`account_time_zone`, the zone of the
fake's clock). Pardot's docs say so of the files; of the arguments they say nothing, and the
fake reads them in the same zone as the files it writes.

Custom fields: Pardot's export page lists the standard fields and says nothing of custom
ones. The fake refuses them (error 130, as for any field it cannot export) unless
`export_custom_fields` is set, which shows what a client gains where Pardot exports them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from contracts.fake_pardot_import import (
    INVALID_FIELDS,
    MISSING_PROPERTY,
    RECORD_NOT_FOUND,
    STATE_FORBIDS,
    refuse,
)
from contracts.fake_pardot_state import STANDARD_FIELDS, PardotError, ProspectRecord

if TYPE_CHECKING:
    from contracts.fake_pardot_state import FakePardot

UNKNOWN_PROCEDURE = 174
UNKNOWN_ARGUMENT = 175
MISSING_ARGUMENT = 176
INVALID_ARGUMENT = 177
EXPORT_MESSAGES = {
    UNKNOWN_PROCEDURE: "Unknown procedure name.",
    UNKNOWN_ARGUMENT: "Unknown procedure argument.",
    MISSING_ARGUMENT: "Missing required argument.",
    INVALID_ARGUMENT: "Invalid procedure argument.",
}

PROCEDURE = "filter_by_updated_at"
ARGUMENTS = frozenset({"updated_after", "updated_before", "deleted"})
MAX_RANGE = timedelta(days=366)  # "cannot exceed 1 year" (a leap year's worth, to be kind)
RESULT_LIFETIME = timedelta(days=7)
NOT_EXPORTABLE = frozenset({"grade", "notes"})
EXPORTABLE = frozenset(STANDARD_FIELDS) - NOT_EXPORTABLE
# Pardot's export page (developer.salesforce.com, "Export API Overview", Limitations): "The
# number of fields specified in the Export API calls can't exceed 150."
MAX_FIELDS = 150
_TIME = "%Y-%m-%d %H:%M:%S"


def _refuse(code: int) -> PardotError:
    return PardotError(code, EXPORT_MESSAGES[code])


@dataclass
class ExportJob:
    id: int
    version: int
    fields: list[str]
    updated_after: datetime  # in the account's zone, like the records' stamps
    updated_before: datetime | None
    include_deleted: bool
    created_at: datetime
    user_zone: str
    state: str = "Waiting"  # Waiting -> Processing -> Complete (or Failed)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    files: list[str] = field(default_factory=list)
    rows: int = 0

    def expired(self, now: datetime) -> bool:
        return self.finished_at is not None and now - self.finished_at >= RESULT_LIFETIME


@dataclass
class ExportBook:
    jobs: dict[int, ExportJob] = field(default_factory=dict)
    next_id: int = 201901


def create_export(fake: FakePardot, version: int, spec: Mapping[str, Any]) -> ExportJob:
    for name in ("object", "procedure"):
        if name not in spec:
            raise refuse(MISSING_PROPERTY)
    procedure = spec["procedure"]
    if spec["object"] != "prospect" or not isinstance(procedure, dict):
        raise refuse(154)
    if procedure.get("name") != PROCEDURE:
        raise _refuse(UNKNOWN_PROCEDURE)
    arguments = procedure.get("arguments") or {}
    if not isinstance(arguments, dict) or any(k not in ARGUMENTS for k in arguments):
        raise _refuse(UNKNOWN_ARGUMENT)
    if "updated_after" not in arguments:
        raise _refuse(MISSING_ARGUMENT)
    if arguments.get("deleted", "all") != "all":
        raise _refuse(INVALID_ARGUMENT)
    user_zone = fake.export_user_time_zone
    after = _argument_time(fake, arguments["updated_after"], user_zone)
    before_raw = arguments.get("updated_before")
    before = None if before_raw is None else _argument_time(fake, before_raw, user_zone)
    upper = before if before is not None else fake.clock()  # "the current date is used"
    if upper <= after or upper - after > MAX_RANGE:
        raise _refuse(INVALID_ARGUMENT)
    fields = _fields(fake, spec.get("fields"))
    book = fake.exports
    job = ExportJob(
        book.next_id, version, fields, after, before, "deleted" in arguments,
        fake.clock(), user_zone,
    )  # fmt: skip
    book.next_id += 1
    book.jobs[job.id] = job
    return job


def find_export(fake: FakePardot, version: int, export_id: str) -> ExportJob:
    job = fake.exports.jobs.get(int(export_id)) if export_id.isdigit() else None
    if job is None or job.version != version:
        raise refuse(RECORD_NOT_FOUND)
    return job


def advance(fake: FakePardot) -> None:
    """Run the account's exports one at a time, oldest first, as far as the clock allows."""
    now = fake.clock()
    free_at: datetime | None = None  # when the export before this one finished
    for job in sorted(fake.exports.jobs.values(), key=lambda j: j.id):
        if job.state in ("Complete", "Failed"):
            free_at = job.finished_at
            continue
        if job.state == "Waiting":
            start = job.created_at + timedelta(seconds=fake.export_queue_delay)
            if free_at is not None:
                start = max(start, free_at)
            if now < start:
                return
            if fake.export_failures > 0:
                fake.export_failures -= 1
                job.state, job.started_at, job.finished_at = "Failed", start, start
                free_at = start
                continue
            job.state, job.started_at = "Processing", start
            job.files, job.rows = _write_files(fake, job)
        assert job.started_at is not None
        finish = job.started_at + timedelta(seconds=job.rows / fake.export_rows_per_second)
        if now < finish:
            return
        job.state, job.finished_at = "Complete", finish
        free_at = finish


def describe(fake: FakePardot, job: ExportJob, base: str) -> dict[str, Any]:
    now = fake.clock()
    expired = job.expired(now)
    body: dict[str, Any] = {"id": job.id, "state": job.state, "isExpired": expired}
    if job.state == "Complete" and not expired and job.files:
        prefix = f"{base}/api/export/version/{job.version}/do/downloadResults/id/{job.id}"
        refs = [f"{prefix}/file/{n}" for n in range(1, len(job.files) + 1)]
        body["resultRefs"] = refs[0] if len(refs) == 1 else refs
    zone = ZoneInfo(job.user_zone)
    body["createdAt"] = _in_zone(fake, job.created_at, zone)
    body["updatedAt"] = _in_zone(fake, job.finished_at or job.started_at or job.created_at, zone)
    return {"export": body}


def result_file(fake: FakePardot, job: ExportJob, number: str) -> str:
    if job.state != "Complete" or job.expired(fake.clock()):
        raise refuse(STATE_FORBIDS)
    index = int(number) - 1 if number.isdigit() else -1
    if not 0 <= index < len(job.files):
        raise refuse(RECORD_NOT_FOUND)
    return job.files[index]


# ---- internals ----------------------------------------------------------------------------


def _fields(fake: FakePardot, raw: Any) -> list[str]:
    if raw is None:
        return sorted(EXPORTABLE, key=STANDARD_FIELDS.index)
    if not isinstance(raw, list) or not raw or not all(isinstance(f, str) for f in raw):
        raise refuse(INVALID_FIELDS)
    custom = fake.custom_fields if fake.export_custom_fields else set()
    if len(raw) > MAX_FIELDS or any(f not in EXPORTABLE and f not in custom for f in raw):
        raise refuse(INVALID_FIELDS)
    return list(raw)


def _write_files(fake: FakePardot, job: ExportJob) -> tuple[list[str], int]:
    """The rows as they stand when processing starts, in files of `export_rows_per_file`."""
    picked = [
        record
        for record in fake.records.values()
        if (job.include_deleted or not record.archived)
        and record.updated_at > job.updated_after
        and (job.updated_before is None or record.updated_at < job.updated_before)
    ]
    zone = ZoneInfo(job.user_zone)
    rows = [_row(fake, record, job.fields, zone) for record in picked]
    size = max(1, fake.export_rows_per_file)
    files = []
    for start in range(0, len(rows), size):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(job.fields)
        writer.writerows(rows[start : start + size])
        files.append(out.getvalue())
    return files, len(rows)


def _row(fake: FakePardot, record: ProspectRecord, fields: list[str], zone: ZoneInfo) -> list[str]:
    view = fake.render(record, "simple", related=False)
    row = []
    for name in fields:
        value = view.get(name)
        if name in ("created_at", "updated_at") and value:
            value = _in_zone(fake, getattr(record, name), zone)
        row.append("" if value is None else str(value))
    return row


def _argument_time(fake: FakePardot, raw: Any, zone: str) -> datetime:
    """An argument in the export user's zone, as the account's naive time."""
    if not isinstance(raw, str):
        raise _refuse(INVALID_ARGUMENT)
    try:
        local = datetime.strptime(raw.strip(), _TIME)
    except ValueError:
        raise _refuse(INVALID_ARGUMENT) from None
    account = ZoneInfo(fake.account_time_zone)
    return local.replace(tzinfo=ZoneInfo(zone)).astimezone(account).replace(tzinfo=None)


def _in_zone(fake: FakePardot, account_time: datetime, zone: ZoneInfo) -> str:
    aware = account_time.replace(tzinfo=ZoneInfo(fake.account_time_zone))
    return aware.astimezone(zone).strftime(_TIME)
