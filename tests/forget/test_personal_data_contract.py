"""Forgetting a person in each store (memory, SQLite, PostgreSQL): one contract.

The person has events waiting, in flight, delivered and dead, history rows, field stamps,
identity links and create marks holding their email in plain text; another person's events,
links and stamps sit beside them, one of those events even mentioning the person's userId in
a trait. A dry run removes nothing; a forget removes exactly the person's, in one go, and
suppresses their digests; afterwards the SQL stores hold neither email nor userId anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.personal_data import InMemoryPersonalData
from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.stores import PostgresStores
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.stores import SQLiteStores
from domain.forget import digests, event_identities
from domain.ports import FieldStamp, HistoryEntry, Person, Removed, Settlement
from tests.forget.scan import file_bytes_hits, postgres_hits, sqlite_hits
from tests.postgres import fresh_schema
from tests.queue.conftest import Clock

EMAIL, USER, ANONYMOUS = "Gone.Person@x.io", "u-gone-4711", "a-gone-0815"
PERSON = Person(
    frozenset({f"user:{USER}", f"anonymous:{ANONYMOUS}", f"email:{EMAIL.lower()}"}),
    frozenset({"1001"}),
)


@dataclass
class Store:
    kind: str
    queue: Any
    store: Any
    history: Any  # None in memory: no delivery history is kept there
    data: Any
    path: Path | None = None
    url: str | None = None


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    clock = Clock()
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "memory":
            queue, store = InMemoryEventQueue(clock=clock), InMemoryProspectStore()
            yield Store("memory", queue, store, None, InMemoryPersonalData(queue, store))
            return
        if request.param == "sqlite":
            path = tmp_path / "store.db"
            database = SQLiteDatabase(path)
            stack.push_async_callback(database.close)
            stores: Any = SQLiteStores(database)
            url = None
        else:
            url = stack.enter_context(fresh_schema())
            stores = PostgresStores(await stack.enter_async_context(PostgresDatabase(url)))
            path = None
        queue = stores.queue(max_pending=None)
        queue._clock = clock  # leases and settlements on the test's clock
        history = stores.history(retention=timedelta(days=7), clock=clock)
        yield Store(
            request.param,
            queue,
            stores.prospect_store(),
            history,
            stores.personal_data(),
            path,
            url,
        )


def identify(message_id: str, **event: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, **event}


async def fill(backend: Store) -> None:
    """The person's events in every state, another person's beside them."""
    queue = backend.queue
    await queue.put(
        [
            identify("gone-1", userId=USER, traits={"email": EMAIL, "first_name": "Gone"}),
            identify("gone-2", userId=USER, traits={"first_name": "Dead"}),
            identify("gone-3", userId=USER, context={"traits": {"email": EMAIL}}),
            identify("keep-1", userId="u-keep", traits={"email": "keep@x.io", "friend": USER}),
        ]
    )
    leased = {item.payload["messageId"]: item for item in await queue.lease(100, 600)}
    await queue.settle(
        {
            leased["gone-1"].id: Settlement("delivered", "ok", prospect="1001"),
            leased["gone-2"].id: Settlement("dead", f"Pardot error 4: {EMAIL} refused"),
            leased["keep-1"].id: Settlement("delivered", "ok", prospect="2002"),
        }
    )  # gone-3 stays leased: a worker is delivering it
    await queue.put(
        [
            identify("gone-4", anonymousId=ANONYMOUS, traits={"city": "Bern"}),
            identify("keep-2", userId="u-keep-2", traits={"email": "keep2@x.io"}),
        ]
    )
    store = backend.store
    await store.link(
        {
            f"user:{USER}": "1001",
            f"anonymous:{ANONYMOUS}": "1001",
            "lookup:org_id=acme": "1001",
            "fid:00Q5e00000AbCdEfGH": "1001",
            f"creating:{EMAIL.lower()}": "pending",
            "creating:lookup:org_id=acme": "pending",
            f"creating:lookup:org_id={USER}": "pending",
            "user:u-keep": "2002",
            "creating:keep2@x.io": "pending",
        }
    )
    now = datetime(2024, 5, 1, tzinfo=UTC)
    await store.record(
        "1001", {"email": FieldStamp(EMAIL, now), "first_name": FieldStamp("G", now)}
    )
    await store.record("2002", {"email": FieldStamp("keep@x.io", now)})
    if backend.history is not None:
        await backend.history.record(
            [
                HistoryEntry(now, "delivered", "ok", "gone-1", USER, EMAIL.lower(), "1001"),
                HistoryEntry(now, "rejected", f"invalid: {EMAIL}", "gone-9"),
                HistoryEntry(now, "delivered", "ok", "keep-1", "u-keep", "keep@x.io", "2002"),
            ]
        )


EXPECTED = Removed(waiting=1, in_flight=1, settled=1, dead=1, stamps=2, links=7)


async def snapshot(backend: Store) -> dict[str, Any]:
    queue, store = backend.queue, backend.store
    states = await queue.counts()
    identities = [
        f"user:{USER}",
        "user:u-keep",
        "creating:keep2@x.io",
        f"creating:{EMAIL.lower()}",
        "lookup:org_id=acme",
    ]
    seen: dict[str, Any] = {
        "states": {k: v for k, v in states.items() if v},
        "links": await store.links(identities),
        "stamps": {k: await store.stamps(k) for k in ("1001", "2002")},
        "dead": [row["messageId"] for row in await queue.recent("dead")],
    }
    if backend.history is not None:
        seen["history"] = await backend.history.touching(
            prospects=["1001", "2002"], user_ids=[USER, "u-keep"], emails=[EMAIL], limit=50
        )
    return seen


async def test_a_dry_run_counts_everything_and_removes_nothing(backend: Store) -> None:
    await fill(backend)
    before = await snapshot(backend)
    removed = await backend.data.forget(PERSON, suppress={"d1"}, dry_run=True)
    history = 2 if backend.history is not None else 0
    assert removed == Removed(**{**EXPECTED.as_dict(), "history": history})
    assert await snapshot(backend) == before
    assert await backend.data.everyone() == frozenset()


async def test_a_forget_removes_exactly_the_persons_data_and_suppresses_them(
    backend: Store,
) -> None:
    await fill(backend)
    salt = await backend.data.salt()
    assert len(salt) == 32 and salt == await backend.data.salt()  # made once, kept
    suppress = digests(salt, PERSON.identities)
    removed = await backend.data.forget(PERSON, suppress=suppress, dry_run=False)
    history = 2 if backend.history is not None else 0
    assert removed == Removed(**{**EXPECTED.as_dict(), "history": history})
    after = await snapshot(backend)
    # The other people's: one delivered, one waiting, their links, stamps and history.
    assert after["states"] == {"delivered": 1, "pending": 1}
    assert after["links"] == {"user:u-keep": "2002", "creating:keep2@x.io": "pending"}
    assert after["stamps"]["1001"] == {} and "email" in after["stamps"]["2002"]
    assert after["dead"] == []
    if backend.history is not None:
        assert [e.message_id for e in after["history"]] == ["keep-1"]
    left = [item.payload for item in await backend.queue.lease(100, 600)]
    assert [p["messageId"] for p in left] == ["keep-2"]
    assert await backend.data.suppressed(suppress | {"other"}) == set(suppress)
    assert await backend.data.everyone() == suppress
    # Forgotten once: a second forget finds nothing, and lifting takes them off the list.
    assert await backend.data.forget(PERSON, suppress=suppress, dry_run=False) == Removed()
    assert await backend.data.lift(suppress) == 3
    assert await backend.data.everyone() == frozenset()
    # Nowhere in plain text, but in the other person's event that names the userId as a trait.
    if backend.path is not None:
        await backend.queue.close()
        assert sqlite_hits(backend.path, [EMAIL, ANONYMOUS]) == {}
        assert sqlite_hits(backend.path, [USER]) == {"events.payload": 1}
        # Nor in the file's free space or its write-ahead log (secure_delete, the WAL emptied).
        assert await backend.data.scrub() is True
        assert file_bytes_hits(backend.path, [EMAIL, ANONYMOUS]) == []
    if backend.url is not None:
        assert postgres_hits(backend.url, [EMAIL, ANONYMOUS]) == {}
        assert postgres_hits(backend.url, [USER]) == {"events.payload": 1}


async def test_the_identities_an_events_companions_carry_are_found(backend: Store) -> None:
    await fill(backend)
    found = await backend.data.identities_in_events({f"anonymous:{ANONYMOUS}"})
    assert found == {f"anonymous:{ANONYMOUS}"}
    found = await backend.data.identities_in_events({f"user:{USER}"})
    assert found == {f"user:{USER}", f"email:{EMAIL.lower()}"}  # not the friend's own
    assert await backend.data.identities_in_events({"user:nobody"}) == frozenset()


async def test_events_of_a_suppressed_person_are_dropped_whatever_their_state(
    backend: Store,
) -> None:
    await backend.queue.put([identify("a", userId=USER), identify("b", userId="u-keep")])
    [a, _] = await backend.queue.lease(10, 60)
    assert await backend.data.drop_events([a.id]) == 1
    assert await backend.data.drop_events([a.id]) == 0
    assert {k: v for k, v in (await backend.queue.counts()).items() if v} == {"leased": 1}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=st.one_of(st.none(), st.text(min_size=1, max_size=12), st.integers(0, 10**6)),
    email=st.one_of(st.none(), st.emails()),
    nested=st.booleans(),
)
def test_an_event_is_named_by_its_ids_and_email_whatever_their_spelling(
    user: str | int | None, email: str | None, nested: bool
) -> None:
    """The rule the door, the worker and every store's forget share (domain.forget)."""
    traits = {"email": email.upper() if email else email}
    event: dict[str, Any] = {"type": "identify", "userId": user}
    event["context" if nested else "traits"] = {"traits": traits} if nested else traits
    names = event_identities(event)
    if user is not None and user != "":
        assert f"user:{user}" in names
    if email is not None and "email:" + email.lower() not in names:
        # Only what the sync itself would take for an email names a person by it.
        from domain.prospect import normalise_email

        assert normalise_email(email.upper()) is None
    assert all(n.startswith(("user:", "anonymous:", "email:")) for n in names)


