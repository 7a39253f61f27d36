"""Issue 23: a refresh that reads many changes back by one export, over HTTP to the fake.

A first sync's refresh read its own tens of thousands of updates back 200 a call. Where an
export costs less it reads them instead, and the index must end as a paged refresh leaves
it: every change others made (before the export or while it ran), every deletion, every
new prospect, and never a value older than one this process wrote meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.memory.prospect_index import InMemoryProspectIndex
from contracts.fake_pardot import FakePardot
from domain.index import IndexKeeper
from domain.index.export import ExportOptions
from domain.ports import ProspectWrite
from domain.sync.learn import as_written
from tests.contracts.conftest import Backend, open_backend
from tests.contracts.test_index_by_export import (
    ZONES,
    assert_same_index,
    by_export,
    fill,
    seed_account,
    while_exporting,
)

SYNCED = 230  # more changes than a page holds: the first page says more are due


def refresh_by_export(zone: str, **options: Any) -> ExportOptions:
    """The scan fills (no account is large enough), any refresh of changes beyond a page
    is read back by export."""
    return by_export(zone, min_prospects=10**9, min_changes=1, **options)


class RecordingIndex(InMemoryProspectIndex):
    """Every value of `first_name` put for each prospect, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: dict[int, list[Any]] = {}

    async def put(self, rows: Any) -> None:
        for prospect, _ in rows:
            self.puts.setdefault(prospect.id, []).append(prospect.fields.get("first_name"))
        await super().put(rows)


async def synced_account(
    stack: AsyncExitStack,
    zone: str,
    *,
    index: InMemoryProspectIndex | None = None,
    act: Callable[[FakePardot], Awaitable[None]] | None = None,
    lookup_field: str | None = None,
    **options: Any,
) -> tuple[Backend, FakePardot, IndexKeeper, list[int]]:
    """An account of SYNCED + 20 prospects changed days ago, its index filled by the scan,
    then SYNCED of them updated (a sync's writes): what the next refresh reads back."""
    backend = await open_backend(stack, "http", 4)
    fake = backend.fake
    assert fake is not None
    fake.export_user_time_zone = zone
    fake.export_rows_per_second = 2_000.0
    past = fake.clock().replace(microsecond=0) - timedelta(days=3)
    rows = [
        {"first_name": f"P{n}", "org_id": f"o{n}", "updated_at": past + timedelta(minutes=n)}
        for n in range(SYNCED + 20)
    ]
    ids = seed_account(fake, rows)
    sleep = while_exporting(fake, lambda: act(fake)) if act is not None else asyncio.sleep
    keeper = IndexKeeper(
        backend.repo,
        index if index is not None else InMemoryProspectIndex(),
        bulk=backend.repo,  # type: ignore[arg-type]
        exports=refresh_by_export(zone, **options),
        sleep=sleep,
        lookup_field=lookup_field,
    )
    assert (await keeper.rebuild()).complete and not fake.exports.jobs
    for prospect_id in ids[:SYNCED]:
        fake.update_record(fake.records[prospect_id], {"company": "Synced"})
    return backend, fake, keeper, ids


marketer_acts = st.lists(
    st.tuples(st.sampled_from(["edit", "delete", "create", "merge"]), st.integers(0, 249)),
    max_size=6,
)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=marketer_acts,
    during=marketer_acts,
    zone=st.sampled_from(ZONES),
    carried=st.booleans(),
)
def test_a_refresh_by_export_leaves_the_index_a_scan_fills(
    before: list[tuple[str, int]], during: list[tuple[str, int]], zone: str, carried: bool
) -> None:
    """Whatever others change before the export or while it runs (edits, deletions, merges,
    new prospects), the index ends as a scan of the account then fills it, but for the
    fields no export carries (unknown: custom fields too, where Pardot refuses them), and
    with the scan's watermark."""

    def play(fake: FakePardot, ids: list[int], acts: list[tuple[str, int]]) -> None:
        for n, (act, which) in enumerate(acts):
            live = [i for i in ids if i in fake.records and not fake.records[i].archived]
            target = live[which % len(live)]
            if act == "edit":
                fake.update_record(fake.records[target], {"first_name": f"Edited{n}"})
            elif act == "delete":
                fake.delete_prospect(target)
            elif act == "create":
                ids.append(fake.seed_prospect(email=f"new{n}-{which}@example.com"))
            elif len(live) > 1:
                other = live[(which + 1) % len(live)]
                fake.merge_prospects(target, other)

    async def run() -> None:
        async with AsyncExitStack() as stack:
            ids: list[int] = []

            async def meanwhile(fake: FakePardot) -> None:
                play(fake, ids, during)

            backend, fake, keeper, seeded = await synced_account(stack, zone, act=meanwhile)
            fake.export_custom_fields = carried
            ids.extend(seeded)
            play(fake, ids, before)
            assert await keeper.refresh(force=True)
            assert len(fake.exports.jobs) == 1  # the changes read back by one export
            refreshed = await keeper.index.rows_after(0, 1_000_000)
            state = await keeper.index.state()
            _, scanned, scan_state = await fill(backend, None)
            assert_same_index(scanned, refreshed, zone, carried=carried)
            assert state.high_water == scan_state.high_water

    asyncio.run(run())


