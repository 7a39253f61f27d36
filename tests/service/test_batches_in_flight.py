"""Issue 22: a worker with several batches in flight keeps per-person order and "later wins".

The real delivery loop (`DeliveryWorker.run`) over an in-memory queue, store, prospect index and
Pardot, with small batches so that one person's events are split over consecutive batches,
and `batches_in_flight` of them worked at once. Pardot's delays are drawn: each call gives way
to the event loop a drawn number of times before it acts, so batches overtake each other in
every order Hypothesis finds. One person's events come by userId, by anonymousId or by both
(two ordering keys, so two batches may hold events of one person at once: only the prospect
locks and the field stamps keep them apart); their timestamps are drawn apart from their
arrival order.

Properties: every event is delivered once; each person has one prospect; its `plan` is the
value of the person's event with the latest timestamp.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.pardot.in_memory import InMemoryPardot
from domain.index import IndexKeeper
from domain.sync import SyncService
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness
from entrypoints.worker import DeliveryWorker, WorkerOptions
from tests.domain.conftest import make_settings

PEOPLE = 3
EPOCH = datetime(2026, 12, 1, tzinfo=UTC)


@st.composite
def events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events in arrival order, each of a drawn person, identity and time (times unique)."""
    count = draw(st.integers(min_value=2, max_value=14))
    seconds = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    drawn = []
    for n, second in enumerate(seconds):
        person = draw(st.integers(0, PEOPLE - 1))
        by = draw(st.sampled_from(["user", "anonymous", "both"]))
        event: dict[str, Any] = {
            "type": "identify",
            "messageId": f"m{n}",
            "timestamp": (EPOCH + timedelta(seconds=second)).isoformat(),
            "traits": {"email": f"p{person}@x.io", "plan": f"v{n}"},
        }
        if by in ("user", "both"):
            event["userId"] = f"u{person}"
        if by in ("anonymous", "both"):
            event["anonymousId"] = f"a{person}"
        drawn.append(event)
    return drawn


async def deliver(
    payloads: list[dict[str, Any]], yields: list[int], batch_size: int, in_flight: int
) -> tuple[InMemoryPardot, dict[str, int]]:
    pardot = InMemoryPardot(
        version=4, custom_fields={"plan": "Text"}, yields=itertools.cycle(yields)
    )
    queue = InMemoryEventQueue()
    store = InMemoryProspectStore()
    keeper = IndexKeeper(pardot, InMemoryProspectIndex())
    await keeper.rebuild()
    service = SyncService(pardot, make_settings(api_version=4), store, index=keeper)

    async def sync_service() -> SyncService:
        return service

    worker = DeliveryWorker(
        queue,
        sync_service,
        readiness=Readiness(),
        metrics=Metrics(),
        options=WorkerOptions(
            batch_size=batch_size, batches_in_flight=in_flight, idle_seconds=0.001
        ),
    )
    await queue.put(payloads)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(30):
        while True:
            counts = await queue.counts()
            if not any(counts.get(state) for state in ("pending", "retry", "leased")):
                break
            await asyncio.sleep(0.001)
    stop.set()
    await running
    return pardot, {state: n for state, n in (await queue.counts()).items() if n}


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=events(),
    yields=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    batch_size=st.integers(1, 3),
    in_flight=st.integers(2, 4),
)
def test_several_batches_in_flight_keep_each_persons_latest_value(
    payloads: list[dict[str, Any]], yields: list[int], batch_size: int, in_flight: int
) -> None:
    pardot, counts = asyncio.run(deliver(payloads, yields, batch_size, in_flight))
    assert counts == {"delivered": len(payloads)}
    for person in range(PEOPLE):
        email = f"p{person}@x.io"
        mine = [p for p in payloads if p["traits"]["email"] == email]
        prospects = [p for p in pardot.prospects() if p.email == email]
        if not mine:
            assert not prospects
            continue
        assert len(prospects) == 1, prospects
        latest = max(mine, key=lambda p: p["timestamp"])
        assert prospects[0].fields.get("plan") == latest["traits"]["plan"]
