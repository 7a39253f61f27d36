"""The rules behind "no Pardot call outlives its lease": the settings, and the batch's check."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidSettings
from entrypoints.config import load_config
from entrypoints.lease_hold import LeaseHold, LeaseLost, before_pardot_call, holding
from tests.settings import service_config

leases = st.floats(min_value=0.01, max_value=60.0)


@given(leases)
def test_the_default_call_timeout_is_well_inside_any_lease(lease: float) -> None:
    config = service_config(lease_seconds=lease)
    assert config.call_timeout_seconds <= lease * 0.75


@given(leases, st.floats(min_value=1.0, max_value=10.0))
def test_a_call_timeout_as_long_as_the_lease_is_refused(lease: float, times: float) -> None:
    with pytest.raises(
        InvalidSettings, match=r"PARDOT_CALL_TIMEOUT_SECONDS .* must be shorter than"
    ):
        load_config(
            _env_file=None,
            account_id="1",
            business_unit_id="0Uv000000000001AAA",
            lease_seconds=lease,
            call_timeout=lease * times,
        )


def test_a_call_timeout_shorter_than_the_lease_is_kept() -> None:
    assert service_config(lease_seconds=10, call_timeout=9).call_timeout_seconds == 9


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(
    lease=st.floats(min_value=1.0, max_value=60.0),
    share=st.floats(min_value=0.05, max_value=0.95),
    elapsed=st.floats(min_value=0.0, max_value=120.0),
    failing=st.booleans(),
    lost=st.booleans(),
)
def test_a_call_starts_only_while_the_lease_outlives_it(
    lease: float, share: float, elapsed: float, failing: bool, lost: bool
) -> None:
    """Without waiting: a call may start when the renewed lease has more left than the call
    may take and no renewal failed since; never once the lease may be over or taken."""

    async def check() -> bool:
        clock = Clock()
        hold = LeaseHold(lease, lease * share, clock.now, clock=clock)
        if failing:
            hold.renewal_failed()
        if lost:
            hold.lost()
        clock.now += elapsed
        try:
            with holding(hold):
                await asyncio.wait_for(before_pardot_call(), timeout=0.05)
        except LeaseLost:
            return False
        except TimeoutError:
            return False  # still waiting for a renewal: no call started
        return True

    allowed = asyncio.run(check())
    # What is left, in the clock's own arithmetic: at the boundary (1.0 - 0.05 against
    # 1.0 * 0.95) rounding decides, and it must be decided as the hold does.
    start = Clock().now
    left = start + lease - (start + elapsed)
    assert allowed == (not failing and not lost and left > lease * share)


async def test_a_call_waits_for_the_renewal_that_is_due_then_starts() -> None:
    clock = Clock()
    hold = LeaseHold(10.0, 5.0, clock.now, clock=clock)
    clock.now += 6.0  # 4 s left: too little for a 5 s call
    waiting = asyncio.create_task(hold.before_call())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    hold.renewed(clock.now)
    await asyncio.wait_for(waiting, 1.0)


async def test_a_failed_renewal_stops_a_waiting_call() -> None:
    clock = Clock()
    hold = LeaseHold(10.0, 5.0, clock.now, clock=clock)
    clock.now += 6.0
    waiting = asyncio.create_task(hold.before_call())
    await asyncio.sleep(0.01)
    hold.renewal_failed()
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(waiting, 1.0)


async def test_outside_a_batch_calls_are_not_checked() -> None:
    await asyncio.wait_for(before_pardot_call(), 0.1)