_PEOPLE = ["u0", "u1", "ü2", "Ü2", 'q"3', "42"]
_EMAILS = ["A@x.io", "a@x.io", "b@x.io", "c+tag@x.io"]


@st.composite
def _events(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for n in range(draw(st.integers(1, 12))):
        event: dict[str, Any] = {"type": "identify", "messageId": f"m{n}"}
        user = draw(st.sampled_from([None, *_PEOPLE]))
        anonymous = draw(st.sampled_from([None, *_PEOPLE]))
        if user is not None:
            event["userId"] = int(user) if user.isdigit() else user
        if anonymous is not None:
            event["anonymousId"] = anonymous
        if user is None and anonymous is None:
            event["anonymousId"] = "nobody"
        email = draw(st.sampled_from([None, *_EMAILS]))
        if email is not None:
            where = draw(st.sampled_from(["traits", "context"]))
            traits = {"email": email, "note": draw(st.sampled_from(_PEOPLE))}
            event[where] = {"traits": traits} if where == "context" else traits
        events.append(event)
    return events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=_events(),
    asked=st.sets(
        st.sampled_from(
            [f"user:{p}" for p in _PEOPLE]
            + [f"anonymous:{p}" for p in _PEOPLE]
            + [f"email:{e.lower()}" for e in _EMAILS]
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_a_forget_removes_exactly_the_events_naming_the_person_in_memory_and_sqlite(
    events: list[dict[str, Any]], asked: set[str]
) -> None:
    """Whatever the mix (ids as numbers, quotes, non-ASCII, the id only in another trait, the
    email in either place and any case), both stores remove the same events: exactly those
    that name one of the person's identities."""
    person = Person(frozenset(asked))
    theirs = {e["messageId"] for e in events if event_identities(e) & person.identities}

    async def remaining(queue: Any, data: Any) -> tuple[set[str], int]:
        await queue.put(events)
        removed = await data.forget(person, suppress=(), dry_run=False)
        left = {item.payload["messageId"] for item in await queue.lease(100, 60)}
        return left, removed.events

    memory_queue, memory_store = InMemoryEventQueue(), InMemoryProspectStore()
    memory = asyncio.run(remaining(memory_queue, InMemoryPersonalData(memory_queue, memory_store)))

    async def in_sqlite() -> tuple[set[str], int]:
        with tempfile.TemporaryDirectory() as folder:
            database = SQLiteDatabase(Path(folder) / "q.db")
            try:
                stores = SQLiteStores(database)
                return await remaining(stores.queue(max_pending=None), stores.personal_data())
            finally:
                await database.close()

    expected = ({e["messageId"] for e in events} - theirs, len(theirs))
    assert memory == expected
    assert asyncio.run(in_sqlite()) == expected
