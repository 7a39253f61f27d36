"""A refresh that reads back many changes by one export instead of a page per 200 of them.

In: the BulkPardot port, the IndexFeed, the export options, the bound a refresh pulls from
and how many changes its first page says are due. Out: `ChangesByExport.catch_up`, which,
where one export costs fewer calls than the pages (`domain.bulk_cost`), puts every change
since the bound into the index and returns the mark the refresh goes on paging from; None
when the pages are to do it (not worth it, no export possible, or the export failed).

A first sync writes tens of thousands of prospects, and the refresh after it read them all
back, 200 a call: 400 calls for 80,000 updates, most of a sync's budget once imports write
the rest in a dozen. Pardot has no filter for "changed by someone else", so they must be
read: an export reads them in a handful of calls. Correct the way the export fill is
(`domain.index.export`): the mark comes from a query made before the export (the latest
`updated_at` of the changes, with their count), never from the export's dates; the refresh
then pages every change since that mark, and the recycle bin since the refresh's own bound,
as any refresh does. What changed while the export ran is in those pages.

What is put, and what not:
- The export's range begins RANGE_OVERLAP before the bound (the zone Pardot reads its
  arguments in is not documented). A row changed before the bound is put only when newer
  than the index's: the index read it whole.
- A row changed since the bound is put as the paged refresh would put it (a change in the
  same second as the index's copy shows no later `updated_at`), except where this process
  wrote the prospect since the export was asked for: the export's copy may be from before
  that write, and the pages after the mark read it back (the write moved its `updated_at`
  past the mark). Left in, it would hold an older value than Pardot's until then, and a
  later event carrying that value would be judged already held.
- `notes` cannot be exported, custom fields only where Pardot carries them
  (`domain.index.export_fields`): rows put from it mark what it lacks unknown (change
  detection writes them rather than judge them held) until a refresh reads the row whole.
  With a lookup field configured and exports without custom fields no export reads changes
  back: a row's lookup value decides who it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from domain.budget import Priority
from domain.bulk_cost import (
    EXPORT_REFRESH_EXTRA_CALLS,
    changes_export_pays,
    export_calls,
    scan_calls,
)
from domain.index.export import RANGE_OVERLAP, RANGE_SPAN, Exporter, ExportFailed, aware
from domain.index.export_fields import failure_level
from domain.ports import ProspectQuery
from domain.ports.bulk import PARDOT_TIME
from domain.prospect import Prospect

log = logging.getLogger(__name__)


class ChangesByExport:
    """Reads a refresh's changes back by export where that pays; one per keeper."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter
        self._feed = exporter.feed
        self._options = exporter.options
        self._failed = False  # an export failed or was refused: pages from then on
        self._written: set[int] | None = None  # while an export runs: what this process wrote
        self.exports = 0  # refreshes read back by export (for tests and the log)

    def note_written(self, ids: Iterable[int]) -> None:
        """Prospects this process just wrote (and put in the index)."""
        if self._written is not None:
            self._written.update(ids)

    def _may_pay(self, changes: int) -> bool:
        if self._failed:
            return False
        if self._feed.lookup_column[0] is not None and not self._exporter.custom.asking():
            return False
        if self._options.min_changes is not None:
            return changes >= self._options.min_changes
        # The query that sizes the export comes first, and it carries these rows at least:
        # unless that could pay, it is not asked.
        extra = EXPORT_REFRESH_EXTRA_CALLS + 1
        return export_calls(changes, 1, self._options.pace) + extra < scan_calls(changes)

    def _pays(self, changes: int, exported: int) -> bool:
        if self._options.min_changes is not None:
            return True
        return changes_export_pays(changes, exported, self._options.pace)

    async def catch_up(
        self, bound: str, changes: int, priority: Priority, now: datetime
    ) -> str | None:
        """Every prospect changed since `bound` (account zone) into the index by one export,
        when `changes` more of them are due than a page holds and the export pays; returns
        the latest `updated_at` a query saw before the export (the refresh pages on from
        there), or None: the refresh pages through them. Raises BudgetShort."""
        if not self._may_pay(changes):
            return None
        zone = self._options.account_zone
        after = aware(bound, zone) - RANGE_OVERLAP
        if now - after >= RANGE_SPAN:
            return None  # beyond what one export may cover: the pages do it
        feed = self._feed
        self._written = set()
        try:
            await feed.spend(priority)
            latest = await feed.query(
                ProspectQuery(
                    updated_after=after.astimezone(zone).strftime(PARDOT_TIME),
                    sort_by="updated_at",
                    sort_order="descending",
                    limit=1,
                    fields=("updated_at",),
                )
            )
            if not latest.prospects:
                return None
            exported = latest.total if latest.total is not None else changes
            if not self._pays(changes, exported):
                return None
            mark = latest.prospects[0].updated_at
            await self._export(after, bound, priority)
            self.exports += 1
            return mark
        except ExportFailed as failed:
            self._failed = True
            log.log(
                failure_level(failed), "prospect index: %s; refreshing by pages instead", failed
            )
            return None
        finally:
            self._written = None

    async def _export(self, after: datetime, bound: str, priority: Priority) -> None:
        async def put(rows: list[Prospect]) -> None:
            held = await self._feed.index.by_ids([p.id for p in rows])
            written = self._written or set()
            await self._feed.put(
                [p for p in rows if p.id not in written and _newer(p, held.get(p.id), bound)]
            )

        await self._exporter.run((after, None), priority, put)


def _newer(row: Prospect, held: Prospect | None, bound: str) -> bool:
    """Whether the export's row replaces the index's copy (see the module's note)."""
    if held is None or held.updated_at < row.updated_at:
        return True
    return row.updated_at >= bound and held.updated_at == row.updated_at
