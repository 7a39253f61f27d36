"""Issue 11: decisions from the prospect index, through either repository (memory, HTTP+fake).

Each test fails without the index: the scan, the refresh before a create, batch creates
learned from the refresh after them, change detection, the daily budget, and (issue 20)
decisions from the index only as far as it is fresh for the events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory.pardot_budget import InMemoryApiCallCounts
from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.memory.prospect_store import InMemoryProspectStore
from domain.budget import DailyBudget
from domain.events import parse_event
from domain.index import IndexKeeper
from domain.sync import UNCHANGED, Delivered, Outcome, RetryLater, SyncService
from tests.contracts.conftest import Backend, open_backend
from tests.domain.conftest import make_settings

LOOKUP = "org_id"


class Clock:
    """The store's clock: every reading moves on by a millisecond, so arrivals and refresh
    starts are ordered as the test makes them; `now += timedelta(...)` lets time pass."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@dataclass
class Setup:
    backend: Backend
    keeper: IndexKeeper
    service: SyncService
    clock: Clock
    counts: InMemoryApiCallCounts
    budget: DailyBudget

    async def send(self, *events: dict[str, Any]) -> list[Outcome]:
        """Events arriving now, stamped as the queue stamps them."""
        arrived = self.clock().isoformat()
        return await self.service.sync([parse_event({"receivedAt": arrived, **e}) for e in events])

    def calls(self) -> int:
        if self.backend.fake is not None:
            return self.backend.fake.total_calls
        return sum(self.backend.repo.calls.values())  # type: ignore[attr-defined]

    def prospects(self) -> list[tuple[int, str, dict[str, Any]]]:
        if self.backend.fake is not None:
            return [
                (p["id"], p["email"], {k: p.get(k) for k in ("org_id", "plan", "first_name")})
                for p in self.backend.fake.all_prospects()
            ]
        return [
            (p.id, p.email or "", {k: p.fields.get(k) for k in ("org_id", "plan", "first_name")})
            for p in self.backend.repo.prospects()  # type: ignore[attr-defined]
        ]

    def edit(self, prospect_id: int, **fields: str) -> None:
        """A marketer (or a form) changes a prospect in Pardot."""
        if self.backend.fake is not None:
            record = self.backend.fake.records[prospect_id]
            self.backend.fake.update_record(record, fields)
        else:
            self.backend.repo.update(prospect_id, **fields)  # type: ignore[attr-defined]

    def delete(self, prospect_id: int) -> None:
        if self.backend.fake is not None:
            self.backend.fake.delete_prospect(prospect_id)
        else:
            self.backend.repo.delete(prospect_id)  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "http"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def build(*, lookup: bool = False, version: int = 4, **options: Any) -> Setup:
            backend = await open_backend(stack, request.param, version)
            if backend.fake is not None:
                backend.fake.custom_fields.add("plan")
            else:
                backend.repo.custom_field_types["plan"] = "Text"  # type: ignore[attr-defined]
            clock = Clock()
            counts = InMemoryApiCallCounts()
            budget = DailyBudget(counts, limit=options.pop("limit", 25_000))
            keeper = IndexKeeper(
                backend.repo,
                InMemoryProspectIndex(clock=clock),
                lookup_field=LOOKUP if lookup else None,
                budget=budget,
                refresh_seconds=60,
            )
            settings = make_settings(
                api_version=version, **({"prospect_lookup_field_id": LOOKUP} if lookup else {})
            )
            service = SyncService(
                backend.repo, settings, InMemoryProspectStore(), index=keeper, **options
            )
            return Setup(backend, keeper, service, clock, counts, budget)

        yield build


def identify(message_id: str, second: int, user: str = "u1", **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": message_id,
        "userId": user,
        "timestamp": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}Z",
        "traits": traits,
    }


async def test_the_index_built_from_a_paged_scan_equals_the_accounts_prospects(make: Any) -> None:
    setup = await make(lookup=True)
    for n in range(450):  # three pages and more, over several id ranges
        setup.backend.seed(f"p{n}@x.io", org_id=str(n % 7), plan=f"plan{n}")
    setup.backend.seed("fid@x.io", fid="00Q000000000001AAA")
    report = await setup.keeper.rebuild()
    assert report.complete and report.pulled == 451
    index = setup.keeper.index
    indexed = await index.by_ids([p[0] for p in setup.prospects()])
    assert [
        (p.id, p.email, p.fields.get("org_id"), p.fields.get("plan")) for p in indexed.values()
    ] == [(i, e, f["org_id"], f["plan"]) for i, e, f in setup.prospects()]
    assert len(await index.holding("3")) == len([n for n in range(450) if n % 7 == 3])
    assert (await index.by_fid("00Q000000000001AAA")) is not None
    assert await index.count() == 451


