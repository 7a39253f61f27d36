"""The delivery loop's bookkeeping: retries, dead letters, pauses, readiness."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from dependency_injector import providers

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.pardot.in_memory import InMemoryPardot
from domain.errors import ConfigurationError, DailyLimitReached, RetryableError
from domain.settings import DestinationSettings
from entrypoints.container import Container
from entrypoints.worker import DeliveryWorker, WorkerOptions
from tests.domain.conftest import make_settings
from tests.queue.conftest import Clock
from tests.settings import service_config


class Rig:
    """The container's worker, over an in-memory queue, Pardot and identity map."""

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.queue = InMemoryEventQueue(clock=self.clock)
        self.pardot = InMemoryPardot(version=3)
        self.failure: Exception | None = None
        self.container = Container(config=service_config(api_version="3"))
        self.container.override_providers(
            clock=providers.Object(self.clock),
            queue=providers.Object(self.queue),
            repository=providers.Object(self.pardot),
            prospect_store=providers.Object(InMemoryProspectStore()),
            destination=providers.Callable(self._settings),
            worker_options=providers.Object(WorkerOptions(**options)),
        )
        self.readiness = self.container.readiness()
        self.worker: DeliveryWorker

    def _settings(self) -> DestinationSettings:
        # Where the real container asks Pardot for the version: the place a setup fails.
        if self.failure is not None:
            raise self.failure
        return make_settings(api_version=3)


async def started_rig(**options: Any) -> Rig:
    made = Rig(**options)
    made.worker = await made.container.worker.async_()
    return made


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: count for state, count in counts.items() if count}


def identify(n: int, email: str | None = None) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": f"u{n}",
        "traits": {"email": email or f"u{n}@x.io"},
    }


async def test_delivered_skipped_and_rejected_are_settled_for_good() -> None:
    rig = await started_rig()
    await rig.queue.put(
        [identify(1), {**identify(2), "integrations": {"Pardot": False}}, identify(3, "bad")]
    )
    assert await rig.worker.run_once() == 3
    assert nonzero(await rig.queue.counts()) == {"delivered": 1, "skipped": 1, "rejected": 1}
    assert await rig.worker.run_once() == 0


async def test_retryable_failures_back_off_then_die_after_the_budget() -> None:
    rig = await started_rig(max_attempts=3, backoff_initial=10, backoff_max=100)

    async def busy(writes: Any) -> Any:
        raise RetryableError("busy", code=66)

    rig.pardot.write_batch = busy  # type: ignore[method-assign]
    await rig.queue.put([identify(1)])
    assert await rig.worker.run_once() == 1
    assert (await rig.queue.counts())["retry"] == 1
    assert await rig.worker.run_once() == 0  # not due yet: the wait is stored, not slept
    for _ in range(2):
        rig.clock.advance(1000)
        assert await rig.worker.run_once() == 1
    [dead] = await rig.queue.recent("dead")
    assert "gave up after 3 attempts" in dead["reason"] and "66" in dead["reason"]


async def test_the_daily_limit_pauses_the_whole_queue_without_spending_retries() -> None:
    rig = await started_rig(max_attempts=1)
    resume = rig.clock.now + timedelta(hours=5)

    async def spent(writes: Any) -> Any:
        raise DailyLimitReached("daily limit", resume_at=resume)

    original = rig.pardot.write_batch
    rig.pardot.write_batch = spent  # type: ignore[method-assign]
    await rig.queue.put([identify(1)])
    await rig.worker.run_once()
    assert await rig.queue.paused_until() == resume
    await rig.queue.put([identify(2)])
    assert await rig.worker.run_once() == 0  # paused: nothing leased
    rig.pardot.write_batch = original  # type: ignore[method-assign]
    rig.clock.advance(5 * 3600 + 1)
    assert await rig.worker.run_once() == 2
    assert (await rig.queue.counts())["delivered"] == 2


async def test_a_configuration_error_marks_unready_keeps_events_and_recovers() -> None:
    rig = await started_rig(max_attempts=1, configuration_retry=30)
    rig.failure = ConfigurationError("refresh token revoked: run pardot-destination connect")
    await rig.queue.put([identify(1)])
    for _ in range(3):  # more rounds than the retry budget: nothing dies
        await rig.worker.run_once()
        rig.clock.advance(31)
    assert not rig.readiness.ready and "connect" in rig.readiness.reason
    assert nonzero(await rig.queue.counts()) == {"retry": 1}
    rig.failure = None
    assert await rig.worker.run_once() == 1
    assert rig.readiness.ready
    assert nonzero(await rig.queue.counts()) == {"delivered": 1}


async def test_a_payload_that_no_longer_parses_is_dead_lettered_with_the_reason() -> None:
    rig = await started_rig()
    await rig.queue.put([{"type": "identify", "messageId": "x"}])
    await rig.worker.run_once()
    [dead] = await rig.queue.recent("dead")
    assert "invalid event" in dead["reason"]


