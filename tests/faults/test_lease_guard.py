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
from tests.faults.flow import identify
from tests.settings import service_config

PEOPLE = 200  # four creates of 50, one after another
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