async def test_a_scan_stopped_by_the_budget_resumes_where_it_stopped(make: Any) -> None:
    setup = await make()
    for n in range(900):
        setup.backend.seed(f"p{n}@x.io")
    await setup.counts.add(setup.budget.today(), 22_495)  # 90% of 25,000 is 22,500
    calls = setup.calls()

    async def count_call() -> None:
        await setup.counts.add(setup.budget.today())

    original = setup.backend.repo.query_page

    async def counted(query: Any) -> Any:
        await count_call()
        return await original(query)

    setup.backend.repo.query_page = counted  # type: ignore[method-assign]
    stopped = await setup.keeper.rebuild()
    assert not stopped.complete and "budget" in stopped.reason
    assert 0 < await setup.keeper.index.count() < 900
    setup.budget.limit = 50_000  # the next day
    resumed = await setup.keeper.rebuild()
    assert resumed.complete and await setup.keeper.index.count() == 900
    # Every row was pulled once: 900 rows need at most a page per range plus the probes.
    assert setup.calls() - calls <= 2 + 1 + 20 + 3


async def test_a_scan_starts_by_itself_when_it_is_cheaper_than_reading_one_by_one(
    make: Any,
) -> None:
    setup = await make()
    for n in range(1000):
        setup.backend.seed(f"p{n}@x.io")
    # 1,000 prospects: a scan costs 1000 / 200 = 5 pages and about 5 more calls, so it
    # pays once more than 10 events needed reading one by one, in one batch or over several.
    for batch in ("a", "b"):
        await setup.send(
            *(identify(f"{batch}{n}", n, f"{batch}{n}", email=f"p{n}@x.io") for n in range(5))
        )
        assert not await setup.keeper.ready()
    await setup.send(identify("c", 1, "c", email="p1@x.io"))
    assert await setup.keeper.ready() and await setup.keeper.index.count() == 1000


async def test_known_people_cost_a_batch_write_and_no_read(make: Any) -> None:
    setup = await make()
    for n in range(100):
        setup.backend.seed(f"p{n}@x.io", plan="old")
    await setup.keeper.rebuild()
    before = setup.calls()
    outcomes = await setup.send(
        *(identify(f"m{n}", n, f"u{n}", email=f"p{n}@x.io", plan="new") for n in range(100))
    )
    assert all(isinstance(o, Delivered) for o in outcomes)
    # Two batches of 50, and a refresh first: "the latest with email E" needs an index fresh
    # for these events (its changes page and its recycle-bin page).
    assert setup.calls() - before <= 2 + 2
    assert {f["plan"] for _, _, f in setup.prospects()} == {"new"}


async def test_an_identical_event_is_unchanged_until_someone_edits_the_prospect(
    make: Any,
) -> None:
    setup = await make()
    pid = setup.backend.seed("pat@x.io", plan="old")
    await setup.keeper.rebuild()
    [first] = await setup.send(identify("m1", 1, email="pat@x.io", plan="pro"))
    assert isinstance(first, Delivered) and first.reason != UNCHANGED
    # Arrived before the refresh that followed the write began: decided without a call.
    second = parse_event({**identify("m2", 2, email="pat@x.io", plan="pro"),
                          "receivedAt": setup.clock().isoformat()})  # fmt: skip
    await setup.keeper.refresh(force=True)
    before = setup.calls()
    assert await setup.service.sync([second]) == [Delivered(UNCHANGED, pid)]
    assert setup.calls() == before
    setup.edit(pid, plan="basic")  # a marketer's edit, before the next event arrives
    [third] = await setup.send(identify("m3", 3, email="pat@x.io", plan="pro"))
    assert isinstance(third, Delivered) and third.reason != UNCHANGED
    assert [f["plan"] for _, _, f in setup.prospects()] == ["pro"]


async def test_change_detection_can_be_turned_off(make: Any) -> None:
    setup = await make(change_detection=False)
    setup.backend.seed("pat@x.io", plan="pro")
    await setup.keeper.rebuild()
    before = setup.calls()
    [outcome] = await setup.send(identify("m1", 1, email="pat@x.io", plan="pro"))
    assert isinstance(outcome, Delivered) and outcome.reason != UNCHANGED
    assert setup.calls() > before


