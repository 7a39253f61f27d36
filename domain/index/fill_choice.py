"""Whether filling the index pays, and whether exports or the paged scan fill it.

In: the IndexFeed, and where exports may fill (DESTINATION_BULK=auto) the Exporter (the bulk
port, the export options, what this process learnt of custom fields in exports). Out: `FillChoice`,
which tells whether a fill costs less than reading `waiting` events one by one (`worth_it`)
and fills by exports where they cost fewer calls than the scan (`by_exports`).
"""

from __future__ import annotations

import logging

from domain.index.export import Exporter, ExportFailed, ExportFill
from domain.index.export_fields import failure_level
from domain.index.feed import BudgetShort, IndexFeed
from domain.index.scan import Progress
from domain.ports import QUERY_LIMIT, ProspectQuery

log = logging.getLogger(__name__)

# Rows read one by one cost a call each; a scan costs one call per QUERY_LIMIT prospects.
SCAN_ROWS_PER_CALL = QUERY_LIMIT
# Besides its pages a scan asks for the custom fields, sizes the account, finds its lowest and
# highest id and latest change, and ends with a refresh.
SCAN_OVERHEAD_CALLS = 5


class FillChoice:
    """One per keeper: the account's size and oldest change, asked once per process."""

    def __init__(self, feed: IndexFeed, exporter: Exporter | None = None) -> None:
        self._feed = feed
        self._exporter = exporter
        self.size: int | None = None  # the account's prospects, once a query said
        self._oldest: str | None = None  # the oldest updated_at the sizing query saw
        self._export_failed = False  # a failed export: the scan fills from then on
        self._read_one_by_one = 0

    def note_read_one_by_one(self, events: int) -> None:
        """Events resolved by reading Pardot one by one: they count towards a fill."""
        self._read_one_by_one += events

    async def worth_it(self, waiting: int) -> bool:
        """Whether filling is cheaper than reading one by one for `waiting` unresolved events
        (the index not complete).

        A scan costs one call per 200 prospects plus SCAN_OVERHEAD_CALLS, exports (when they
        may fill the index) what `domain.bulk_cost` says, whichever is less; `total_results`
        of a one-row query gives the account's size for one call (asked once per process, and
        only once a fill could pay at all), and sorted by `updated_at` its oldest change,
        which sets how many exports of a year it takes. Events already read one by one count
        too.
        """
        wanting = waiting + self._read_one_by_one
        if wanting <= SCAN_OVERHEAD_CALLS:
            return False  # not worth even the call that sizes the account
        if self.size is None:
            try:
                await self._feed.spend("scan")
            except BudgetShort:
                return False
            await self._sizing_query()
        assert self.size is not None
        fill = -(-self.size // SCAN_ROWS_PER_CALL)
        export = self._export_fill()
        if export is not None and self._oldest is not None:
            calls = export.calls(self.size, self._oldest, await self._feed.index.clock())
            fill = fill if calls is None else min(fill, calls)
        return wanting > fill + SCAN_OVERHEAD_CALLS

    async def by_exports(self, progress: Progress | None) -> int | None:
        """Fill the index by exports when they pay: the prospects put, or None when the scan
        is to fill it. Raises BudgetShort (the next rebuild decides again)."""
        fill = self._export_fill(progress)
        if fill is None:
            return None
        if self.size is None or self._oldest is None:
            await self._feed.spend("scan")
            await self._sizing_query()
        assert self.size is not None
        if self._oldest is None or not fill.pays(
            self.size, self._oldest, await self._feed.index.clock()
        ):
            return None
        try:
            pulled = await fill.run(self._oldest)
        except ExportFailed as failed:
            self._export_failed = True
            log.log(
                failure_level(failed), "prospect index: %s; filling it by a paged scan instead",
                failed,
            )  # fmt: skip
            await self._feed.index.clear()
            return None
        log.info("prospect index: %d prospects pulled by exports", pulled)
        return pulled

    async def _sizing_query(self) -> None:
        """The account's size (and, where exports may fill the index, its oldest change):
        one call; the caller spent it."""
        if self._export_fill() is None:
            page = await self._feed.query(ProspectQuery(limit=1, fields=("id",)))
        else:
            page = await self._feed.query(
                ProspectQuery(sort_by="updated_at", limit=1, fields=("updated_at",))
            )
            self._oldest = page.prospects[0].updated_at if page.prospects else None
        self.size = page.total if page.total is not None else len(page.prospects)

    def _export_fill(self, progress: Progress | None = None) -> ExportFill | None:
        if self._exporter is None or self._export_failed:
            return None
        return ExportFill(self._exporter, progress=progress)
