"""Issue 20's rule properties with a complete index: events interleaved with changes someone
else makes in Pardot (a marketer's edit, a form creating a prospect, a delete, a merge), some
of them while a batch is being delivered.

The index is rebuilt first and its store clock is the test's: events carry `receivedAt` from
it, as the queue stamps them, and every change in Pardot is placed on it too. Properties: no
duplicate prospect, no write to the wrong prospect, and Pardot ends holding the latest event's
value unless a change made in Pardot after that event's arrival replaced it.
"""

from __future__ import annotations

import asyncio
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
from domain.sync import Delivered, RetryLater, SyncService
from tests.domain.conftest import BULK, bulk_lane, make_settings

FIELD = "plan"
PEOPLE = 3
BASE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class StoreClock:
    """The store's clock: every reading moves on by a millisecond; `wait` lets time pass."""

    def __init__(self) -> None:
        self.now = BASE

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def email(person: int) -> str:
    return f"p{person}@x.io"


@dataclass
class Arrival:
    person: int
    value: str
    arrived: datetime
    payload: dict[str, Any]


@dataclass
class Change:
    """A change made in Pardot by someone else: the values it leaves, None for a delete."""

    person: int
    at: datetime
    value: str | None


@dataclass
class World:
    version: int
    clock: StoreClock = field(default_factory=StoreClock)
    pardot: InMemoryPardot = field(init=False)
    keeper: IndexKeeper = field(init=False)
    service: SyncService = field(init=False)
    pending: list[Arrival] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    outcomes: list[tuple[Arrival, Delivered]] = field(default_factory=list)
    made_here: set[int] = field(default_factory=set)  # prospects someone else created
    # People whose prospect was deleted or merged away while a batch with their events was
    # delivered: Pardot has no "write only if not deleted since", so a write already sent may
    # restore the prospect (or, here, create one by its email) next to the merge's survivor.
    # And on v4, people a form created a prospect for while an event of theirs waited (`form`).
    raced: set[int] = field(default_factory=set)
    counter: int = 0

    def __post_init__(self) -> None:
        self.pardot = InMemoryPardot(version=self.version, custom_fields=(FIELD,))
        self.keeper = IndexKeeper(
            self.pardot, InMemoryProspectIndex(clock=self.clock), refresh_seconds=60
        )
        self.service = SyncService(
            self.pardot,
            make_settings(api_version=self.version),
            InMemoryProspectStore(),
            index=self.keeper,
            imports=bulk_lane(self.pardot, self.version) if BULK else None,
        )

    def live(self, person: int) -> list[int]:
        return [p.id for p in self.pardot.prospects() if p.email == email(person)]

    def value_of(self, prospect_id: int) -> Any:
        [prospect] = [p for p in self.pardot.prospects() if p.id == prospect_id]
        return prospect.fields.get(FIELD)

    def fresh_value(self, person: int, source: str) -> str:
        self.counter += 1
        return f"{person}:{source}{self.counter}"

    # -- what arrives at the service ------------------------------------------------------

    def arrive(self, person: int) -> None:
        value = self.fresh_value(person, "e")
        arrived = self.clock()
        payload = {
            "type": "identify",
            "messageId": f"m{self.counter}",
            "userId": f"u{person}",
            # Event times are arrivals: the latest event is the last to arrive.
            "timestamp": arrived.isoformat(),
            "receivedAt": arrived.isoformat(),
            "traits": {"email": email(person), FIELD: value},
        }
        arrival = Arrival(person, value, arrived, payload)
        self.pending.append(arrival)
        self.arrivals.append(arrival)

    async def deliver(self, count: int) -> None:
        batch, self.pending = self.pending[:count], self.pending[count:]
        if not batch:
            return
        outcomes = await self.service.sync([parse_event(a.payload) for a in batch])
        for arrival, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                self.outcomes.append((arrival, outcome))
            elif isinstance(outcome, RetryLater):
                self.pending.append(arrival)  # the queue offers it again, same arrival
            else:
                assert arrival.person in self.raced, (arrival, outcome)

    # -- what someone else does in Pardot --------------------------------------------------

    def edit(self, person: int) -> None:
        """A marketer sets the field on the person's prospects."""
        for prospect_id in self.live(person):
            value = self.fresh_value(person, "edit")
            self.pardot.update(prospect_id, **{FIELD: value})
            self.changes.append(Change(person, self.clock(), value))

    def form(self, person: int) -> None:
        """A form-fill: Pardot updates the person's prospect, or creates one when none."""
        value = self.fresh_value(person, "form")
        live = self.live(person)
        if live:
            self.pardot.update(live[-1], **{FIELD: value})
        else:
            self.made_here.add(self.pardot.seed(email(person), **{FIELD: value}))
            if self.version == 4 and any(a.person == person for a in self.pending):
                # docs/matching.md: a create is decided from an index refreshed after the
                # event arrived, not after this form: v4 takes a second prospect for the
                # email (v3 refuses it with error 9, and the service updates instead).
                self.raced.add(person)
        self.changes.append(Change(person, self.clock(), value))

    def delete(self, person: int) -> None:
        for prospect_id in self.live(person):
            self.pardot.delete(prospect_id)
            self.changes.append(Change(person, self.clock(), None))

    def merge(self, person: int) -> None:
        """A duplicate arrives (an import) and the marketer merges the person's prospect into
        it: the duplicate survives with its own value, the old one goes to the recycle bin."""
        live = self.live(person)
        if not live:
            return
        value = self.fresh_value(person, "merge")
        survivor = self.pardot.seed(email(person), **{FIELD: value})
        self.made_here.add(survivor)
        for prospect_id in live:
            self.pardot.delete(prospect_id)
        self.changes.append(Change(person, self.clock(), value))

    def change(self, kind: str, person: int) -> None:
        getattr(self, kind)(person)

    # -- the properties ---------------------------------------------------------------------

    def check_no_duplicate(self) -> None:
        for person in set(range(PEOPLE)) - self.raced:
            assert len(self.live(person)) <= 1, (person, self.pardot.prospects())

    def check_no_wrong_prospect(self) -> None:
        for prospect in self.pardot.prospects():
            value = prospect.fields.get(FIELD)
            assert value is None or prospect.email == email(int(str(value).split(":")[0]))
        emails = {r.id: r.email for r in self.pardot._records.values()}
        emails.update({r.id: r.email for r in self.pardot._recycle_bin.values()})
        for arrival, outcome in self.outcomes:
            if outcome.prospect_id is not None:
                assert emails[outcome.prospect_id] == email(arrival.person), (arrival, outcome)

    def check_latest_value(self) -> None:
        for person in set(range(PEOPLE)) - self.raced:
            mine = [a for a in self.arrivals if a.person == person]
            if not mine:
                continue
            latest = mine[-1]
            after = [c for c in self.changes if c.person == person and c.at > latest.arrived]
            live = self.live(person)
            if not after:
                assert len(live) == 1, (person, latest, self.changes)
                assert self.value_of(live[0]) == latest.value, (person, latest, self.changes)
            else:
                allowed = {latest.value} | {c.value for c in after}
                for prospect_id in live:
                    assert self.value_of(prospect_id) in allowed, (person, latest, after)


