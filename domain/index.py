"""Keeping the prospect index: filled by a paged scan, kept fresh by Pardot's own times.

Pardot cannot search by email in bulk nor by custom field (PARDOT_API.md), so the service
keeps every prospect of the account in its store and decides from there. This module fills
that index the way Pardot recommends for bulk pulls (`id_greater_than` high-water marks, 200
rows a call, parallel id ranges within the in-flight limit, resumable), keeps it fresh with
`updated_after` queries bounded by the latest `updated_at` Pardot returned (never our own
clock: Pardot's times are in the account's zone), and learns the ids of prospects created by
batches (which return none) from `created_after` queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from domain.budget import DailyBudget, Priority
from domain.ports import (
    QUERY_LIMIT,
    IndexState,
    PardotRepository,
    ProspectIndex,
    ProspectPage,
    ProspectQuery,
)
from domain.prospect import STANDARD_FIELDS, CustomField, Prospect, stored_form

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 60.0
DEFAULT_PARALLEL = 5  # Pardot's in-flight limit per business unit
RANGES_PER_WORKER = 4  # ids are not evenly spread: more ranges than workers balance them
# Rows read one by one cost a call each; a scan costs one call per QUERY_LIMIT prospects.
SCAN_ROWS_PER_CALL = QUERY_LIMIT
# Besides its pages a scan asks for the custom fields, sizes the account, finds its lowest and
# highest id and latest change, and ends with a refresh.
SCAN_OVERHEAD_CALLS = 5
_TIME = "%Y-%m-%d %H:%M:%S"
# What a prospect row must carry besides the fields we write: keys and times.
KEY_FIELDS = ("email", "created_at", "updated_at", "salesforce_fid", "crm_lead_fid",
              "crm_contact_fid")  # fmt: skip

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (rows pulled, rows expected)


class BudgetShort(Exception):
    """The daily budget does not allow this call now (its priority's share is spent)."""

    def __init__(self, priority: Priority, seconds_to_reset: float) -> None:
        super().__init__(f"the daily Pardot API budget left for {priority} calls is spent")
        self.priority = priority
        self.seconds_to_reset = seconds_to_reset


@dataclass(frozen=True)
class ScanReport:
    complete: bool
    pulled: int
    calls: int
    reason: str = ""


def earlier(pardot_time: str, seconds: int = 1) -> str:
    """A Pardot time moved back: bounds overlap the last second (times have whole seconds)."""
    moment = datetime.strptime(pardot_time, _TIME) - timedelta(seconds=seconds)
    return moment.strftime(_TIME)


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
        self._repository = repository
        self.index = index
        self._lookup = lookup_field
        self._budget = budget
        self._refresh_seconds = refresh_seconds
        self._parallel = max(1, parallel)
        self._scan_lock = scan_lock or contextlib.nullcontext
        self._monotonic = monotonic
        self._fields: tuple[str, ...] | None = None
        self._types: dict[str, str] = {}
        self._refreshing = asyncio.Lock()
        self._refreshed_at: float | None = None
        self._generation = 0  # refreshes finished; callers that asked earlier share one
        self._size: int | None = None
        self._read_one_by_one = 0
        self._pulled = 0  # rows the current scan pulled
        self._reserved = 0  # queries allowed by the budget and not yet answered
        self.calls = 0  # Pardot calls this keeper made

    # -- what the sync service asks ---------------------------------------------------------

    async def ready(self) -> bool:
        return (await self.index.state()).complete

    def lookup_value(self, prospect: Prospect) -> str | None:
        """The prospect's lookup value as Pardot stores it, as the index keeps it."""
        if self._lookup is None:
            return None
        text = prospect.field_text(self._lookup)
        if text is None:
            return None
        return stored_form(text, self._types.get(self._lookup, "Text"))

    def field_type(self, name: str) -> str:
        """A custom field's type (Text, Number, Date...), as the account lists it."""
        return self._types.get(name, "Text")

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
                await self._spend("scan")
            except BudgetShort:
                return False
            page = await self._query(ProspectQuery(limit=1, fields=("id",)))
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
            self._pulled = 0
            try:
                await self._fields_to_pull()
                if not state.ranges:
                    state = await self._plan_scan()
                pulled = await self._pull_ranges(state, progress)
            except BudgetShort as short:
                return ScanReport(False, self._pulled, self.calls - calls_before, str(short))
            state = await self.index.state()
            await self.index.save_state(replace(state, complete=True, ranges=()))
            # What changed while the scan ran, from the mark taken before it began.
            with contextlib.suppress(BudgetShort):
                await self.refresh(needed=False, force=True)
            return ScanReport(True, pulled, self.calls - calls_before)

    async def _plan_scan(self) -> IndexState:
        """Size, lowest and highest id, latest change (three one-row queries), then ranges."""
        await self._spend("scan")
        low = await self._query(ProspectQuery(limit=1, fields=("updated_at",)))
        await self._spend("scan")
        top = await self._query(
            ProspectQuery(sort_order="descending", limit=1, fields=("updated_at",))
        )
        await self._spend("scan")
        latest = await self._query(
            ProspectQuery(sort_by="updated_at", sort_order="descending", limit=1, fields=KEY_FIELDS)
        )
        total = top.total if top.total is not None else len(top.prospects)
        self._size = total
        # Changes after this mark are pulled by the refresh that completes the scan.
        mark = latest.prospects[0].updated_at if latest.prospects else None
        if not (low.prospects and top.prospects):
            state = IndexState(ranges=(), high_water=None, total=0)
        else:
            lowest, highest = low.prospects[0].id, top.prospects[0].id
            count = self._parallel * RANGES_PER_WORKER
            step = max(1, -(-(highest + 1 - lowest) // count))
            bounds = [*range(lowest, highest + 1, step), highest + 1]
            # (last id pulled, end exclusive): a range starts just below its first id.
            ranges = tuple((start - 1, end) for start, end in itertools.pairwise(bounds))
            state = IndexState(ranges=ranges, high_water=mark, created_high_water=mark, total=total)
        await self.index.save_state(state)
        return state

    async def _pull_ranges(self, state: IndexState, progress: Progress | None) -> int:
        ranges = dict(enumerate(state.ranges))
        todo = list(ranges)
        saving = asyncio.Lock()
        total = state.total or 0

        async def save() -> None:
            async with saving:
                current = await self.index.state()
                left = tuple(r for r in ranges.values() if r[0] < r[1] - 1)
                await self.index.save_state(replace(current, ranges=left))

        stopped: list[BudgetShort] = []

        async def work() -> None:
            try:
                await pull()
            except BudgetShort as short:
                stopped.append(short)  # the others finish the page they are pulling

        async def pull() -> None:
            while todo and not stopped:
                key = todo.pop(0)
                cursor, end = ranges[key]
                while cursor < end - 1:
                    await self._spend("scan")
                    page = await self._query(
                        ProspectQuery(
                            id_greater_than=cursor,
                            id_less_than=end,
                            fields=self._fields or (),
                        )
                    )
                    await self._put(page.prospects)
                    self._pulled += len(page.prospects)
                    if progress is not None:
                        progress(self._pulled, max(total, self._pulled))
                    cursor = page.prospects[-1].id if page.prospects else end - 1
                    if len(page.prospects) < QUERY_LIMIT:
                        cursor = end - 1
                    ranges[key] = (cursor, end)
                    await save()

        await asyncio.gather(*(work() for _ in range(min(self._parallel, len(todo) or 1))))
        if stopped:
            raise stopped[0]
        return self._pulled

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
            await self._fields_to_pull()
            priority: Priority = "read" if needed else "scan"
            mark = await self._pull_changes(state.high_water, priority)
            state = await self.index.state()
            await self.index.save_state(replace(state, high_water=mark))
            self._refreshed_at = now
            self._generation += 1
            return True

    async def _pull_changes(self, mark: str | None, priority: Priority) -> str | None:
        bound = earlier(mark) if mark else None
        while True:
            await self._spend(priority)
            page = await self._query(
                ProspectQuery(
                    updated_after=bound,
                    sort_by="updated_at",
                    fields=self._fields or (),
                )
            )
            await self._put(page.prospects)
            if page.prospects:
                mark = max(mark or "", page.prospects[-1].updated_at) or mark
            if len(page.prospects) < QUERY_LIMIT or mark is None:
                return mark
            following = earlier(mark)
            if bound is not None and following <= bound:
                # A whole page within one second: page that second by id, then move on.
                await self._pull_second(bound, mark, priority)
                following = mark
            bound = following

    async def _pull_second(self, bound: str, second: str, priority: Priority) -> None:
        cursor = 0
        after = earlier(second, 0)
        before = (datetime.strptime(after, _TIME) + timedelta(seconds=1)).strftime(_TIME)
        while True:
            await self._spend(priority)
            page = await self._query(
                ProspectQuery(
                    id_greater_than=cursor,
                    updated_after=bound,
                    updated_before=before,
                    fields=self._fields or (),
                )
            )
            await self._put(page.prospects)
            if len(page.prospects) < QUERY_LIMIT:
                return
            cursor = page.prospects[-1].id

    async def learn_created(self) -> list[Prospect]:
        """The prospects created since the last one seen (batch creates return no ids)."""
        state = await self.index.state()
        mark = state.created_high_water
        bound = earlier(mark) if mark else None
        learned: list[Prospect] = []
        while True:
            await self._spend("read")
            page = await self._query(
                ProspectQuery(
                    created_after=bound, sort_by="created_at", fields=await self._fields_to_pull()
                )
            )
            await self._put(page.prospects)
            learned.extend(page.prospects)
            if page.prospects:
                mark = max(mark or "", page.prospects[-1].created_at) or mark
            if len(page.prospects) < QUERY_LIMIT or mark is None:
                break
            following = earlier(mark)
            if bound is not None and following <= bound:
                break  # more than a page created within one second: the refresh finds them
            bound = following
        state = await self.index.state()
        await self.index.save_state(replace(state, created_high_water=mark))
        return learned

    # -- helpers ----------------------------------------------------------------------------

    async def put(self, prospects: Sequence[Prospect]) -> None:
        await self._put(prospects)

    async def _put(self, prospects: Sequence[Prospect]) -> None:
        if prospects:
            await self.index.put([(p, self.lookup_value(p)) for p in prospects])

    async def _fields_to_pull(self) -> tuple[str, ...]:
        """Keys and times, every writable standard field and every custom field."""
        if self._fields is None:
            await self._spend("read")
            try:
                custom: list[CustomField] = await self._counted(self._repository.custom_fields())
            finally:
                self._reserved = max(0, self._reserved - 1)
            self._types = {f.field_id: f.type for f in custom}
            standard = sorted(STANDARD_FIELDS - {"email", "password"})
            self._fields = (*KEY_FIELDS, *standard, *sorted(self._types))
        return self._fields

    async def _query(self, query: ProspectQuery) -> ProspectPage:
        try:
            return await self._counted(self._repository.query_page(query))
        finally:
            self._reserved = max(0, self._reserved - 1)

    async def _counted(self, call: Awaitable[T]) -> T:
        self.calls += 1
        return await call

    async def _spend(self, priority: Priority) -> None:
        """Check the budget before a query; calls checked but not yet sent count as spent,
        so parallel ranges cannot together overrun a priority's share."""
        if self._budget is not None:
            if not await self._budget.allows(priority, 1 + self._reserved):
                raise BudgetShort(priority, self._budget.seconds_to_reset())
            self._reserved += 1
