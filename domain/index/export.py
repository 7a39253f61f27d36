"""Filling the index from Pardot's Export API instead of paged queries, when that costs less.

In: the BulkPardot port, the IndexFeed (budget, call count, index), the zones and the pace of
the account's exports. Out: `Exporter`, which runs one export (created, its state read
backing off from 5 s to at most 60 s until Complete, its files downloaded) for the fill and
the refreshes alike; `ExportFill`, which tells whether exports pay for an account (`pays`)
and fills the index by them (`run`): one export per year of `updated_at` back to the oldest
change, one after another (Pardot runs an account's exports one at a time).

What exports cannot do, and how the fill keeps the index right anyway (PARDOT_API.md, "Bulk:
Import and Export"):
- A range covers at most a year, and the zone Pardot reads the range's arguments in is not
  documented: ranges span 364 days and overlap their neighbours (and the oldest and newest
  change) by two days, more than any two zones differ.
- Dates in the files are in the zone of the user the export ran as: read in `export_zone`
  and stored in the account's, like every time the index keeps. The watermark never comes
  from them: the mark is the latest `updated_at` a query returned before the first export,
  and the refresh that completes the fill pulls every change and deletion since it.
- `notes` cannot be exported, and custom fields are not documented as exportable. Exports
  ask for them until Pardot refuses them once (`domain.index.export_fields`). Rows from an
  export that lacks a field mark it `unknown`, so change detection writes it instead of taking
  it as empty; the next refresh that reads a row back makes it whole. The lookup field cannot
  be unknown (it decides who a prospect is), and no query can fetch it for fewer calls than
  the scan (no filter by field: 200 rows a call whatever the columns), so with a lookup field
  configured and exports that do not carry custom fields the index is filled by the scan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from domain.budget import Priority
from domain.bulk_cost import (
    FIRST_STATUS_WAIT,
    LONGEST_STATUS_WAIT,
    ExportPace,
    export_calls,
    export_pays,
)
from domain.errors import PermanentPardotError
from domain.index.export_fields import (
    CustomFieldExports,
    CustomFieldsLeftOut,
    asks_custom,
    check_carried,
    export_columns,
)
from domain.index.feed import KEY_FIELDS, IndexFeed
from domain.index.scan import Progress
from domain.ports import BulkPardot, IndexState, ProspectQuery
from domain.ports.bulk import PARDOT_TIME, ExportRequest, ExportStatus, export_time
from domain.prospect import FieldValue, Prospect

log = logging.getLogger(__name__)

RANGE_SPAN = timedelta(days=364)  # "cannot exceed 1 year", whatever a year is to Pardot
# Zones differ by at most 26 hours: this much overlap covers the arguments' unknown zone.
RANGE_OVERLAP = timedelta(days=2)
# Read by `responses.to_prospect` as keys or times rather than field values: the same here.
_NOT_FIELDS = frozenset({"id", "email", "created_at", "updated_at", "salesforce_fid",
                         "crm_lead_fid", "crm_contact_fid"})  # fmt: skip
# What we assume of Pardot's exports until measured (DESTINATION_EXPORT_ROWS_PER_SECOND,
# DESTINATION_EXPORT_QUEUE_SECONDS): slower than the fake, so exports are chosen only where
# they pay by a margin.
DEFAULT_PACE = ExportPace(rows_per_second=1_000.0, queue_delay=60.0)

Sleep = Callable[[float], Awaitable[None]]
Put = Callable[[list[Prospect]], Awaitable[None]]


class ExportFailed(Exception):
    """An export ended Failed or expired, or Pardot refused it: the scan fills instead."""


@dataclass(frozen=True)
class ExportOptions:
    """The account's zone (of every time the index keeps), the zone of the API user the
    exports run as (of the dates in their files), their pace, the first status wait, and
    `min_prospects`, which, set, replaces the costing: exports fill any account that large;
    `min_changes` the same for a refresh (`domain.index.export_refresh`): an export reads
    back the changes when that many are due."""

    account_zone: tzinfo
    export_zone: tzinfo
    pace: ExportPace = DEFAULT_PACE
    first_wait: float = FIRST_STATUS_WAIT
    min_prospects: int | None = None
    min_changes: int | None = None


def status_waits(first: float = FIRST_STATUS_WAIT) -> Iterator[float]:
    """Seconds before each status read: `first`, doubling, at most 60."""
    wait = first
    while True:
        yield wait
        wait = min(wait * 2, max(first, LONGEST_STATUS_WAIT))


def export_ranges(oldest: datetime, newest: datetime) -> list[tuple[datetime, datetime]]:
    """(updated_after, updated_before) of each export, oldest first: together they cover
    every change from `oldest` to `newest` with RANGE_OVERLAP to spare at every end."""
    floor = oldest - RANGE_OVERLAP
    before = max(newest, oldest) + RANGE_OVERLAP
    ranges = []
    while True:
        after = before - RANGE_SPAN
        ranges.append((max(after, floor), before))
        if after <= floor:
            return ranges[::-1]
        before = after + RANGE_OVERLAP


def prospect_from_export(
    row: Mapping[str, str],
    *,
    unknown: frozenset[str],
    export_zone: tzinfo,
    account_zone: tzinfo,
) -> Prospect:
    """One row of an export file as the index keeps a prospect: as a query would return it
    (empty cells are nulls, dropped), times moved from the export user's zone to the
    account's, and the fields the export could not carry marked `unknown`."""
    fid = row.get("salesforce_fid") or row.get("crm_contact_fid") or row.get("crm_lead_fid")
    fields: dict[str, FieldValue] = {
        name: value for name, value in row.items() if name not in _NOT_FIELDS and value != ""
    }
    return Prospect(
        id=int(row["id"]),
        email=row.get("email") or None,
        fid=fid or None,
        updated=(_account_time(row.get("updated_at", ""), export_zone, account_zone), 0),
        fields=fields,
        created_at=_account_time(row.get("created_at", ""), export_zone, account_zone),
        unknown=unknown,
    )


