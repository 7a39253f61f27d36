"""The retry decision, for any outcome, attempt count, policy and moment."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.settlement import RetryPolicy, settle
from domain.sync import Delivered, Rejected, RetryLater, Skipped
from tests.strategies import timestamps

reasons = st.text(max_size=30)
attempts = st.integers(min_value=1, max_value=10_000)
jitters = st.floats(min_value=0.0, max_value=1.0)
policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=50),
    backoff_initial=st.floats(min_value=0.01, max_value=600),
    backoff_max=st.floats(min_value=0.01, max_value=86_400),
)
finished = st.one_of(
    st.builds(Delivered, reasons), st.builds(Skipped, reasons), st.builds(Rejected, reasons)
)
# A failure Pardot gave no timing for: backoff decides.
plain_failures = st.builds(RetryLater, reasons)


@given(finished, attempts, policies, timestamps, jitters)
def test_a_finished_outcome_is_settled_for_good_whatever_the_attempts(
    outcome: Delivered | Skipped | Rejected,
    tries: int,
    policy: RetryPolicy,
    now: datetime,
    jitter: float,
) -> None:
    settlement = settle(outcome, tries, policy, now, jitter=jitter)
    assert settlement.state == type(outcome).__name__.lower()
    assert settlement.reason == outcome.reason and settlement.not_before is None


@given(reasons, attempts, policies, timestamps, st.integers(min_value=0, max_value=86_400))
def test_the_daily_limit_waits_for_the_reset_and_never_kills(
    reason: str, tries: int, policy: RetryPolicy, now: datetime, seconds: int
) -> None:
    resume = now + timedelta(seconds=seconds)
    settlement = settle(RetryLater(reason, resume_at=resume), tries, policy, now)
    assert (settlement.state, settlement.not_before) == ("retry", resume)


@given(plain_failures, attempts, policies, timestamps, jitters)
def test_a_failure_is_dead_exactly_when_the_attempts_are_spent(
    outcome: RetryLater, tries: int, policy: RetryPolicy, now: datetime, jitter: float
) -> None:
    settlement = settle(outcome, tries, policy, now, jitter=jitter)
    if tries >= policy.max_attempts:
        assert settlement.state == "dead" and settlement.not_before is None
        assert settlement.reason.startswith(f"gave up after {tries} attempts")
    else:
        assert settlement.state == "retry"
    assert outcome.reason in settlement.reason


@given(plain_failures, attempts, policies, timestamps, jitters)
def test_a_backoff_lies_between_half_its_ceiling_and_the_ceiling_never_past_the_cap(
    outcome: RetryLater, tries: int, policy: RetryPolicy, now: datetime, jitter: float
) -> None:
    roomy = RetryPolicy(tries + 1, policy.backoff_initial, policy.backoff_max)
    settlement = settle(outcome, tries, roomy, now, jitter=jitter)
    assert settlement.not_before is not None
    wait = (settlement.not_before - now).total_seconds()
    ceiling = roomy.backoff_ceiling(tries)
    slack = 1e-6 * max(ceiling, 1.0)  # timedelta keeps microseconds
    assert ceiling / 2 - slack <= wait <= ceiling + slack
    assert ceiling <= policy.backoff_max


@given(policies, attempts)
def test_the_ceiling_never_shrinks_as_attempts_grow(policy: RetryPolicy, tries: int) -> None:
    assert policy.backoff_ceiling(tries) <= policy.backoff_ceiling(tries + 1)
    assert policy.backoff_ceiling(1) == min(policy.backoff_initial, policy.backoff_max)


@given(reasons, attempts, policies, timestamps, st.floats(min_value=0, max_value=3600))
def test_pardots_own_retry_hint_is_followed_as_given(
    reason: str, tries: int, policy: RetryPolicy, now: datetime, delay: float
) -> None:
    roomy = RetryPolicy(tries + 1, policy.backoff_initial, policy.backoff_max)
    settlement = settle(RetryLater(reason, delay=delay), tries, roomy, now, jitter=0.3)
    assert settlement.not_before == now + timedelta(seconds=delay)
