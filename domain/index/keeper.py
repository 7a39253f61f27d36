"""The index keeper: what the sync service asks of the prospect index, and when to pull.

In: a PardotRepository, the ProspectIndex, the lookup field, the daily budget and how often
to refresh. Out: `IndexKeeper`, which tells whether decisions may use the index (`ready`,
`before_batch`), scans the account when that is cheaper than reading one by one (`rebuild`,
`scan_worth_it`), and keeps it fresh: `fresh_for` tells whether the refresh behind the
watermark began after given events arrived (store clock), `refresh_for` makes it so (one refresh
shared by every process on the store), `refresh` is the periodic one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import Context
from dataclasses import replace
from datetime import datetime, timedelta

from domain.budget import DailyBudget, Priority
from domain.index import refresh as refreshing
from domain.index.export import Exporter, ExportOptions, Sleep
from domain.index.export_refresh import ChangesByExport
from domain.index.feed import BudgetShort, IndexFeed
from domain.index.fill_choice import FillChoice
from domain.index.lookup_column import match_lookup_column
from domain.index.scan import Progress, RangeScan, ScanReport
from domain.ports import QUERY_LIMIT, BulkPardot, PardotRepository, ProspectIndex
from domain.prospect import CustomField, Prospect

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 60.0
DEFAULT_PARALLEL = 5  # Pardot's in-flight limit per business unit
RECENT_REFRESHES = 60  # start times kept, enough to count a minute's refreshes
# How long a refresh waits for this process's creates in flight, so that it learns them too.
GATHER_CREATES_SECONDS = 5.0
PERIODIC_REFRESH_BACKLOG = 1_000  # queued events above which the periodic refresh waits


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
        refresh_lock: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        lag_seconds: float = 0.0,
        bulk: BulkPardot | None = None,
        exports: ExportOptions | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`bulk` and `exports` given (DESTINATION_BULK=auto): the index is filled by
        Pardot's exports where they cost fewer calls than the scan (`domain.index.export`)."""
        self._feed = IndexFeed(repository, index, lookup_field=lookup_field, budget=budget)
        exporter = (
            Exporter(bulk, self._feed, exports, sleep)
            if bulk is not None and exports is not None
            else None
        )
        self._fill = FillChoice(self._feed, exporter)
        # A refresh reading back many changes (a large sync's own) by one export.
        self._changes = ChangesByExport(exporter) if exporter is not None else None
        self._refresh_seconds = refresh_seconds
        self._parallel = max(1, parallel)
        self._scan_lock = scan_lock or contextlib.nullcontext
        # Every process sharing the store refreshes under one lock, so one refresh serves all.
        self._refresh_lock = refresh_lock or contextlib.nullcontext
        self._lag = timedelta(seconds=lag_seconds)
        self._refreshing = asyncio.Lock()  # this process's callers queue here first
        self._learning = asyncio.Lock()  # and this process's learns of created prospects here
        # The periodic refresh runs beside the batches, never in their way (`before_batch`).
        self._periodic: asyncio.Task[bool] | None = None
        # Creates of this process not answered yet (`creating`), which a refresh waits for.
        self._creates: set[asyncio.Future[None]] = set()
        # This process's learns of created prospects: when the last began (store clock) and the
        # latest created_at it saw, where the next one starts.
        self._learn_began: datetime | None = None
        # Prospects this process wrote since its last refresh began: what a refresh would read
        # back beside the creates a learn is for.
        self._written = 0
        self._created_mark: str | None = None
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
        """Whether decisions may use the index: complete, and its lookup column computed for
        the lookup field (and type) set now, recomputed first when the setting changed."""
        state = await self.index.state()
        if not state.complete:
            return False
        try:
            await match_lookup_column(self._feed, state, self._scan_lock)
        except BudgetShort:
            return False
        return (await self.index.state()).complete  # unless it must be filled again

    def lookup_value(self, prospect: Prospect) -> str | None:
        """The prospect's lookup value as Pardot stores it, as the index keeps it."""
        return self._feed.lookup_value(prospect)

    def field_type(self, name: str) -> str:
        """A custom field's type (Text, Number, Date...), as the account lists it."""
        return self._feed.field_type(name)

    def note_custom_fields(self, custom: Sequence[CustomField]) -> None:
        """The account's custom fields, read by the sync service's check: one call a process
        serves both (every node pays its own, so a second would show per node)."""
        self._feed.note_custom_fields(custom)

    def note_read_one_by_one(self, events: int) -> None:
        """Events resolved by reading Pardot one by one: they count towards a scan."""
        self._fill.note_read_one_by_one(events)

    async def scan_worth_it(self, waiting: int) -> bool:
        """Whether filling the index is cheaper than reading one by one for `waiting`
        unresolved events (`FillChoice.worth_it`); never once it is complete."""
        if (await self.index.state()).complete:
            return False
        return await self._fill.worth_it(waiting)

    async def before_batch(self, waiting: int, *, backlog: int = 0) -> bool:
        """Scan when it pays, refresh when due; True when decisions can use the index.

        The periodic refresh runs beside the batch, not before it, and only once no more than
        PERIODIC_REFRESH_BACKLOG events (`backlog`) wait beside this batch: after a large sync
        it reads back every update made since the last, 200 rows a call, one page after
        another, while the waiting events need Pardot's slots and make their own decisions
        fresh when they need to. Batches that need a refresh wait on the refresh lock as for
        any refresh.
        """
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
        idle = self._periodic is None or self._periodic.done()
        if idle and backlog <= PERIODIC_REFRESH_BACKLOG and await self._due():
            # A context of its own: the refresh belongs to no batch, so nothing the batch that
            # happened to start it set for its own calls (its lease's hold) governs its calls,
            # nor ends them when that batch ends.
            self._periodic = asyncio.create_task(self._refresh_beside(), context=Context())
        return True

    async def close(self) -> None:
        """Stop the periodic refresh running beside the batches (before the store closes)."""
        periodic, self._periodic = self._periodic, None
        if periodic is not None and not periodic.done():
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic

    async def _refresh_beside(self) -> bool:
        try:
            return await self.refresh()
        except BudgetShort:
            return False
        except Exception as error:  # the next batch starts another; decisions refresh anyway
            log.warning("the periodic refresh of the prospect index failed: %r", error)
            return False

    # -- filling ----------------------------------------------------------------------------

    async def rebuild(
        self, progress: Progress | None = None, *, restart: bool = False
    ) -> ScanReport:
        """Pull every prospect into the index, resuming an interrupted scan.

        Scans never use the last 10% of the day's budget: a scan stopped by the budget keeps
        its place and goes on from there later. Where exports cost fewer calls (`bulk` and
        `exports` given) they fill the index instead, from scratch each time; one that fails
        leaves the fill to the scan, with one warning.
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
                    exported = await self._fill.by_exports(progress)
                    if exported is not None:
                        return await self._complete(exported, calls_before)
                    state = await scan.plan()
                    self._fill.size = scan.size
                pulled = await scan.pull(state)
            except BudgetShort as short:
                return ScanReport(False, scan.pulled, self.calls - calls_before, str(short))
            return await self._complete(pulled, calls_before)

    async def _complete(self, pulled: int, calls_before: int) -> ScanReport:
        state = await self.index.state()
        await self.index.save_state(replace(state, complete=True, ranges=()))
        # What changed while the scan or the exports ran, from the mark taken before they
        # began: the watermark comes from this query, never from an export's dates.
        with contextlib.suppress(BudgetShort):
            await self.refresh(force=True)
        return ScanReport(True, pulled, self.calls - calls_before)

    # -- keeping fresh ----------------------------------------------------------------------

    async def fresh_for(self, arrived: datetime | None) -> bool:
        """Whether decisions about events that all arrived by `arrived` (the store's clock) may
        come from the index: the refresh behind the watermark began after that."""
        state = await self.index.state()
        began = state.watermark_began
        return state.complete and began is not None and arrived is not None and began > arrived

    async def refresh_for(self, arrived: datetime | None) -> None:
        """Make the index fresh for events that arrived by `arrived` (None: now).

        Concurrent callers, and every process sharing the store, share one refresh in flight:
        whoever finds the watermark already past `arrived` once it may refresh does nothing.
        Raises BudgetShort when the budget does not allow the refresh.
        """
        if arrived is None:
            arrived = await self.index.clock()
        if await self.fresh_for(arrived) or not await self.ready():
            return
        async with self._refreshing:
            if await self.fresh_for(arrived):
                return
            await self._creates_answered()
            async with self._refresh_lock():
                if await self.fresh_for(arrived):
                    return
                await self._past_lag(arrived)
                await self._pull("read")

    async def _creates_answered(self) -> None:
        """Wait for this process's creates in flight now. Batches worked at once create side
        by side: a refresh or learn begun once they are answered learns them all, where one
        begun at once would leave each of the others to wait for one more after it."""
        in_flight = set(self._creates)
        if in_flight:
            await asyncio.wait(in_flight, timeout=GATHER_CREATES_SECONDS)

    async def _past_lag(self, moment: datetime) -> None:
        """Pardot's queries may show a write `lag` late: begin only once that has passed."""
        wait = (moment + self._lag - await self.index.clock()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)

    async def learn_created(self, answered: datetime | None) -> None:
        """Bring into the index every prospect created by `answered` (None: now): how creates,
        whose answers carry no ids, are learned.

        Pages of `created_after` from the latest create seen (by this process, or by the last
        refresh), not a refresh, which would read back every update since as well. One learn
        serves every caller waiting when it begins; it waits for this process's creates in
        flight first. Raises BudgetShort when the budget does not allow it.
        """
        if not await self.ready():
            return
        if answered is None:
            answered = await self.index.clock()
        if (await self.index.state()).high_water is None or self._written < QUERY_LIMIT:
            # A refresh costs about what a learn does when little was written since the last
            # one (less than a page), and makes the index fresh too, which the next batch's
            # decisions may want. And when the account was empty at the scan and no refresh
            # has set a mark since, only a refresh pulls the deletions since.
            await self.refresh_for(answered)
            return
        async with self._learning:
            if await self._learned_since(answered):
                return
            await self._creates_answered()
            # Not under the refresh locks: a refresh reading back a large sync's updates takes
            # minutes, and what a learn puts never replaces a row the index holds as newer.
            await self._past_lag(answered)
            began = await self.index.clock() - self._lag
            state = await self.index.state()
            since = max(self._created_mark or "", state.high_water or "")
            lag = self._lag.total_seconds()
            mark = await refreshing.pull_created(self._feed, since, "read", lag=lag)
            self._created_mark = max(mark or "", self._created_mark or "") or None
            self._learn_began = began

    async def _learned_since(self, moment: datetime) -> bool:
        """Whether a learn or a refresh began after `moment`."""
        if self._learn_began is not None and self._learn_began > moment:
            return True
        return await self.fresh_for(moment)

    @contextlib.asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        """Around a create call of this process: refreshes wait for its answer (see
        `refresh_for`), so one refresh learns what batches worked at once created."""
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creates.add(answered)
        try:
            yield
        finally:
            self._creates.discard(answered)
            answered.set_result(None)

    async def refresh(self, *, force: bool = False) -> bool:
        """The periodic refresh, for what no event asks about (status, explain): runs when the
        watermark is `refresh_seconds` old, shared by every process, never using the last 10%
        of the day. False when not due. Raises BudgetShort when the budget does not allow it."""
        if not (force or await self._due()):
            return False  # the common case: no batch waits on the lock to learn it
        async with self._refreshing:
            if not (force or await self._due()):
                return False
            async with self._refresh_lock():
                if not (force or await self._due()):
                    return False
                return await self._pull("scan")

    async def _due(self) -> bool:
        state = await self.index.state()
        if not state.complete:
            return False
        if state.watermark_began is None:
            return True
        age = await self.index.clock() - state.watermark_began - self._lag
        return age.total_seconds() >= self._refresh_seconds

    async def _pull(self, priority: Priority) -> bool:
        """One refresh; the caller holds the refresh locks. The watermark's start is read on the
        store's clock before the first query, and held back by the lag."""
        state = await self.index.state()
        if not state.complete:
            return False
        await self._feed.fields_to_pull()
        began = await self.index.clock()
        self._written = 0
        lag = self._lag.total_seconds()
        mark = await refreshing.pull_changes(
            self._feed, state.high_water, priority, lag=lag, exports=self._changes,
            deleted_after=state.deleted_after,
        )  # fmt: skip
        # The next refresh reads the recycle bin from where this one read changes from.
        binned = refreshing.changes_bound(state.high_water, lag)
        state = await self.index.state()
        recent = (*state.recent_refreshes, began)[-RECENT_REFRESHES:]
        await self.index.save_state(
            replace(state, high_water=mark, watermark_began=began - self._lag,
                    recent_refreshes=recent, deleted_after=binned)
        )  # fmt: skip
        self.refreshes += 1
        return True

    async def put(self, prospects: Sequence[Prospect]) -> None:
        """What this process wrote, in the index at once; counted, since the next refresh
        reads it all back (`learn_created`)."""
        self._written += len(prospects)
        if self._changes is not None:
            self._changes.note_written(p.id for p in prospects)
        await self._feed.put(prospects)