@functools.lru_cache(maxsize=65_536)
def _account_time(text: str, export_zone: tzinfo, account_zone: tzinfo) -> str:
    # Cached: an export file's rows share their seconds (a sync writes thousands a second),
    # and parsing each date twice a row was most of a 100,000-row file's CPU.
    moment = export_time(text, export_zone)
    return "" if moment is None else moment.astimezone(account_zone).strftime(PARDOT_TIME)


def aware(pardot_time: str, zone: tzinfo) -> datetime:
    return datetime.strptime(pardot_time, PARDOT_TIME).replace(tzinfo=zone)


@dataclass(frozen=True)
class Exporter:
    """What every export of the index goes through: the bulk port, the feed that budgets and
    counts its calls, the options, the sleep between status reads, and what this process
    learnt of custom fields in exports (shared by the fill and the refreshes)."""

    bulk: BulkPardot
    feed: IndexFeed
    options: ExportOptions
    sleep: Sleep = asyncio.sleep
    custom: CustomFieldExports = field(default_factory=CustomFieldExports)

    async def run(
        self, span: tuple[datetime, datetime | None], priority: Priority, put: Put
    ) -> None:
        """One export of the changes in `span` (after, before), each file's prospects to
        `put`.

        Custom fields are asked for while `custom` says they may be carried. When Pardot
        refuses them (or leaves them out of a file) that is noted, and the export is asked
        again without them; with a lookup field there is no use in that: ExportFailed, the
        scan fills. Raises ExportFailed, or BudgetShort."""
        feed, custom = self.feed, self.custom
        while True:
            asking = custom.asking()
            asked, unknown = export_columns(feed, custom=asking)
            request = ExportRequest(asked, span[0], self.options.export_zone, span[1])
            try:
                status = await self._follow(request, priority)
                for ref in status.files:
                    await put(await self._download(ref, priority, asked, unknown))
            except CustomFieldsLeftOut as left_out:
                custom.note(False)
                if feed.lookup_column[0] is not None:
                    raise ExportFailed(str(left_out)) from left_out
                log.info("prospect exports: %s; asked again without them", left_out)
                continue
            if asking and asks_custom(asked):
                custom.note(True)
            return

    async def _follow(self, request: ExportRequest, priority: Priority) -> ExportStatus:
        """One export created and read, backing off, until Complete; every call budgeted at
        `priority`. Raises ExportFailed, CustomFieldsLeftOut, or BudgetShort."""
        feed = self.feed
        await feed.spend(priority)
        try:
            status = await feed.call(self.bulk.create_export(request))
        except PermanentPardotError as refused:
            if asks_custom(request.fields):
                message = f"Pardot refused custom fields in exports ({refused})"
                raise CustomFieldsLeftOut(message) from refused
            raise ExportFailed(f"Pardot refused the export: {refused}") from refused
        waits = status_waits(self.options.first_wait)
        while status.state in ("Waiting", "Processing"):
            await self.sleep(next(waits))
            await feed.spend(priority)
            status = await feed.call(self.bulk.read_export(status.id))
        _check(status)
        return status

    async def _download(
        self, ref: str, priority: Priority, asked: tuple[str, ...], unknown: frozenset[str]
    ) -> list[Prospect]:
        """One result file as the index keeps its prospects (not put yet). Raises
        CustomFieldsLeftOut when its rows lack custom columns `asked` for."""
        await self.feed.spend(priority)
        try:
            rows = await self.feed.call(self.bulk.download_export(ref))
        except PermanentPardotError as refused:  # expired meanwhile, say
            raise ExportFailed(f"Pardot refused an export file: {refused}") from refused
        check_carried(asked, rows)
        zones = {"export_zone": self.options.export_zone, "account_zone": self.options.account_zone}
        return [prospect_from_export(row, unknown=unknown, **zones) for row in rows]