async def test_a_prospect_a_form_created_meanwhile_is_updated_not_duplicated(make: Any) -> None:
    setup = await make()
    setup.backend.seed("someone@x.io")
    await setup.keeper.rebuild()
    form = setup.backend.seed("pat@x.io", first_name="Pat")  # after the scan, by a form
    [outcome] = await setup.send(identify("m1", 1, email="pat@x.io", plan="pro"))
    assert isinstance(outcome, Delivered) and f"updated prospect {form}" in outcome.reason
    assert [(e, f["plan"]) for _, e, f in setup.prospects() if e == "pat@x.io"] == [
        ("pat@x.io", "pro")
    ]


async def test_a_prospect_deleted_in_pardot_is_dropped_and_the_event_resolved_again(
    make: Any,
) -> None:
    setup = await make()
    gone = setup.backend.seed("pat@x.io", plan="old")
    await setup.keeper.rebuild()
    setup.delete(gone)
    [outcome] = await setup.send(identify("m1", 1, email="pat@x.io", plan="pro"))
    assert isinstance(outcome, Delivered) and "created prospect" in outcome.reason
    assert await setup.keeper.index.by_ids([gone]) == {}
    [(new, email, fields)] = [p for p in setup.prospects() if p[0] != gone]
    assert (new, email, fields["plan"]) == (outcome.prospect_id, "pat@x.io", "pro")


async def test_new_people_are_created_in_batches_and_learned_from_the_next_refresh(
    make: Any,
) -> None:
    setup = await make(lookup=True)
    await setup.keeper.rebuild()
    await setup.service.prepare()  # reads the account's custom fields once
    before = setup.calls()
    outcomes = await setup.send(
        *(identify(f"m{n}", n, f"u{n}", email=f"n{n}@x.io", org_id=f"o{n}") for n in range(120))
    )
    assert all(isinstance(o, Delivered) and "created" in o.reason for o in outcomes)
    # A refresh before creating (changes and recycle bin), three batchCreates of <= 50, and
    # the refresh after them that learns the 120 new ids (one page each).
    assert setup.calls() - before <= 2 + 3 + 2
    assert len(setup.prospects()) == 120 and await setup.keeper.index.count() == 120
    again = await setup.send(
        *(
            identify(f"x{n}", 200 + n, f"u{n}", email=f"n{n}@x.io", org_id=f"o{n}")
            for n in range(120)
        )
    )
    assert all(o == Delivered(UNCHANGED, o.prospect_id) for o in again if isinstance(o, Delivered))
    assert len(setup.prospects()) == 120


@pytest.mark.parametrize("after_call", [True, False])
async def test_a_create_batch_whose_answer_was_lost_does_not_create_twice(
    after_call: bool,
) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        keeper = IndexKeeper(backend.repo, InMemoryProspectIndex())
        service = SyncService(backend.repo, make_settings(), InMemoryProspectStore(), index=keeper)
        await keeper.rebuild()
        backend.fake.answer_next(1, "gateway", after_call=after_call, operation="batchCreate")
        events = [parse_event(identify(f"m{n}", n, f"u{n}", email=f"n{n}@x.io")) for n in range(3)]
        first = await service.sync(events)
        if after_call:  # Pardot did create them: the query finds them
            assert all(isinstance(o, Delivered) for o in first)
        else:
            assert all(isinstance(o, RetryLater) for o in first)
            assert backend.fake.all_prospects() == []
            second = await service.sync(events)
            assert all(isinstance(o, Delivered) for o in second)
        assert sorted(p["email"] for p in backend.fake.all_prospects()) == [
            "n0@x.io",
            "n1@x.io",
            "n2@x.io",
        ]
        assert backend.fake.calls["batchCreate"] == (1 if after_call else 2)


async def test_the_budget_stops_a_scan_before_it_stops_live_deliveries(make: Any) -> None:
    setup = await make(limit=1000)
    pid = setup.backend.seed("pat@x.io")
    await setup.counts.add(setup.budget.today(), 901)  # past the 90% scans may use
    report = await setup.keeper.rebuild()
    assert not report.complete and await setup.keeper.index.count() == 0
    [outcome] = await setup.send(
        identify("m1", 1, email="pat@x.io", plan="pro", integrations={"Pardot": {"id": pid}})
    )
    assert isinstance(outcome, Delivered)
    assert [f["plan"] for _, _, f in setup.prospects()] == ["pro"]


async def test_a_refresh_before_a_create_waits_for_tomorrow_when_only_writes_may_spend(
    make: Any,
) -> None:
    setup = await make(limit=1000)
    setup.backend.seed("pat@x.io", plan="old")
    await setup.keeper.rebuild()
    await setup.send(identify("m0", 0, "u2", email="pat@x.io"))  # u2 is linked to pat's
    await setup.counts.add(setup.budget.today(), 960)  # past the 95% reads may use
    new, known = await setup.send(
        identify("m1", 1, "u1", email="new@x.io"),
        identify("m2", 2, "u2", email="pat@x.io", plan="x"),
    )
    assert isinstance(new, RetryLater) and new.delay is not None and new.delay > 0
    assert isinstance(known, Delivered)


