"""The write stage holds each prospect's lock from its stamp check to its recorded write.

A store that notes, for every `stamps` read and `record`, which `hold` of `prospect:<key>`
was in force in the calling task: the read and the record of one write must happen under one
and the same hold (so no other process can check the stamps in between), with the index (the
"unchanged" path records too) and without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.pardot.in_memory import InMemoryPardot
from domain.events import parse_event
from domain.index import IndexKeeper
from domain.matching import MatchByLookup
from domain.ports import FieldStamp
from domain.sync import Delivered, SyncService
from domain.sync.context import NeedsCreate
from domain.sync.grouping import group_events
from domain.sync.locks import create_locks, lookup_lock
from domain.sync.outcomes import UNCHANGED
from tests.domain.conftest import make_settings
from tests.strategies import events, settings

# The holds in force in the current task (inherited by the tasks it gathers).
_HOLDS: contextvars.ContextVar[tuple[tuple[int, frozenset[str]], ...]] = contextvars.ContextVar(
    "holds", default=()
)
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Noted:
    op: str  # "stamps" or "record"
    prospect: str
    hold: int | None  # the hold of prospect:<prospect> in force, if any
    creating: bool  # under a create's hold (an email's lock), no prospect lock


@dataclass
class NotingStore(InMemoryProspectStore):
    notes: list[Noted] = field(default_factory=list)
    held: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        async with super().hold(keys):
            self.held.append(sorted(keys))
            number = len(self.held)
            token = _HOLDS.set((*_HOLDS.get(), (number, frozenset(keys))))
            try:
                yield
            finally:
                _HOLDS.reset(token)

    def _note(self, op: str, prospect: str) -> None:
        holds = _HOLDS.get()
        mine = [n for n, keys in holds if f"prospect:{prospect}" in keys]
        creating = any(
            "@" in key and not key.startswith(("prospect:", "lookup:"))
            for _, keys in holds
            for key in keys
        )
        self.notes.append(Noted(op, prospect, mine[-1] if mine else None, creating))

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        self._note("stamps", prospect)
        await asyncio.sleep(0)  # let the other prospects' tasks run in between
        return await super().stamps(prospect)

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        self._note("record", prospect)
        await asyncio.sleep(0)
        await super().record(prospect, stamps)


def assert_checked_and_recorded_under_one_hold(store: NotingStore) -> None:
    """Every record of a write (a create's aside) follows a read of the prospect's stamps
    under the same hold of its lock. Reads outside any hold are resolving, not checking (the
    email a link's prospect was given, say), and are not followed by a record."""
    read_under: dict[str, set[int]] = {}
    for note in store.notes:
        if note.op == "stamps":
            if note.hold is not None:
                read_under.setdefault(note.prospect, set()).add(note.hold)
        elif not note.creating:
            assert note.hold is not None, f"{note.prospect} recorded without its lock"
            assert note.hold in read_under.get(note.prospect, set()), (
                f"{note.prospect}: its stamps were not checked under the hold it is recorded in"
            )


async def with_index(store: NotingStore, config: Any, pardot: InMemoryPardot) -> SyncService:
    keeper = IndexKeeper(pardot, InMemoryProspectIndex(), lookup_field=config.lookup_field)
    await keeper.rebuild()
    return SyncService(pardot, config, store, index=keeper)


def identify(n: int, user: str, **traits: Any) -> dict[str, Any]:
    when = BASE + timedelta(seconds=n)
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": user,
        "timestamp": when.isoformat(),
        "receivedAt": when.isoformat(),
        "traits": traits,
    }


async def test_a_write_and_an_unchanged_delivery_record_under_the_lock_they_checked_under() -> None:
    pardot = InMemoryPardot(version=4, custom_fields=("plan",))
    for n in range(3):
        pardot.seed(f"p{n}@x.io", plan="old")
    store = NotingStore()
    service = await with_index(store, make_settings(), pardot)
    changed = [identify(n, f"u{n}", email=f"p{n}@x.io", plan="new") for n in range(3)]
    await service.sync([parse_event(p) for p in changed])
    again = [identify(10 + n, f"u{n}", email=f"p{n}@x.io", plan="new") for n in range(3)]
    store.notes.clear()
    outcomes = await service.sync([parse_event(p) for p in again])
    assert {o.reason for o in outcomes if isinstance(o, Delivered)} == {UNCHANGED}
    assert [n.op for n in store.notes].count("record") == 3  # the unchanged path records too
    assert_checked_and_recorded_under_one_hold(store)
    # One hold for the batch's three prospects, in sorted order.
    assert store.held[-1] == sorted(f"prospect:{p.id}" for p in pardot.prospects())


@given(st.lists(events("identify"), min_size=1, max_size=6), settings(), st.booleans())
@hsettings(max_examples=40, deadline=None)
def test_every_stamp_check_and_its_record_happen_under_one_hold_of_the_prospect(
    payloads: list[dict[str, Any]], config: Any, indexed: bool
) -> None:
    async def scenario() -> None:
        fields = ("org_id", "Org_Id", "customer_key")
        pardot = InMemoryPardot(version=config.api_version, custom_fields=fields)
        store = NotingStore()
        if indexed:
            service = await with_index(store, config, pardot)
        else:
            service = SyncService(pardot, config, store)
        for split in itertools.pairwise([0, len(payloads) // 2, len(payloads)]):
            await service.sync([parse_event(p) for p in payloads[slice(*split)]])
        assert_checked_and_recorded_under_one_hold(store)

    asyncio.run(scenario())


def test_a_create_locks_its_email_and_the_lookup_value_it_expects() -> None:
    config = make_settings(prospect_lookup_field_id="org_id")
    payload = identify(1, "u1", email="Pat@X.io", org_id="acme")
    [group] = group_events(
        [parse_event(payload)], config, destination_keys=("userId",), create_campaign_id=None
    ).groups
    assert isinstance(group.write, MatchByLookup)
    need = NeedsCreate(group, "Pat@X.io", "no prospect has org_id=acme", expect="acme")
    plain = NeedsCreate(group, "ann@x.io", "no prospect has email ann@x.io")
    assert create_locks([need, plain]) == sorted(
        ["pat@x.io", "ann@x.io", lookup_lock("org_id", "acme")]
    )