KINDS = ("edit", "form", "delete", "merge")
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(0, PEOPLE - 1)),
        st.tuples(st.just("deliver"), st.integers(1, 4)),
        st.tuples(st.sampled_from(KINDS), st.integers(0, PEOPLE - 1)),
        # A change in Pardot while a batch is delivered, after some of its calls.
        st.tuples(
            st.just("during"),
            st.tuples(st.sampled_from(("edit", "delete", "merge")), st.integers(0, PEOPLE - 1)),
            st.integers(0, 6),
        ),
        st.tuples(st.just("wait"), st.sampled_from((0.5, 1, 59, 61))),
    ),
    min_size=1,
    max_size=20,
)


async def play(version: int, seeded: list[int], script: list[Any]) -> World:
    world = World(version)
    for person in seeded:
        world.pardot.seed(email(person), **{FIELD: world.fresh_value(person, "seed")})
    report = await world.keeper.rebuild()
    assert report.complete
    for step in script:
        kind = step[0]
        if kind == "arrive":
            world.arrive(step[1])
        elif kind == "deliver":
            await world.deliver(step[1])
        elif kind == "during":
            (change, person), yields = step[1], step[2]

            if change != "edit" and any(a.person == person for a in world.pending):
                world.raced.add(person)

            async def meanwhile(
                change: str = change, person: int = person, yields: int = yields
            ) -> None:
                for _ in range(yields):
                    await asyncio.sleep(0)
                world.change(change, person)

            await asyncio.gather(world.deliver(len(world.pending)), meanwhile())
        elif kind == "wait":
            world.clock.wait(step[1])
        else:
            world.change(kind, step[1])
        world.check_no_duplicate()
    for _ in range(5):  # the queue offers what is left until it is delivered
        await world.deliver(len(world.pending))
    assert not world.pending
    return world


@given(
    st.sampled_from((3, 4)),
    st.lists(st.integers(0, PEOPLE - 1), unique=True, max_size=PEOPLE),
    steps,
)
@hsettings(max_examples=300, deadline=None)
def test_with_a_complete_index_pardot_ends_holding_the_latest_event_unless_changed_since(
    version: int, seeded: list[int], script: list[Any]
) -> None:
    world = asyncio.run(play(version, seeded, script))
    world.check_no_duplicate()
    world.check_no_wrong_prospect()
    world.check_latest_value()
