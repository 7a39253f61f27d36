"""Imports found again after a restart (domain/sync/recovery.py): whatever the moment the
process died, every event of the import ends with one outcome, no row is written twice nor
submitted again, and a newer value for one of its prospects is never overtaken by the import."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.memory.import_ledger import InMemoryImportLedger
from domain.errors import RetryableError
from domain.events import parse_event
from domain.ports import ProspectWrite
from domain.sync import Delivered, Outcome, RetryLater, SyncService
from domain.sync.import_lane import ImportLane
from tests.domain.conftest import World, bulk_lane, make_settings

Crash = Literal["open", "submitted", "finished"]
OLD_AT = "2026-01-01T00:00:00Z"
NEW_AT = "2026-01-02T00:00:00Z"


def run(coro: Any) -> None:
    asyncio.run(coro)


def identify(user: str, at: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "timestamp": at, "traits": traits}


class Process:
    """One run of the service on a shared Pardot, store and ledger: a restart is a new one."""

    def __init__(self, world: World, ledger: InMemoryImportLedger) -> None:
        self.lane: ImportLane = bulk_lane(world.pardot, world.settings.api_version)
        self.lane.ledger = ledger
        self.service = SyncService(world.pardot, world.settings, world.store, imports=self.lane)

    async def sync(self, payloads: list[dict[str, Any]], ids: list[int] | None) -> list[Outcome]:
        outcomes = await self.service.sync([parse_event(p) for p in payloads], ids=ids)
        if ids is not None:
            await self.lane.settled(ids)  # the worker, once the queue settled them
        return outcomes


async def dies_at(crash: Crash, world: World, process: Process, payloads: Any, ids: Any) -> None:
    """Run the sync until `crash`, where the process is killed (its task cancelled)."""
    if crash == "finished":
        # The import completed, but the process died before the queue settled its events.
        await process.service.sync([parse_event(p) for p in payloads], ids=ids)
        return
    name = "add_import_batch" if crash == "open" else "read_import"
    real = getattr(world.pardot, name)
    reached = asyncio.Event()

    async def forever(*args: Any) -> Any:
        reached.set()
        await asyncio.Event().wait()

    setattr(world.pardot, name, forever)
    task = asyncio.ensure_future(process.service.sync([parse_event(p) for p in payloads], ids=ids))
    reaching = asyncio.ensure_future(reached.wait())
    await asyncio.wait([task, reaching], return_when=asyncio.FIRST_COMPLETED)
    assert reached.is_set(), "the sync never reached the import"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    setattr(world.pardot, name, real)


def batch_writes(world: World) -> list[ProspectWrite]:
    """Every row written by a batch call from now on."""
    rows: list[ProspectWrite] = []
    real = world.pardot.write_batch

    async def counted(writes: Any) -> Any:
        rows.extend(writes)
        return await real(writes)

    world.pardot.write_batch = counted  # type: ignore[method-assign]
    return rows


def imported(world: World, prospect_id: int, value: str) -> int:
    """How many completed imports wrote `value` to the prospect."""
    return sum(
        1
        for job in world.pardot.bulk_imports.values()
        if job.state == "Complete"
        for row in job.rows
        if row.get("prospect_id") == str(prospect_id)
        and row.get("company") == value
        and not any(f.row.get("prospect_id") == str(prospect_id) for f in job.failed)
    )


def splits(n: int) -> st.SearchStrategy[list[int]]:
    """Which restart batch each of n events is leased in."""
    return st.lists(st.integers(0, 2), min_size=n, max_size=n)


@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.sampled_from(["open", "submitted", "finished"]),
            st.sets(st.integers(0, n - 1), max_size=n - 1),
            splits(n),
            st.integers(0, n - 1),
        )
    )
)
@hsettings(max_examples=40, deadline=None)
def test_an_import_found_again_after_a_restart_writes_each_event_once(
    case: tuple[int, Crash, set[int], list[int], int],
) -> None:
    n, crash, refused, lease_of, newer = case
    refused.discard(newer)  # the newer event names a prospect that exists

    async def scenario() -> None:
        world = World(make_settings(api_version=4))
        await world.send(*(identify(f"u{i}", OLD_AT, email=f"u{i}@x.io") for i in range(n)))
        people = {p.email: p.id for p in world.pardot.prospects()}
        ids = [people[f"u{i}@x.io"] for i in range(n)]
        for i in refused:
            world.pardot.delete(ids[i])  # the import refuses these rows
        ledger = InMemoryImportLedger()
        first = Process(world, ledger)
        old = [identify(f"u{i}", OLD_AT, company=f"old{i}") for i in range(n)]
        event_ids = [100 + i for i in range(n)]
        await dies_at(crash, world, first, old, event_ids)
        [job] = world.pardot.bulk_imports.values()
        written = batch_writes(world)

        restarted = Process(world, ledger)
        # Another person's newer event for one of the import's prospects, before recovery.
        late = [identify("x", NEW_AT, email=f"u{newer}@x.io", company="newest")]
        [early] = await restarted.sync(late, [900])
        in_flight = crash != "finished"
        assert isinstance(early, RetryLater) == in_flight, early
        outcomes: dict[int, Outcome] = {}
        for lease in range(3):
            mine = [i for i in range(n) if lease_of[i] == lease]
            found = await restarted.sync([old[i] for i in mine], [event_ids[i] for i in mine])
            outcomes.update(zip(mine, found, strict=True))
        if in_flight:
            [early] = await restarted.sync(late, [901])
        assert isinstance(early, Delivered)

        assert sorted(outcomes) == list(range(n))  # every event has its one outcome
        submitted = [
            j
            for j in world.pardot.bulk_imports.values()
            if j.state != "Open" and any(r.get("company", "").startswith("old") for r in j.rows)
        ]
        for i in range(n):
            via_import = isinstance(outcomes[i], Delivered) and outcomes[i].via
            if i in refused:
                assert not via_import, outcomes[i]
                continue
            by_batch = sum(w.fields.get("company") == f"old{i}" for w in written)
            assert imported(world, ids[i], f"old{i}") + by_batch == 1, (i, crash, outcomes[i])
            if crash != "open":
                assert via_import == f"import {job.id}" and by_batch == 0
        if crash != "open":
            assert submitted == [job]  # never submitted again, no second import of its rows
        else:
            assert job.state == "Open"  # abandoned: it expires in Pardot
        companies = {p.id: p.fields.get("company") for p in world.pardot.prospects()}
        assert companies[ids[newer]] == "newest"
        assert await ledger.unfinished() == []

    run(scenario())


async def test_a_refused_row_found_again_goes_by_a_batch_call_with_pardots_answer() -> None:
    world = World(make_settings(api_version=4))
    await world.send(*(identify(f"u{i}", OLD_AT, email=f"u{i}@x.io") for i in range(3)))
    ledger = InMemoryImportLedger()
    first = Process(world, ledger)
    [a, b, _] = sorted(p.id for p in world.pardot.prospects())
    world.pardot.delete(b)
    old = [identify(f"u{i}", OLD_AT, company="pro") for i in range(3)]
    await dies_at("submitted", world, first, old, [1, 2, 3])
    written = batch_writes(world)
    outcomes = await Process(world, ledger).sync(old, [1, 2, 3])
    assert [getattr(o, "via", None) for o in outcomes] == ["import 701", None, "import 701"]
    assert [w.key for w in written] == [str(b)]  # only the refused row, once
    assert isinstance(outcomes[0], Delivered) and f"prospect {a}" in outcomes[0].reason
    assert dict(outcomes[0].fields) == {"company": "pro"}  # what it wrote, for explain
    assert await ledger.holding([1, 2, 3]) == []  # settled: the ledger forgot them


async def test_settling_keeps_the_rows_of_an_import_not_yet_finished() -> None:
    world = World(make_settings(api_version=4))
    await world.send(*(identify(f"u{i}", OLD_AT, email=f"u{i}@x.io") for i in range(2)))
    ledger = InMemoryImportLedger()
    first = Process(world, ledger)
    old = [identify(f"u{i}", OLD_AT, company="pro") for i in range(2)]
    await dies_at("submitted", world, first, old, [1, 2])
    await first.lane.settled([1, 2])  # released at shutdown, say: nothing known yet
    [entry] = await ledger.holding([1])
    assert entry.rows[0].events == (1,) and not entry.finished
    # No email in clear: the rows name prospects and match values by digest only.
    assert all("@" not in r.match + r.prospect for r in entry.rows)


async def test_on_v3_an_import_matched_by_email_is_found_again_by_digest() -> None:
    world = World(make_settings(api_version=3))
    await world.send(*(identify(f"u{i}", OLD_AT, email=f"U{i}@x.io") for i in range(3)))
    ledger = InMemoryImportLedger()
    old = [identify(f"u{i}", OLD_AT, email=f"U{i}@x.io", company="pro") for i in range(3)]
    await dies_at("submitted", world, Process(world, ledger), old, [1, 2, 3])
    [entry] = await ledger.unfinished()
    via = f"import {entry.id}"
    assert entry.match == "email" and all("@" not in r.match + r.prospect for r in entry.rows)
    written = batch_writes(world)
    restarted = Process(world, ledger)
    late = [identify("x", NEW_AT, email="u1@x.io", company="newest")]
    [early] = await restarted.sync(late, [900])
    assert isinstance(early, RetryLater) and via in early.reason
    outcomes = await restarted.sync(old, [1, 2, 3])
    assert [getattr(o, "via", None) for o in outcomes] == [via] * 3
    [late_outcome] = await restarted.sync(late, [901])
    assert isinstance(late_outcome, Delivered)
    assert all(w.fields.get("company") != "pro" for w in written)  # nothing old twice
    assert (
        sum(r.get("company") == "pro" for j in world.pardot.bulk_imports.values() for r in j.rows)
        == 3
    )
    assert [p.fields.get("company") for p in world.pardot.prospects()] == ["pro", "newest", "pro"]


async def test_pardot_failing_the_first_reads_of_a_found_import_is_waited_out() -> None:
    world = World(make_settings(api_version=4))
    await world.send(*(identify(f"u{i}", OLD_AT, email=f"u{i}@x.io") for i in range(2)))
    ledger = InMemoryImportLedger()
    old = [identify(f"u{i}", OLD_AT, company="pro") for i in range(2)]
    await dies_at("submitted", world, Process(world, ledger), old, [1, 2])
    [entry] = await ledger.unfinished()
    real, failures = world.pardot.read_import, 2

    async def busy(import_id: int) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise RetryableError("Pardot is busy", code=66)
        return await real(import_id)

    world.pardot.read_import = busy  # type: ignore[method-assign]
    outcomes = await Process(world, ledger).sync(old, [1, 2])
    assert failures == 0 and all(getattr(o, "via", "") == f"import {entry.id}" for o in outcomes)