async def test_a_refresh_by_export_costs_a_few_calls_where_pages_cost_one_per_200() -> None:
    async with AsyncExitStack() as stack:
        _, fake, keeper, _ = await synced_account(stack, "UTC")
        before = dict(fake.calls)
        await keeper.refresh(force=True)
        queries = fake.calls["query"] - before.get("query", 0)
        # The first page, the count and mark, the page after the mark, the recycle bin
        # beside the first page and again after the export; 2 pages were SYNCED // 200 + 1.
        # Two creates: the first asked for custom fields too, which the fake refuses.
        assert queries == 5 and fake.calls["export/create"] == 2
        assert len(fake.exports.jobs) == 1


async def test_what_this_process_wrote_while_the_export_ran_never_goes_back() -> None:
    """A write answered after the export took its rows: the export's copy is older. The index
    never holds it, not even until the pages after the mark read the write back."""
    index = RecordingIndex()
    written: list[int] = []
    holder: dict[str, IndexKeeper] = {}

    async def we_write(fake: FakePardot) -> None:
        keeper = holder["keeper"]
        [prospect_id] = written
        [held] = (await keeper.index.by_ids([prospect_id])).values()
        fields = {"first_name": "Ours"}
        row = ProspectWrite("id", str(prospect_id), fields)
        assert await holder["repo"].write_batch([row]) == [None]  # type: ignore[attr-defined]
        await keeper.put([as_written(held, fields, keeper.field_type)])
        index.puts[prospect_id] = ["(written)"]

    async with AsyncExitStack() as stack:
        backend, fake, keeper, ids = await synced_account(
            stack, "America/Los_Angeles", index=index, act=we_write
        )
        holder["keeper"], holder["repo"] = keeper, backend.repo  # type: ignore[assignment]
        written.append(ids[5])  # one the sync changed: in the export, with its old name
        await keeper.refresh(force=True)
        assert len(fake.exports.jobs) == 1
        assert "Ours" not in "".join(f for job in fake.exports.jobs.values() for f in job.files)
        puts = index.puts[ids[5]]
        assert puts[0] == "(written)" and "P5" not in puts, puts
        [held] = (await keeper.index.by_ids([ids[5]])).values()
        assert held.fields.get("first_name") == "Ours"


async def test_a_failed_export_leaves_the_refresh_to_the_pages_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncExitStack() as stack:
        backend, fake, keeper, _ = await synced_account(stack, "Asia/Tokyo")
        fake.export_failures = 1
        with caplog.at_level(logging.WARNING):
            assert await keeper.refresh(force=True)
            for prospect_id in list(fake.records)[:SYNCED]:
                fake.update_record(fake.records[prospect_id], {"company": "Again"})
            assert await keeper.refresh(force=True)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "failed" in warnings[0].getMessage()
        assert len(fake.exports.jobs) == 1  # not tried again
        refreshed = await keeper.index.rows_after(0, 1_000_000)
        _, scanned, _ = await fill(backend, None)
        assert refreshed == scanned  # read by pages: every column held


@pytest.mark.parametrize("carried", [False, True])
async def test_with_a_lookup_field_changes_are_read_by_export_only_with_custom_fields(
    carried: bool,
) -> None:
    """Every row's lookup value decides who it is: where Pardot refuses custom fields in
    exports (one create refused), the changes are read by pages."""
    async with AsyncExitStack() as stack:
        _, fake, keeper, ids = await synced_account(stack, "UTC", lookup_field="org_id")
        fake.export_custom_fields = carried
        fake.update_record(fake.records[ids[3]], {"org_id": "moved"})
        await keeper.refresh(force=True)
        assert len(fake.exports.jobs) == (1 if carried else 0)
        assert fake.calls["export/create"] == 1
        assert [p.id for p in await keeper.index.holding("moved")] == [ids[3]]


async def test_a_few_hundred_changes_are_read_by_pages_at_pardots_pace() -> None:
    """Costed at the operator's pace (1,000 rows/s after a minute's queue, the default), one
    export's create, status reads and file cost more than the page or two left."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        past = fake.clock().replace(microsecond=0) - timedelta(days=3)
        ids = seed_account(fake, [{"updated_at": past}] * (SYNCED + 20))
        options = ExportOptions(
            account_zone=by_export("UTC").account_zone,
            export_zone=by_export("UTC").export_zone,
            min_prospects=10**9,
        )
        keeper = IndexKeeper(
            backend.repo,
            InMemoryProspectIndex(),
            bulk=backend.repo,  # type: ignore[arg-type]
            exports=options,
        )
        assert (await keeper.rebuild()).complete
        for prospect_id in ids[:SYNCED]:
            fake.update_record(fake.records[prospect_id], {"company": "Synced"})
        await keeper.refresh(force=True)
        assert not fake.exports.jobs


async def test_more_changes_made_while_the_export_ran_than_a_page_are_exported_again() -> None:
    """A sync writing on while the export runs: what changed meanwhile is again more than
    pages would cost, so a second export reads it, and the index ends as a scan fills it."""

    async def sync_writes_on(fake: FakePardot) -> None:
        for prospect_id in list(fake.records)[: SYNCED + 10]:
            fake.update_record(fake.records[prospect_id], {"company": "Again"})

    async with AsyncExitStack() as stack:
        backend, fake, keeper, _ = await synced_account(stack, "UTC", act=sync_writes_on)
        assert await keeper.refresh(force=True)
        assert len(fake.exports.jobs) == 2
        refreshed = await keeper.index.rows_after(0, 1_000_000)
        _, scanned, _ = await fill(backend, None)
        assert_same_index(scanned, refreshed, "UTC")
        assert {p.fields.get("company") for p in refreshed[: SYNCED + 10]} == {"Again"}
