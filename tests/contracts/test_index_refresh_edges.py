"""Issues 20 and 21: the index's edges that a mutation of the refresh or the lookup column
would cross unseen: a change in the same Pardot second as the index's mark (the refresh bound
overlaps that second), a lookup value Pardot holds in another spelling (the index keeps the
stored form), and a store clock far from the host's (the watermark is read on the store's).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.memory.prospect_store import InMemoryProspectStore
from domain.events import parse_event
from domain.index import IndexKeeper
from domain.sync import UNCHANGED, Delivered, Rejected, RetryLater, SyncService
from tests.contracts import test_prospect_index_sync as contract
from tests.contracts.conftest import open_backend
from tests.contracts.test_prospect_index_sync import identify
from tests.domain.conftest import make_settings

make = contract.make  # the fixture: each test below on the memory and the HTTP repository


async def test_a_marketers_edit_in_the_same_pardot_second_as_the_index_mark_is_seen() -> None:
    """Pardot stamps whole seconds, and many writes share one: a refresh asks from the second
    before its mark, or it misses an edit made later within the mark's own second."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        fake.custom_fields.add("plan")
        fake.distinct_seconds = False
        second = fake.clock().replace(microsecond=0)
        fake.clock = lambda: second  # every write below shares this Pardot second
        pid = backend.seed("pat@x.io", plan="premium")
        backend.seed("sam@x.io", plan="premium")
        keeper = IndexKeeper(backend.repo, InMemoryProspectIndex())
        service = SyncService(backend.repo, make_settings(), InMemoryProspectStore(), index=keeper)
        await keeper.rebuild()  # its mark: `second`
        fake.update_record(fake.records[pid], {"plan": "basic"})  # a marketer, same second
        arrived = datetime.now(UTC).isoformat()
        [outcome] = await service.sync(
            [parse_event({**identify("m1", 1, email="pat@x.io", plan="premium"),
                          "receivedAt": arrived})]
        )  # fmt: skip
        assert isinstance(outcome, Delivered) and outcome.reason != UNCHANGED
        assert fake.get_prospect(pid)["plan"] == "premium"  # type: ignore[index]


async def test_a_lookup_value_pardot_holds_in_another_spelling_is_found_in_the_index(
    make: Any,
) -> None:
    """A marketer typed " 42 " in Pardot: the prospect holds 42 as the rules compare values
    (the stored form), so an event for 42 with another email updates it, not a new one."""
    setup = await make(lookup=True)
    holder = setup.backend.seed("ann@x.io", org_id=" 42 ")
    await setup.keeper.rebuild()
    [outcome] = await setup.send(identify("m1", 1, "u1", email="ann.work@x.io", org_id="42"))
    assert isinstance(outcome, Delivered) and outcome.prospect_id == holder
    assert [p[0] for p in setup.prospects()] == [holder]


async def test_a_lookup_value_a_marketer_moved_to_another_prospect_is_followed(
    make: Any,
) -> None:
    """Which prospect holds V is what Pardot holds: an index older than the event may name the
    prospect a marketer took V from; the event must reach the one holding V now (no write to
    the wrong prospect), though it writes anyway and so needs no refresh for being unchanged."""
    setup = await make(lookup=True)
    old = setup.backend.seed("ann@x.io", org_id="42", plan="basic")
    new = setup.backend.seed("bea@x.io", plan="basic")
    await setup.keeper.rebuild()
    setup.edit(old, org_id="7")
    setup.edit(new, org_id="42")
    [outcome] = await setup.send(identify("m1", 1, "u1", email="cid@x.io", org_id="42", plan="pro"))
    assert isinstance(outcome, Delivered) and outcome.prospect_id == new
    assert {i: f["plan"] for i, _, f in setup.prospects()} == {old: "basic", new: "pro"}


async def test_the_watermark_is_read_on_the_stores_clock_not_the_hosts() -> None:
    """The store's clock runs an hour behind this host's (another machine's database, or a
    skewed host): an event that arrived after the last refresh began, on the store's clock,
    is not decided from that refresh, however the host's clock reads."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "memory", 4)
        backend.repo.custom_field_types["plan"] = "Text"  # type: ignore[attr-defined]
        store_clock = [datetime.now(UTC) - timedelta(hours=1)]
        keeper = IndexKeeper(backend.repo, InMemoryProspectIndex(clock=lambda: store_clock[0]))
        service = SyncService(backend.repo, make_settings(), InMemoryProspectStore(), index=keeper)
        pid = backend.seed("pat@x.io", plan="premium")
        await keeper.rebuild()
        backend.repo.update(pid, plan="basic")  # type: ignore[attr-defined]
        store_clock[0] += timedelta(seconds=1)
        [outcome] = await service.sync(
            [parse_event({**identify("m1", 1, email="pat@x.io", plan="premium"),
                          "receivedAt": store_clock[0].isoformat()})]
        )  # fmt: skip
        assert isinstance(outcome, Delivered) and outcome.reason != UNCHANGED
        assert [p.fields.get("plan") for p in backend.repo.prospects()] == ["premium"]  # type: ignore[attr-defined]


async def test_both_duplicates_deleted_after_the_refresh_retry_the_event_not_reject_it(
    make: Any,
) -> None:
    """Pardot v4 keeps two prospects with one email; the index is fresh for the event, then a
    marketer deletes both before it is delivered: the write finds the one named gone, looks
    again, finds the other gone too. The event is offered again later, never dead-lettered."""
    setup = await make()
    first = setup.backend.seed("pat@x.io", plan="basic")
    second = setup.backend.seed("pat@x.io", plan="basic")
    await setup.keeper.rebuild()
    event = parse_event(
        {**identify("m1", 1, email="pat@x.io", plan="pro"), "receivedAt": setup.clock().isoformat()}
    )
    await setup.keeper.refresh(force=True)  # began after the event arrived
    setup.delete(first)
    setup.delete(second)
    [outcome] = await setup.service.sync([event])
    assert not isinstance(outcome, Rejected), outcome
    if isinstance(outcome, RetryLater):
        [outcome] = await setup.service.sync([event])
    assert isinstance(outcome, Delivered)


async def test_a_process_joining_a_complete_index_reads_the_custom_fields_once(make: Any) -> None:
    """Every node pays its own start-up reads (issue 20: nodes within 5% of one node's calls):
    the lookup field's check and the index's list of fields to pull share one call."""
    setup = await make(lookup=True)
    setup.backend.seed("ann@x.io", org_id="42")
    await setup.keeper.rebuild()
    # Another process on the same store: its own keeper and service over the shared index.
    keeper = IndexKeeper(setup.backend.repo, setup.keeper.index, lookup_field="org_id")
    settings = make_settings(api_version=4, prospect_lookup_field_id="org_id")
    service = SyncService(setup.backend.repo, settings, InMemoryProspectStore(), index=keeper)
    before = custom_field_calls(setup)
    arrived = setup.clock().isoformat()
    [outcome] = await service.sync(
        [parse_event({**identify("m1", 1, email="ann@x.io", org_id="42", plan="pro"),
                      "receivedAt": arrived})]
    )  # fmt: skip
    assert isinstance(outcome, Delivered)
    assert custom_field_calls(setup) - before == 1


def custom_field_calls(setup: Any) -> int:
    if setup.backend.fake is not None:
        return int(setup.backend.fake.calls["customField"])
    return int(setup.backend.repo.calls.get("customField", 0))
