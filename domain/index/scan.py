"""Filling the index: Pardot's recommended bulk pull, over parallel id ranges, resumable.

In: an IndexFeed and how many ranges may be pulled at once. Out: `RangeScan`, which plans
the scan (`plan`: size, lowest and highest id, latest change, then id ranges saved in the
IndexState) and pulls the ranges left (`pull`), saving each range's place after every page so
a scan stopped by the budget or a restart goes on where it was.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

from domain.index.feed import KEY_FIELDS, BudgetShort, IndexFeed
from domain.ports import QUERY_LIMIT, IndexState, ProspectQuery

RANGES_PER_WORKER = 4  # ids are not evenly spread: more ranges than workers balance them
Progress = Callable[[int, int], None]  # (rows pulled, rows expected)


@dataclass(frozen=True)
class ScanReport:
    complete: bool
    pulled: int
    calls: int
    reason: str = ""


class RangeScan:
    """One run of a scan; `pulled` counts its rows even when the budget stops it."""

    def __init__(self, feed: IndexFeed, *, parallel: int, progress: Progress | None) -> None:
        self._feed = feed
        self._parallel = parallel
        self._progress = progress
        self.pulled = 0
        self.size: int | None = None  # the account's size, once `plan` asked

    async def plan(self) -> IndexState:
        """Size, lowest and highest id, latest change (three one-row queries), then ranges."""
        feed = self._feed
        await feed.spend("scan")
        low = await feed.query(ProspectQuery(limit=1, fields=("updated_at",)))
        await feed.spend("scan")
        top = await feed.query(
            ProspectQuery(sort_order="descending", limit=1, fields=("updated_at",))
        )
        await feed.spend("scan")
        latest = await feed.query(
            ProspectQuery(sort_by="updated_at", sort_order="descending", limit=1, fields=KEY_FIELDS)
        )
        total = top.total if top.total is not None else len(top.prospects)
        self.size = total
        # Changes after this mark are pulled by the refresh that completes the scan.
        mark = latest.prospects[0].updated_at if latest.prospects else None
        field, kind = feed.lookup_column
        if not (low.prospects and top.prospects):
            state = IndexState(
                ranges=(), high_water=None, total=0, lookup_field=field, lookup_type=kind
            )
        else:
            lowest, highest = low.prospects[0].id, top.prospects[0].id
            count = self._parallel * RANGES_PER_WORKER
            step = max(1, -(-(highest + 1 - lowest) // count))
            bounds = [*range(lowest, highest + 1, step), highest + 1]
            # (last id pulled, end exclusive): a range starts just below its first id.
            ranges = tuple((start - 1, end) for start, end in itertools.pairwise(bounds))
            state = IndexState(
                ranges=ranges,
                high_water=mark,
                total=total,
                lookup_field=field,
                lookup_type=kind,
            )
        await feed.index.save_state(state)
        return state

    async def pull(self, state: IndexState) -> int:
        """Pull every range of `state`; raises the first BudgetShort once the others stop."""
        feed = self._feed
        ranges = dict(enumerate(state.ranges))
        todo = list(ranges)
        saving = asyncio.Lock()
        total = state.total or 0

        async def save() -> None:
            async with saving:
                current = await feed.index.state()
                left = tuple(r for r in ranges.values() if r[0] < r[1] - 1)
                await feed.index.save_state(replace(current, ranges=left))

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
                    await feed.spend("scan")
                    page = await feed.query(
                        ProspectQuery(
                            id_greater_than=cursor,
                            id_less_than=end,
                            fields=feed.fields or (),
                        )
                    )
                    await feed.put(page.prospects)
                    self.pulled += len(page.prospects)
                    if self._progress is not None:
                        self._progress(self.pulled, max(total, self.pulled))
                    cursor = page.prospects[-1].id if page.prospects else end - 1
                    if len(page.prospects) < QUERY_LIMIT:
                        cursor = end - 1
                    ranges[key] = (cursor, end)
                    await save()

        await asyncio.gather(*(work() for _ in range(min(self._parallel, len(todo) or 1))))
        if stopped:
            raise stopped[0]
        return self.pulled
