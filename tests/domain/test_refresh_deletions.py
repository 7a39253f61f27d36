"""A refresh reads live changes and the recycle bin together: deletions are applied after the
live rows, never to a prospect restored after its deletion, and never without the survivor of
a merge that the live rows, answered first, missed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.pardot.in_memory import InMemoryPardot
from domain.index import IndexKeeper
from domain.index.feed import IndexFeed
from domain.index.refresh import pull_changes, pull_created
from domain.ports import ProspectPage, ProspectQuery, ProspectWrite


class BinSeenBeforeTheRestore(InMemoryPardot):
    """The recycle-bin query was answered just before a marketer restored `restored`; the
    live query just after: both name it."""

    def __init__(self) -> None:
        super().__init__(version=4)
        self.restored: int | None = None
        self.binned_at: str | None = None

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        page = await super().query_page(query)
        if query.deleted and self.restored is not None and self.binned_at is not None:
            [live] = await super().read_by_email("back@x.io")
            page = ProspectPage([*page.prospects, replace(live, updated=(self.binned_at, 0))], None)
        return page


async def test_a_prospect_restored_after_its_deletion_stays_in_the_index() -> None:
    pardot = BinSeenBeforeTheRestore()
    back = pardot.seed("back@x.io", plan="a")
    gone = pardot.seed("gone@x.io")
    keeper = IndexKeeper(pardot, InMemoryProspectIndex())
    await keeper.rebuild()
    pardot.delete(back)
    [binned] = (
        await pardot.query_page(ProspectQuery(deleted=True, fields=("updated_at",)))
    ).prospects
    # A marketer restores it (an upsert by id takes a prospect out of the recycle bin).
    assert await pardot.write_batch(
        [ProspectWrite("id", str(back), {"plan": "b"}, mode="upsert")]
    ) == [None]
    pardot.restored, pardot.binned_at = back, binned.updated_at
    pardot.delete(gone)
    await keeper.refresh(force=True)
    index = keeper.index
    assert back in await index.by_ids([back])  # restored after the deletion the bin showed
    assert await index.by_ids([gone]) == {}


class MergedBetweenTheTwoQueries(InMemoryPardot):
    """A marketer merges `absorbed` into a new prospect (an import's duplicate) just after
    Pardot answered a pull's first live query and before the recycle bin's: that live page
    misses the survivor, the recycle bin shows the prospect merged away."""

    def __init__(self) -> None:
        super().__init__(version=4)
        self.absorbed: int | None = None
        self.survivor: int | None = None

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        page = await super().query_page(query)
        if not query.deleted and self.absorbed is not None and self.survivor is None:
            self.survivor = self.seed("merged@x.io", plan="import")
            self.merge(self.survivor, self.absorbed)
        return page


async def _merged_between_the_queries(
    pull: Callable[[IndexFeed, str | None], Awaitable[str | None]],
) -> None:
    pardot = MergedBetweenTheTwoQueries()
    absorbed = pardot.seed("merged@x.io", plan="a")
    index = InMemoryProspectIndex()
    keeper = IndexKeeper(pardot, index)
    await keeper.rebuild()
    pardot.update(absorbed, plan="b")  # something for the pull's live query to return
    pardot.absorbed = absorbed
    high_water = (await index.state()).high_water
    await pull(IndexFeed(pardot, index, lookup_field=None, budget=None), high_water)
    assert pardot.survivor is not None
    held = (await index.by_emails(["merged@x.io"])).get("merged@x.io", [])
    # The index drops the prospect merged away only with its survivor: a view with neither
    # would have the next event of this email create a duplicate.
    assert pardot.survivor in [p.id for p in held]


async def test_a_refresh_keeps_the_survivor_of_a_merge_made_between_its_two_queries() -> None:
    await _merged_between_the_queries(lambda feed, mark: pull_changes(feed, mark, "read"))


async def test_a_learn_keeps_the_survivor_of_a_merge_made_between_its_two_queries() -> None:
    await _merged_between_the_queries(lambda feed, mark: pull_created(feed, mark, "read"))


class DeletedAfterTheBinAnswered(InMemoryPardot):
    """A marketer deletes `victim` once a refresh's recycle-bin query was answered, then
    edits `other` before its live query is: that refresh's mark passes the deletion."""

    def __init__(self) -> None:
        super().__init__(version=4)
        self.victim: int | None = None
        self.other: int | None = None
        self._bin_answered = asyncio.Event()

    def arm(self, victim: int, other: int) -> None:
        self.victim, self.other = victim, other
        self._bin_answered = asyncio.Event()  # the next refresh's bin query, not an earlier one

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        if query.deleted:
            page = await super().query_page(query)
            self._bin_answered.set()
            return page
        if self.victim is not None and self.other is not None:
            await self._bin_answered.wait()
            self.delete(self.victim)
            for n in range(2):  # the live page's latest change comes after the deletion
                self.update(self.other, company=f"edited{n}")
            self.victim = None
        return await super().query_page(query)


async def test_a_prospect_deleted_while_a_refresh_reads_leaves_the_index_at_the_next() -> None:
    pardot = DeletedAfterTheBinAnswered()
    victim = pardot.seed("victim@x.io")
    other = pardot.seed("other@x.io")
    keeper = IndexKeeper(pardot, InMemoryProspectIndex())
    await keeper.rebuild()
    await keeper.refresh(force=True)  # a mark, so the next refresh reads the recycle bin
    pardot.arm(victim, other)
    await keeper.refresh(force=True)
    assert (await keeper.index.by_ids([other]))[other].fields.get("company") == "edited1"
    await keeper.refresh(force=True)
    assert await keeper.index.by_ids([victim]) == {}  # in Pardot's recycle bin: gone here too