async def test_finished_events_are_purged_after_the_retention_and_dead_letters_kept() -> None:
    rig = await started_rig(
        retention=timedelta(days=7), purge_every=timedelta(hours=1), max_attempts=1
    )
    await rig.queue.put([identify(1), identify(2, "bad")])
    await rig.queue.put([{"type": "identify", "messageId": "broken"}])
    await rig.worker.run_once()
    assert await rig.worker.purge_if_due() == 0  # nothing is old enough yet
    rig.clock.advance(8 * 86400)
    assert await rig.worker.purge_if_due() == 2
    assert nonzero(await rig.queue.counts()) == {"dead": 1}
    assert await rig.queue.put([identify(1)]) == 1  # outside the de-duplication window now
    assert await rig.worker.purge_if_due() == 0  # at most once per interval


async def test_the_retention_bounds_the_delivery_history_without_new_deliveries() -> None:
    """Issue 25: the history holds emails and field values; DESTINATION_RETENTION_DAYS must
    bound it as it bounds the queue, also when no event has come since (the history's own
    purge goes only with new entries)."""
    rig = await started_rig(retention=timedelta(days=7), purge_every=timedelta(hours=1))
    history = await rig.container.history.async_()
    await rig.queue.put([identify(1), identify(2)])
    await rig.worker.run_once()
    touched = {"prospects": [], "user_ids": ["u1", "u2"], "emails": []}
    assert len(await history.touching(**touched)) == 2
    await rig.worker.purge_if_due()
    assert len(await history.touching(**touched)) == 2  # within the retention: kept
    rig.clock.advance(8 * 86400)
    await rig.worker.purge_if_due()
    assert await history.touching(**touched) == []


async def test_a_shutdown_mid_batch_hands_the_leases_back_at_once() -> None:
    rig = await started_rig(lease_seconds=300)
    started = asyncio.Event()

    async def slow(writes: Any) -> Any:
        started.set()
        await asyncio.sleep(60)

    rig.pardot.write_batch = slow  # type: ignore[method-assign]
    await rig.queue.put([identify(1), identify(2)])
    task = asyncio.create_task(rig.worker.run_once())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert nonzero(await rig.queue.counts()) == {"retry": 2}
    assert len(await rig.queue.lease(10, 60)) == 2  # available now, not in five minutes


async def test_an_unexpected_error_dead_letters_only_the_people_who_cause_it() -> None:
    rig = await started_rig(max_attempts=5)
    original = rig.pardot.write_batch
    written: list[str] = []

    async def breaks_on_one_person(writes: Any) -> Any:
        if any(w.key == "u3@x.io" for w in writes):
            raise UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed")
        results = await original(writes)
        written.extend(w.key for w in writes)
        return results

    rig.pardot.write_batch = breaks_on_one_person  # type: ignore[method-assign]
    people = [identify(n) for n in range(1, 8)]
    again = {**identify(3), "messageId": "m3-again"}  # the same person's second event
    await rig.queue.put([*people, again])
    assert await rig.worker.run_once() == 8  # one round settles all: nothing comes back
    counts = nonzero(await rig.queue.counts())
    assert counts == {"delivered": 6, "dead": 2}
    dead = await rig.queue.recent("dead")
    assert {d["messageId"] for d in dead} == {"m3", "m3-again"}
    assert {d["reason"] for d in dead} == {
        "UnicodeEncodeError: 'utf-8' codec can't encode character '\\udc80' in position 0: "
        "surrogates not allowed"
    }
    assert all(d["attempts"] == 1 for d in dead)
    assert sorted(written) == sorted(f"u{n}@x.io" for n in range(1, 8) if n != 3)  # once each
    assert await rig.worker.run_once() == 0


async def test_an_error_every_part_of_the_batch_shares_blames_nobody() -> None:
    rig = await started_rig(max_attempts=5)

    async def store_down(writes: Any) -> Any:
        raise OSError("disk I/O error")

    rig.pardot.write_batch = store_down  # type: ignore[method-assign]
    await rig.queue.put([identify(n) for n in range(1, 5)])
    assert await rig.worker.run_once() == 4
    assert nonzero(await rig.queue.counts()) == {"retry": 4}
    [event, *_] = await rig.queue.recent("retry")
    assert "OSError: disk I/O error" in event["reason"]


class StolenAtSettlement(InMemoryEventQueue):
    """Another worker takes the batch over just before this one settles it (its lease ran
    out while Pardot was slow), so the queue refuses this worker's settlements."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.clock = clock
        self.stolen: list[int] = []

    async def settle(self, settlements: Any) -> set[int]:
        if not self.stolen:
            self.clock.advance(3600)
            self.stolen = [event.id for event in await self.lease(100, 30)]
        return await super().settle(settlements)


class RecordedHistory:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def record(self, rows: list[Any]) -> None:
        self.rows.extend(rows)

    async def purge(self, settled_before: Any) -> int:
        return 0


async def test_a_worker_whose_lease_was_taken_over_records_nothing_it_did_not_settle() -> None:
    rig = Rig()
    rig.queue = StolenAtSettlement(rig.clock)
    history = RecordedHistory()
    rig.container.override_providers(
        queue=providers.Object(rig.queue), history=providers.Object(history)
    )
    rig.worker = await rig.container.worker.async_()
    await rig.queue.put([identify(1), identify(2)])
    assert await rig.worker.run_once() == 0  # nothing of it counts as settled by us
    assert len(rig.queue.stolen) == 2
    assert nonzero(await rig.queue.counts()) == {"leased": 2}  # the other worker's now
    assert history.rows == []  # no "delivered" entry for a settlement that never was