class ExportFill:
    """One fill of the index by exports."""

    def __init__(self, exporter: Exporter, *, progress: Progress | None = None) -> None:
        self._exporter = exporter
        self._feed = exporter.feed
        self._options = exporter.options
        self._progress = progress
        self.pulled = 0

    def possible(self) -> bool:
        """Whether exports may fill this index: not with a lookup field, unless exports may
        carry custom fields (see the module's note)."""
        return self._feed.lookup_column[0] is None or self._exporter.custom.asking()

    def calls(self, size: int, oldest: str, now: datetime) -> int | None:
        """The calls exports would take for an account of `size` prospects changed since
        `oldest` (account zone), the newest change taken to be `now`; None when exports
        cannot fill this index."""
        if not self.possible():
            return None
        years = len(export_ranges(aware(oldest, self._options.account_zone), now))
        return export_calls(size, years, self._options.pace)

    def pays(self, size: int, oldest: str | None, now: datetime) -> bool:
        """Whether exports fill this index for fewer calls than the scan."""
        if size == 0 or oldest is None or not self.possible():
            return False
        if self._options.min_prospects is not None:
            return size >= self._options.min_prospects
        years = len(export_ranges(aware(oldest, self._options.account_zone), now))
        return export_pays(size, years, self._options.pace)

    async def run(self, oldest: str) -> int:
        """Every prospect changed since `oldest` (an `updated_at` Pardot returned; any older
        one read earlier is as good, since changes only move a prospect's time forward) into
        the index by exports; returns how many were put. The index is left with its mark
        (the latest change before the first export) for the refresh that completes the
        fill. Raises ExportFailed, or BudgetShort."""
        feed, zone = self._feed, self._options.account_zone
        await feed.spend("scan")
        latest = await feed.query(
            ProspectQuery(sort_by="updated_at", sort_order="descending", limit=1, fields=KEY_FIELDS)
        )
        # Whatever an interrupted fill put is pulled again from scratch.
        await feed.index.clear()
        field, kind = feed.lookup_column
        mark = latest.prospects[0].updated_at if latest.prospects else None
        total = latest.total if latest.total is not None else len(latest.prospects)
        await feed.index.save_state(
            IndexState(high_water=mark, total=total, lookup_field=field, lookup_type=kind)
        )
        if mark is None:
            return 0  # an empty account
        seen: set[int] = set()

        async def put(prospects: list[Prospect]) -> None:
            await feed.put(prospects)
            seen.update(p.id for p in prospects)
            self.pulled = len(seen)
            if self._progress is not None:
                self._progress(self.pulled, max(total, self.pulled))

        for after, before in export_ranges(aware(oldest, zone), aware(mark, zone)):
            await self._exporter.run((after, before), "scan", put)
        return self.pulled


def _check(status: ExportStatus) -> None:
    if status.state == "Failed":
        raise ExportFailed(f"export {status.id} failed")
    if status.expired:
        raise ExportFailed(f"export {status.id} expired before its files were downloaded")
