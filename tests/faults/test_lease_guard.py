"""A batch whose lease cannot be renewed starts no new Pardot call.

The whole delivery path is real (the container's worker, its SQLite queue, the HTTP repository
against the fake Pardot over HTTP); only the lease renewals fail, from a chosen moment, as they
do when the store stops answering this node while its other connections (Pardot's slots, the
daily budget) still work, or answer too slowly. The batch needs four Pardot writes one after
the other (one slot, 50 creates a call): the first is in flight when renewals start failing,
and none may begin after the first failure. The events are not lost: once renewals work again
they are delivered, one prospect per person.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from dependency_injector import providers

from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from domain.ports import EventQueue
from entrypoints.container import Container, opened
from entrypoints.worker import WorkerOptions
from tests.faults.flow import identify
from tests.settings import service_config

PEOPLE = 200  # four creates of 50, one after another
# Two batches of four creates each, taking turns at one slot: the other batch still has calls
# to make when the failing one's next renewal fails, however late a loaded machine runs it.
TWO_BATCHES = 400
SENDING = 0.1  # a call that passed the lease check just before the failure reaches Pardot later


class RenewalsFail:
    """The worker's queue, whose `renew` fails once `failing` is set (and works once it is not)."""

    def __init__(self, inner: EventQueue) -> None:
        self._inner = inner
        self.failing = False
        self.first_failure: float | None = None

    async def renew(self, lease: str, lease_seconds: float) -> int:
        if self.failing:
            self.first_failure = self.first_failure or time.monotonic()
            raise ConnectionError("the store does not answer")
        return await self._inner.renew(lease, lease_seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_no_pardot_call_starts_once_the_lease_cannot_be_renewed(tmp_path: Path) -> None:
    fake = FakePardot(version=4)
    fake.journal = []
    fake.latency = 0.5
    async with running_fake_pardot(fake) as pardot:
        container = Container(
            config=service_config(
                api_version="4",
                queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
                pardot_base_url=pardot.url,
                salesforce_login_url=pardot.url,
                salesforce_client_id=DEFAULT_CLIENT_ID,
                salesforce_client_secret=DEFAULT_CLIENT_SECRET,
                salesforce_refresh_token=DEFAULT_REFRESH_TOKEN,
                token_file=str(tmp_path / "tokens.json"),
                lease_seconds=2.0,  # a call may take 1.5 s; a renewal every 0.5 s
                max_concurrency=1,
                retry_initial_seconds=0.01,
            )
        )
        async with opened(container):
            queue = RenewalsFail(await container.queue.async_())
            container.queue.override(providers.Object(queue))
            worker = await container.worker.async_()
            await queue.put([identify(person, 0) for person in range(PEOPLE)])
            working = asyncio.create_task(worker.run_once())
            while not [e for e in fake.journal if e.operation == "batchCreate"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            queue.failing = True
            settled_while_failing = await working
            failed_at = queue.first_failure
            assert failed_at is not None
            late = [
                e.received - failed_at for e in fake.journal if e.received > failed_at + SENDING
            ]
            creates = len([e for e in fake.journal if e.operation == "batchCreate"])
            queue.failing = False
            for _ in range(50):
                if (await queue.counts()).get("delivered", 0) == PEOPLE:
                    break
                await worker.run_once()
                await asyncio.sleep(0.05)
            counts = await queue.counts()

    print(
        f"\nrenewals failed while the batch worked: {creates} create call(s) made, "
        f"{len(late)} begun after the first failed renewal; then delivered "
        f"{counts.get('delivered', 0)} of {PEOPLE}"
    )
    assert not late, f"Pardot calls began {late} s after the lease could not be renewed"
    assert creates < PEOPLE // 50
    assert settled_while_failing == PEOPLE  # handed back as retries, not lost
    assert counts.get("delivered", 0) == PEOPLE
    emails = sorted(p["email"] for p in fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(PEOPLE))


class OneLeaseFails:
    """The worker's queue, where renewing one chosen lease fails; it notes each lease's people
    and how each lease's events were settled."""

    def __init__(self, inner: EventQueue) -> None:
        self._inner = inner
        self.people: dict[str, set[str]] = {}  # lease -> the emails of its events
        self.settled: dict[str, list[str]] = {}  # lease -> the states it settled
        self.failing: str | None = None
        self.first_failure: float | None = None
        self.failing_settled: float | None = None

    async def lease(self, limit: int, lease_seconds: float) -> Any:
        leased = await self._inner.lease(limit, lease_seconds)
        if leased:
            self.people[leased[0].lease] = {e.payload["traits"]["email"] for e in leased}
        return leased

    async def renew(self, lease: str, lease_seconds: float) -> int:
        if lease == self.failing:
            self.first_failure = self.first_failure or time.monotonic()
            raise ConnectionError("the store does not answer")
        return await self._inner.renew(lease, lease_seconds)

    async def settle(self, settlements: Any) -> set[int]:
        for s in settlements.values():
            self.settled.setdefault(s.lease, []).append(s.state)
            if s.lease == self.failing and self.failing_settled is None:
                self.failing_settled = time.monotonic()
        applied: set[int] = await self._inner.settle(settlements)
        return applied

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_each_batch_in_flight_asks_its_own_lease(tmp_path: Path) -> None:
    """Two batches in flight: one's renewals fail, and only that one stops calling Pardot."""
    fake = FakePardot(version=4)
    fake.journal = []
    fake.latency = 0.3
    async with running_fake_pardot(fake) as pardot:
        container = Container(
            config=service_config(
                api_version="4",
                queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
                pardot_base_url=pardot.url,
                salesforce_login_url=pardot.url,
                salesforce_client_id=DEFAULT_CLIENT_ID,
                salesforce_client_secret=DEFAULT_CLIENT_SECRET,
                salesforce_refresh_token=DEFAULT_REFRESH_TOKEN,
                token_file=str(tmp_path / "tokens.json"),
                max_concurrency=1,  # the batches' calls take turns at one slot
            )
        )
        options = WorkerOptions(
            batch_size=TWO_BATCHES // 2,
            batches_in_flight=2,
            lease_seconds=2.0,
            call_seconds=1.5,
            idle_seconds=0.05,
            backoff_initial=0.01,
        )
        container.worker_options.override(providers.Object(options))
        async with opened(container):
            queue = OneLeaseFails(await container.queue.async_())
            container.queue.override(providers.Object(queue))
            worker = await container.worker.async_()
            await queue.put([identify(person, 0) for person in range(TWO_BATCHES)])
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))

            def calls_of(lease: str) -> list[float]:
                emails = queue.people.get(lease, set())
                return [
                    e.received
                    for e in fake.journal or ()
                    if e.operation == "batchCreate" and any(m in str(e.params) for m in emails)
                ]

            while len(queue.people) < 2 or not calls_of(next(iter(queue.people))):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            failing, other = list(queue.people)[:2]
            queue.failing = failing
            while (await queue.counts()).get("delivered", 0) < TWO_BATCHES:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            stop.set()
            await running

    failed_at, stopped_at = queue.first_failure, queue.failing_settled
    assert failed_at is not None and stopped_at is not None
    late = [t - failed_at for t in calls_of(failing) if failed_at + SENDING < t < stopped_at]
    others = [t for t in calls_of(other) if t > failed_at]
    print(
        f"\ntwo batches in flight, one's renewals failing: it began {len(late)} calls after its "
        f"first failed renewal and settled {sorted(set(queue.settled[failing]))}; the other "
        f"made {len(others)} calls after that and settled {sorted(set(queue.settled[other]))}"
    )
    assert not late, f"the failing batch began calls {late} s after its renewal failed"
    assert set(queue.settled[failing]) == {"retry"}  # handed back, delivered under a new lease
    assert set(queue.settled[other]) == {"delivered"}  # its own hold never failed
    assert others, "the other batch made no call once the first one's renewals failed"
    emails = sorted(p["email"] for p in fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(TWO_BATCHES))