# -- issue 20: decide from the index only as far as it is fresh ------------------------------


@pytest.mark.parametrize("refreshed_since_the_edit", [True, False])
async def test_a_marketers_edit_before_the_events_arrived_is_overwritten(
    make: Any, refreshed_since_the_edit: bool
) -> None:
    """20 members synced; a marketer changes 3 in Pardot (in the same Pardot second as the
    sync's own writes); the same 20 identify calls arrive again: Pardot ends holding all 20."""
    setup = await make()
    ids = [setup.backend.seed(f"m{n}@x.io", plan="none") for n in range(20)]
    await setup.keeper.rebuild()
    events = [identify(f"a{n}", n, f"u{n}", email=f"m{n}@x.io", plan="premium") for n in range(20)]
    assert all(isinstance(o, Delivered) for o in await setup.send(*events))
    for pid in ids[:3]:
        setup.edit(pid, plan="basic")
    if refreshed_since_the_edit:
        await setup.keeper.refresh(force=True)
    before = setup.calls()
    again = [{**e, "messageId": f"b{n}"} for n, e in enumerate(events)]
    outcomes = await setup.send(*again)
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert {f["plan"] for _, _, f in setup.prospects()} == {"premium"}
    # One batch write of the three; a refresh (two pages) first when the index was stale.
    assert setup.calls() - before <= (1 if refreshed_since_the_edit else 2 + 1)


async def test_a_stale_index_rides_values_in_a_write_made_anyway_rather_than_refresh(
    make: Any,
) -> None:
    setup = await make()
    ids = [setup.backend.seed(f"m{n}@x.io", plan="none") for n in range(3)]
    await setup.keeper.rebuild()
    await setup.send(
        *(identify(f"a{n}", n, f"u{n}", email=f"m{n}@x.io", plan="x") for n in range(3))
    )
    setup.edit(ids[0], plan="basic")  # the stale index still says "x"
    before = setup.calls()
    outcomes = await setup.send(
        identify("b0", 10, "u0", email="m0@x.io", plan="x"),
        identify("b1", 11, "u1", email="m1@x.io", plan="x"),
        identify("b2", 12, "u2", email="m2@x.io", plan="changed"),
    )
    assert all(isinstance(o, Delivered) and o.reason != UNCHANGED for o in outcomes)
    assert setup.calls() - before == 1  # one batch of three rows, no refresh
    assert [f["plan"] for _, _, f in setup.prospects()] == ["x", "x", "changed"]


async def test_an_audience_sent_twice_costs_a_refresh_on_the_second_pass(make: Any) -> None:
    setup = await make()
    await setup.keeper.rebuild()
    members = [identify(f"a{n}", n, f"u{n}", email=f"m{n}@x.io", plan="yes") for n in range(1000)]
    for start in range(0, 1000, 500):  # as the worker leases them
        await setup.send(*members[start : start + 500])
    assert len(setup.prospects()) == 1000
    before = setup.calls()
    second = [{**e, "messageId": f"b{n}"} for n, e in enumerate(members)]
    second.append(identify("new", 5, "new", email="new@x.io", plan="yes"))
    outcomes = []
    for start in range(0, 1001, 500):
        outcomes += await setup.send(*second[start : start + 500])
    assert sum(isinstance(o, Delivered) and o.reason == UNCHANGED for o in outcomes) == 1000
    assert len(setup.prospects()) == 1001
    assert setup.calls() - before <= 10


async def test_processes_sharing_a_store_share_one_refresh(make: Any) -> None:
    setup = await make()
    await setup.keeper.rebuild()
    shared = asyncio.Lock()  # the store's refresh lock, as every process sees it

    @contextlib.asynccontextmanager
    async def refresh_lock() -> AsyncIterator[None]:
        async with shared:
            yield

    index = setup.keeper.index
    keepers = [IndexKeeper(setup.backend.repo, index, refresh_lock=refresh_lock) for _ in range(3)]
    arrived = setup.clock()
    pid = setup.backend.seed("pat@x.io", plan="new")  # a form, before the events arrived
    before = setup.calls()
    await asyncio.gather(*(keeper.refresh_for(arrived) for keeper in keepers))
    assert setup.calls() - before == 2  # one refresh: its changes page and recycle-bin page
    assert all([await keeper.fresh_for(arrived) for keeper in keepers])
    assert pid in await index.by_ids([pid])
    assert not await keepers[0].fresh_for(setup.clock())  # a later arrival needs another


