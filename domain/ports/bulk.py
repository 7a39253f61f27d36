"""The port towards Pardot's bulk lane: the Import and Export APIs (asynchronous, CSV).

Implemented by `adapters.pardot` (over HTTP and in memory). Shapes and limits from Pardot's
Import and Export pages (PARDOT_API.md, "Bulk: Import and Export"): an import is created with
its columns, takes up to 10 CSV batches of under 10 MB, is submitted, then read until
Complete, and its failed rows are downloaded with their reasons; an export of prospects by
`updated_at` range (at most one year) runs after the account's older exports and leaves CSV
files whose dates are in the zone of the user who created it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal, Protocol

BULK_BATCH_BYTES = 10 * 1024 * 1024  # "Each batch must be smaller than 10MB."
BULK_BATCHES_PER_IMPORT = 10
BULK_BATCHES_PER_DAY = 1000  # per account, budgeted like calls
EXPORT_MAX_RANGE_DAYS = 365  # "The range ... cannot exceed 1 year."
PARDOT_TIME = "%Y-%m-%d %H:%M:%S"

ImportState = Literal["Open", "Waiting", "Processing", "Complete"]
ExportState = Literal["Waiting", "Processing", "Complete", "Failed"]


@dataclass(frozen=True)
class ImportColumn:
    """One CSV column of an import. `overwrite=False` only fills new prospects;
    `null_overwrite=False` keeps the stored value where the row's cell is blank."""

    field: str
    overwrite: bool = True
    null_overwrite: bool = True


@dataclass(frozen=True)
class ImportStatus:
    id: int
    state: ImportState
    expired: bool = False
    created: int = 0  # the counts hold once Complete
    updated: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ImportRowError:
    """A row the import did not apply, as sent, with Pardot's reason."""

    row: Mapping[str, str]
    reason: str


@dataclass(frozen=True)
class ExportRequest:
    """Prospects whose `updated_at` lies after `updated_after` (and before `updated_before`).

    Times are aware; the adapter writes them in `zone`, the time zone of the Pardot user the
    API calls run as, which is also the zone of the dates in the files.
    """

    fields: tuple[str, ...]
    updated_after: datetime
    zone: tzinfo
    updated_before: datetime | None = None
    include_deleted: bool = False


@dataclass(frozen=True)
class ExportStatus:
    id: int
    state: ExportState
    expired: bool = False
    files: tuple[str, ...] = ()  # where to download the results once Complete


class BulkPardot(Protocol):
    """Pardot's Import and Export APIs; every call counts like any other call."""

    async def create_import(
        self, columns: Sequence[ImportColumn], *, restore_deleted: bool = False
    ) -> ImportStatus:
        """Raises ImportUnavailable when the account refuses imports."""
        ...

    async def add_import_batch(self, import_id: int, csv_data: bytes) -> None:
        """Raises BulkLimitExceeded past 10 MB, 10 batches, or the day's 1,000 batches."""
        ...

    async def submit_import(self, import_id: int) -> ImportStatus: ...

    async def read_import(self, import_id: int) -> ImportStatus: ...

    async def import_errors(self, import_id: int) -> list[ImportRowError]: ...

    async def create_export(self, request: ExportRequest) -> ExportStatus:
        """Raises PermanentPardotError (177) for a range longer than a year."""
        ...

    async def read_export(self, export_id: int) -> ExportStatus: ...

    async def download_export(self, ref: str) -> list[dict[str, str]]:
        """One result file's rows by column name; a null is an empty string."""
        ...


def export_time(text: str, zone: tzinfo) -> datetime | None:
    """A date from an export file (`YYYY-MM-DD HH:MM:SS` in `zone`) as an aware time."""
    if not text.strip():
        return None
    return datetime.strptime(text.strip(), PARDOT_TIME).replace(tzinfo=zone)


def pardot_time_in(moment: datetime, zone: tzinfo) -> str:
    """An aware time as Pardot writes it for a user in `zone`."""
    return moment.astimezone(zone).strftime(PARDOT_TIME)
