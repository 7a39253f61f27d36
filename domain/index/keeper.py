"""The index keeper: what the sync service asks of the prospect index, and when to pull.

In: a PardotRepository, the ProspectIndex, the lookup field, the daily budget and how often
to refresh. Out: `IndexKeeper`, which tells whether decisions may use the index (`ready`,
`before_batch`), scans the account when that is cheaper than reading one by one (`rebuild`,
`scan_worth_it`), refreshes it (`refresh`) and learns what batches created (`learn_created`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from domain.budget import DailyBudget, Priority
from domain.index import refresh as refreshing
from domain.index.feed import BudgetShort, IndexFeed
from domain.index.scan import Progress, RangeScan, ScanReport
from domain.ports import QUERY_LIMIT, PardotRepository, ProspectIndex, ProspectQuery
from domain.prospect import Prospect

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 60.0
DEFAULT_PARALLEL = 5  # Pardot's in-flight limit per business unit
# Rows read one by one cost a call each; a scan costs one call per QUERY_LIMIT prospects.
SCAN_ROWS_PER_CALL = QUERY_LIMIT
# Besides its pages a scan asks for the custom fields, sizes the account, finds its lowest and
# highest id and latest change, and ends with a refresh.
SCAN_OVERHEAD_CALLS = 5


class IndexKeeper:
    """Fills and refreshes a ProspectIndex from Pardot's prospect query."""

    def __init__(
        self,
        repository: PardotRepository,
        index: ProspectIndex,
        *,
        lookup_field: str | None = None,
        budget: DailyBudget | None = None,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        parallel: int = DEFAULT_PARALLEL,
        scan_lock: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = IndexFeed(repository, index, lookup_field=lookup_field, budget=budget)
        self._refresh_seconds = refresh_seconds
        self._parallel = max(1, parallel)
        self._scan_lock = scan_lock or contextlib.nullcontext
        self._monotonic = monotonic
        self._refreshing = asyncio.Lock()
        self._refreshed_at: float | None = None
        self._generation = 0  # refreshes finished; callers that asked earlier share one
        self._size: int | None = None
        self._read_one_by_one = 0
        self.refreshes = 0  # refreshes this keeper completed (the metric counts them)

    @property
    def index(self) -> ProspectIndex:
        return self._feed.index

    @property
    def calls(self) -> int:
        """Pardot calls this keeper made."""
        return self._feed.calls

    # -- what the sync service asks ---------------------------------------------------------

    async def ready(self) -> bool:
        return (await self.index.state()).complete

    def lookup_value(self, prospect: Prospect) -> str | None:
        """The prospect's lookup value as Pardot stores it, as the index keeps it."""
        return self._feed.lookup_value(prospect)

    def field_type(self, name: str) -> str:
        """A custom field's type (Text, Number, Date...), as the account lists it."""
        return self._feed.field_type(name)

    def note_read_one_by_one(self, events: int) -> None:
        """Events resolved by reading Pardot one by one: they count towards a scan."""
        self._read_one_by_one += events

    async def scan_worth_it(self, waiting: int) -> bool:
        """Whether scanning is cheaper than reading one by one for `waiting` unresolved events.

        A scan costs one call per 200 prospects plus SCAN_OVERHEAD_CALLS; `total_results` of a
        one-row query gives the account's size for one call (asked once per process, and only
        once a scan could pay at all). Events already read one by one count too.
        """
        state = await self.index.state()
        if state.complete:
            return False
        wanting = waiting + self._read_one_by_one
        if wanting <= SCAN_OVERHEAD_CALLS:
            return False  # not worth even the call that sizes the account
        if self._size is None:
            try:
                await self._feed.spend("scan")
            except BudgetShort:
                return False
            page = await self._feed.query(ProspectQuery(limit=1, fields=("id",)))
            self._size = page.total if page.total is not None else len(page.prospects)
        return wanting > -(-self._size // SCAN_ROWS_PER_CALL) + SCAN_OVERHEAD_CALLS

    async def before_batch(self, waiting: int) -> bool:
        """Scan when it pays, refresh when due; True when decisions can use the index."""
        if await self.scan_worth_it(waiting):
            report = await self.rebuild()
            log.info(
                "prospect index: %s after %d calls (%d prospects pulled)",
                "complete" if report.complete else f"paused: {report.reason}",
                report.calls,
                report.pulled,
            )
        if not await self.ready():
            return False
        with contextlib.suppress(BudgetShort):
            await self.refresh(needed=False)
        return True

    # -- filling ----------------------------------------------------------------------------

    async def rebuild(
        self, progress: Progress | None = None, *, restart: bool = False
    ) -> ScanReport:
        """Pull every prospect into the index, resuming an interrupted scan.

        Scans never use the last 10% of the day's budget: a scan stopped by the budget keeps
        its place and goes on from there later.
        """
        async with self._scan_lock():
            if restart:
                await self.index.clear()
            state = await self.index.state()
            if state.complete:
                return ScanReport(True, 0, 0, "already complete")
            calls_before = self.calls
            scan = RangeScan(self._feed, parallel=self._parallel, progress=progress)
            try:
                await self._feed.fields_to_pull()
                if not state.ranges:
                    state = await scan.plan()
                    self._size = scan.size
                pulled = await scan.pull(state)
            except BudgetShort as short:
                return ScanReport(False, scan.pulled, self.calls - calls_before, str(short))
            state = await self.index.state()
            await self.index.save_state(replace(state, complete=True, ranges=()))
            # What changed while the scan ran, from the mark taken before it began.
            with contextlib.suppress(BudgetShort):
                await self.refresh(needed=False, force=True)
            return ScanReport(True, pulled, self.calls - calls_before)

    # -- keeping fresh ----------------------------------------------------------------------

    async def refresh(self, *, needed: bool, force: bool = False) -> bool:
        """Pull what changed in Pardot since the last change seen; False if not due.

        `needed` refreshes come before a decision that depends on absence and run every
        time (concurrent callers share one); the others run every `refresh_seconds` and never
        use the last 10% of the day. Raises BudgetShort when the budget does not allow it.
        """
        asked = self._generation
        async with self._refreshing:
            if needed and self._generation > asked:
                return True  # a refresh that began after we asked has just finished
            now = self._monotonic()
            due = self._refreshed_at is None or now - self._refreshed_at >= self._refresh_seconds
            if not (needed or force or due):
                return False
            state = await self.index.state()
            if not state.complete:
                return False
            await self._feed.fields_to_pull()
            priority: Priority = "read" if needed else "scan"
            mark = await refreshing.pull_changes(self._feed, state.high_water, priority)
            state = await self.index.state()
            await self.index.save_state(replace(state, high_water=mark))
            self._refreshed_at = now
            self._generation += 1
            self.refreshes += 1
            return True

    async def learn_created(self) -> list[Prospect]:
        """The prospects created since the last one seen (batch creates return no ids)."""
        return await refreshing.learn_created(self._feed)

    async def put(self, prospects: Sequence[Prospect]) -> None:
        await self._feed.put(prospects)
