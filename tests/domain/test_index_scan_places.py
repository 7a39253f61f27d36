"""A scan the budget stops keeps each range's place: the next run pulls only what is left.

The keeper's own call count is what `index --rebuild` reports, so it must count every page.
"""

from __future__ import annotations

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.pardot.in_memory import InMemoryPardot
from domain.budget import Priority
from domain.index import IndexKeeper


class CallsLeft:
    """A budget that allows a fixed number of calls, then none."""

    def __init__(self, calls: int) -> None:
        self.left = calls

    async def allows(self, priority: Priority, calls: int = 1) -> bool:
        return calls <= self.left

    def seconds_to_reset(self) -> float:
        return 60.0


async def test_a_stopped_scan_saves_the_place_of_every_range_it_pulled() -> None:
    pardot = InMemoryPardot()
    for n in range(900):
        pardot.seed(f"p{n}@x.io")
    index = InMemoryProspectIndex()
    # One call for the custom fields, three to plan four ranges of 225 ids, then two pages:
    # the first range whole (200 rows, then 25), the other three not begun.
    budget = CallsLeft(1 + 3 + 2)
    keeper = IndexKeeper(pardot, index, budget=budget, parallel=1)  # type: ignore[arg-type]

    def spend(priority: Priority, calls: int = 1) -> None:
        budget.left -= calls

    original = pardot.query_page

    async def query_page(query):  # type: ignore[no-untyped-def]
        spend("scan")
        return await original(query)

    async def custom_fields():  # type: ignore[no-untyped-def]
        spend("read")
        return []

    pardot.query_page = query_page  # type: ignore[method-assign]
    pardot.custom_fields = custom_fields  # type: ignore[method-assign]

    report = await keeper.rebuild()

    assert not report.complete and report.pulled == 225
    assert report.calls == 1 + 3 + 2
    state = await index.state()
    assert len(state.ranges) == 3 and await index.count() == 225
