"""Pardot down (503s and timeouts), then back: nothing dead-letters within the retry span.

The retry schedule doubles from DESTINATION_RETRY_INITIAL_SECONDS up to
DESTINATION_RETRY_MAX_SECONDS, for DESTINATION_MAX_ATTEMPTS attempts; `RetryPolicy.span`
is how long an event that fails every attempt lasts before its dead letter (the shortest and
the longest, the jitter deciding between). Time is compressed through those settings: with
the defaults the span is 73 min to 2 h 25 min; here it is seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from hypothesis import given
from hypothesis import strategies as st

from domain.settlement import RetryPolicy, settle
from domain.sync import RetryLater
from tests.faults.flow import AUTH, identify
from tests.service.conftest import Stack

PEOPLE = 60
# Compressed: waits of 0.2, 0.4, 0.8, then 1.6 s at most, 8 attempts in all.
SCHEDULE = {
    "DESTINATION_RETRY_INITIAL_SECONDS": "0.2",
    "DESTINATION_RETRY_MAX_SECONDS": "1.6",
    "DESTINATION_MAX_ATTEMPTS": "8",
    "DESTINATION_LEASE_SECONDS": "2",  # Pardot calls time out after 1.5 s
    "PARDOT_RETRY_WAIT_MAX": "0.05",  # the retries within one call, quickly spent
}
POLICY = RetryPolicy(8, 0.2, 1.6)


@given(
    policy=st.builds(
        RetryPolicy,
        max_attempts=st.integers(min_value=1, max_value=30),
        backoff_initial=st.floats(min_value=0.01, max_value=600),
        backoff_max=st.floats(min_value=0.01, max_value=86_400),
    ),
    jitters=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=30, max_size=30),
)
def test_an_event_that_always_fails_is_dead_lettered_within_the_span(
    policy: RetryPolicy, jitters: list[float]
) -> None:
    shortest, longest = policy.span()
    now = start = datetime(2026, 1, 1, tzinfo=UTC)
    for attempt in range(1, policy.max_attempts + 1):
        settlement = settle(RetryLater("down"), attempt, policy, now, jitter=jitters[attempt - 1])
        if settlement.state == "dead":
            break
        assert settlement.not_before is not None
        now = settlement.not_before
    assert settlement.state == "dead" and attempt == policy.max_attempts
    lasted = (now - start).total_seconds()
    # Each wait is a timedelta: rounded to the microsecond (0.5078125 s waits 0.507812 s).
    rounding = 1e-6 * attempt
    assert shortest * (1 - 1e-9) - rounding <= lasted <= longest * (1 + 1e-9) + rounding


def test_the_default_schedule_outlasts_an_hour() -> None:
    shortest, longest = RetryPolicy().span()
    assert timedelta(seconds=shortest) > timedelta(hours=1)
    assert round(shortest / 60) == 73 and round(longest / 60) == 145


async def post_people(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        batch = [identify(person, 0) for person in range(PEOPLE)]
        answer = await client.post(f"{url}/v1/batch", json={"batch": batch}, auth=AUTH)
        assert answer.status_code == 200, answer.text


async def test_pardot_down_shorter_than_the_span_dead_letters_nothing_and_the_backlog_drains(
    v4_stack: Stack,
) -> None:
    shortest, _ = POLICY.span()
    fake = v4_stack.fake
    service = await v4_stack.service(**SCHEDULE)
    await v4_stack.wait_until(service.url, lambda c: True)  # serving
    fake.fail_next(100_000, status=503, err_code=None)  # down: a proxy's 503s...
    fake.hang_next(3, seconds=5.0)  # ... and calls that never answer in time
    down_at = time.monotonic()
    await post_people(service.url)
    await v4_stack.wait_until(service.url, lambda c: c("retry") == PEOPLE, seconds=30)
    await asyncio.sleep(max(0.0, down_at + shortest * 0.8 - time.monotonic()))
    counts = await v4_stack.wait_until(service.url, lambda c: True)
    async with httpx.AsyncClient() as client:
        down = (await client.get(f"{service.url}/readyz")).json()
    fake.failures.clear()  # back
    back_at = time.monotonic()
    counts_after = await v4_stack.wait_until(
        service.url, lambda c: c("delivered") == PEOPLE, seconds=30
    )
    drained = time.monotonic() - back_at
    print(
        f"\nPardot down {back_at - down_at:.1f} s (the schedule's span is {shortest:.1f}-"
        f"{POLICY.span()[1]:.1f} s): {PEOPLE} accepted, dead while down {counts.get('dead', 0)}, "
        f"delivered {counts_after.get('delivered', 0)} {drained:.1f} s after it came back, "
        f"lost {PEOPLE - counts_after.get('delivered', 0)}; /readyz said {down}"
    )
    assert counts.get("dead", 0) == 0
    assert down["reason"].startswith("Pardot unreachable since "), down
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{service.url}/readyz")).status_code == 200
    assert fake.max_in_flight <= 5, "the backlog drained past Pardot's 5 calls in flight"
    assert sorted(p["email"] for p in fake.all_prospects()) == sorted(
        f"person{n}@x.io" for n in range(PEOPLE)
    )


async def test_pardot_down_longer_than_the_span_dead_letters_with_the_reason(
    v4_stack: Stack,
) -> None:
    """Six attempts: the fifth wait would be 3.2 s without the cap, and is 1.6 s at most."""
    policy = RetryPolicy(6, 0.2, 1.6)
    shortest, longest = policy.span()
    fake = v4_stack.fake
    service = await v4_stack.service(**(SCHEDULE | {"DESTINATION_MAX_ATTEMPTS": "6"}))
    fake.fail_next(100_000, status=503, err_code=None)
    down_at = time.monotonic()
    await post_people(service.url)
    longest_wait = 0.0
    async with asyncio.timeout(longest + 30):
        while (await v4_stack.wait_until(service.url, lambda c: True)).get("dead", 0) < PEOPLE:
            longest_wait = max(longest_wait, stored_wait(v4_stack.tmp / "queue.db"))
            await asyncio.sleep(0.05)
    lasted = time.monotonic() - down_at
    print(
        f"\nPardot down for good: all {PEOPLE} dead-lettered after {lasted:.1f} s (the "
        f"schedule's span is {shortest:.1f}-{longest:.1f} s); the longest wait stored "
        f"{longest_wait:.2f} s, capped at 1.6 s"
    )
    assert lasted > shortest, "dead-lettered before the schedule's span"
    assert 0.8 < longest_wait <= 1.6 + 0.1, "DESTINATION_RETRY_MAX_SECONDS did not cap the waits"


def stored_wait(queue_file: Path) -> float:
    """The longest wait the queue holds for an event to be tried again, from now."""
    with contextlib.closing(sqlite3.connect(f"file:{queue_file}?mode=ro", uri=True)) as db:
        (due,) = db.execute("SELECT max(due_at) FROM events WHERE state = 'retry'").fetchone()
    return 0.0 if due is None else due / 1e6 - time.time()
