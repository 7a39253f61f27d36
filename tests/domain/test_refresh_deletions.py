"""A refresh reads live changes and the recycle bin together: deletions are applied after the
live rows, and never to a prospect restored after its deletion."""

from __future__ import annotations

from dataclasses import replace

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.pardot.in_memory import InMemoryPardot
from domain.index import IndexKeeper
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