async def test_more_than_a_page_created_in_one_pardot_second_is_all_learned() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        backend.fake.distinct_seconds = False  # Pardot stamps a burst with one second
        second = backend.fake.clock().replace(microsecond=0)
        backend.fake.clock = lambda: second
        keeper = IndexKeeper(backend.repo, InMemoryProspectIndex())
        service = SyncService(backend.repo, make_settings(), InMemoryProspectStore(), index=keeper)
        await keeper.rebuild()
        events = [
            parse_event(identify(f"m{n}", n, f"u{n}", email=f"n{n}@x.io")) for n in range(250)
        ]
        outcomes = await service.sync(events)
        assert all(isinstance(o, Delivered) and "created" in o.reason for o in outcomes)
        assert await keeper.index.count() == 250
        assert len({o.prospect_id for o in outcomes if isinstance(o, Delivered)}) == 250


async def test_a_changed_lookup_setting_recomputes_the_index_before_any_decision(
    make: Any,
) -> None:
    """The index was filled for `org_id`; the setting then names `plan`: an event for plan=42
    must not update the prospect whose org_id is 42."""
    setup = await make(lookup=True)
    org = setup.backend.seed("org@x.io", org_id="42", plan="basic")
    mine = setup.backend.seed("plan@x.io", org_id="7", plan="42")
    await setup.keeper.rebuild()
    assert [p.id for p in await setup.keeper.index.holding("42")] == [org]
    keeper = IndexKeeper(setup.backend.repo, setup.keeper.index, lookup_field="plan")
    settings = make_settings(api_version=4, prospect_lookup_field_id="plan")
    service = SyncService(setup.backend.repo, settings, InMemoryProspectStore(), index=keeper)
    arrived = setup.clock().isoformat()
    [outcome] = await service.sync(
        [parse_event({**identify("m1", 1, email="plan@x.io", plan="42", first_name="P"),
                      "receivedAt": arrived})]
    )  # fmt: skip
    assert isinstance(outcome, Delivered) and outcome.prospect_id == mine
    assert [p.id for p in await setup.keeper.index.holding("42")] == [mine]
    state = await setup.keeper.index.state()
    assert (state.lookup_field, state.lookup_type) == ("plan", "Text")


@pytest.mark.parametrize("marked", [True, False])
async def test_a_create_never_learned_is_found_before_creating_again(
    make: Any, marked: bool
) -> None:
    """A process created a prospect and died before learning it; a refresh that began before
    that create (after the event arrived) finished without it. The `creating:` mark it left
    makes the next create of that email refresh from a moment after its lock."""
    setup = await make()
    await setup.keeper.rebuild()
    store = InMemoryProspectStore()
    service = SyncService(setup.backend.repo, make_settings(), store, index=setup.keeper)
    event = parse_event(
        {**identify("m1", 1, email="new@x.io"), "receivedAt": setup.clock().isoformat()}
    )
    began = setup.clock()  # the refresh that began before the dead process's create
    made = setup.backend.seed("new@x.io")
    state = await setup.keeper.index.state()
    await setup.keeper.index.save_state(replace(state, watermark_began=began))
    if marked:
        await store.link({"creating:new@x.io": "pending"})
    [outcome] = await service.sync([event])
    assert isinstance(outcome, Delivered)
    if marked:
        assert outcome.prospect_id == made and len(setup.prospects()) == 1
    else:  # what the mark prevents: the index is fresh for the event, and lacks the prospect
        assert "created prospect" in outcome.reason and len(setup.prospects()) == 2


async def test_a_create_never_learned_under_a_lookup_value_is_found_by_another_email(
    make: Any,
) -> None:
    """The same for a lookup value: the dead process created V's holder under another email."""
    setup = await make(lookup=True)
    await setup.keeper.rebuild()
    store = InMemoryProspectStore()
    settings = make_settings(api_version=4, prospect_lookup_field_id=LOOKUP)
    service = SyncService(setup.backend.repo, settings, store, index=setup.keeper)
    arrived = setup.clock().isoformat()
    event = parse_event({**identify("m1", 1, email="two@x.io", org_id="V"), "receivedAt": arrived})
    began = setup.clock()
    made = setup.backend.seed("one@x.io", org_id="V")
    state = await setup.keeper.index.state()
    await setup.keeper.index.save_state(replace(state, watermark_began=began))
    await store.link({f"creating:lookup:{LOOKUP}=V": "pending"})
    [outcome] = await service.sync([event])
    assert isinstance(outcome, Delivered) and outcome.prospect_id == made
    assert len(setup.prospects()) == 1
