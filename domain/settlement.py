"""What becomes of one delivery attempt: settled for good, tried again later, or given up on.

A pure decision, so the retry policy is tested without a queue, a clock or a worker; the
worker only stores what `settle` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.ports import Settlement
from domain.sync import Delivered, Outcome, Rejected, RetryLater, Skipped

# 2**63 times any sane initial backoff is far past any cap; a larger power would overflow.
_MAX_DOUBLINGS = 63
# The longest wait between two attempts (DESTINATION_RETRY_MAX_SECONDS), unless set otherwise.
DEFAULT_BACKOFF_MAX = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long failed events wait, and after how many attempts they are dead-lettered."""

    max_attempts: int = 12
    backoff_initial: float = 5.0
    backoff_max: float = DEFAULT_BACKOFF_MAX

    def backoff_ceiling(self, attempts: int) -> float:
        """The longest wait after `attempts` tries: doubling from the first wait, capped."""
        doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        return min(self.backoff_max, self.backoff_initial * 2.0**doublings)

    def span(self) -> tuple[float, float]:
        """The shortest and longest time from an event's first failed attempt to its dead
        letter, when every attempt fails and Pardot names no wait: the waits after each
        attempt but the last, each between half its ceiling and the ceiling (the jitter).

        An outage shorter than the shortest span dead-letters nothing.
        """
        longest = sum(self.backoff_ceiling(a) for a in range(1, self.max_attempts))
        return longest / 2, longest


def settle(
    outcome: Outcome,
    attempts: int,
    policy: RetryPolicy,
    now: datetime,
    *,
    jitter: float = 1.0,
) -> Settlement:
    """The settlement of an event leased `attempts` times whose latest attempt gave `outcome`.

    `jitter`, drawn by the caller from [0, 1], places a backoff between half its ceiling and
    the ceiling, so events that failed together do not all come back together.
    """
    if isinstance(outcome, Delivered):
        reason = f"{outcome.reason} ({outcome.via})" if outcome.via else outcome.reason
        return Settlement(
            "delivered", reason, prospect=outcome.prospect, fields=dict(outcome.fields)
        )
    if isinstance(outcome, Skipped):
        return Settlement("skipped", outcome.reason)
    if isinstance(outcome, Rejected):
        return Settlement("rejected", outcome.reason)
    return _retry(outcome, attempts, policy, now, jitter)


def _retry(
    outcome: RetryLater, attempts: int, policy: RetryPolicy, now: datetime, jitter: float
) -> Settlement:
    if outcome.resume_at is not None:
        # The daily limit is nobody's fault: it does not spend the retry budget.
        return Settlement("retry", outcome.reason, outcome.resume_at, spent=False)
    if not outcome.spent:
        # Nor is the store's failure: the event waits as it did after its previous attempt.
        wait = policy.backoff_ceiling(max(attempts - 1, 1)) / 2 * (1 + jitter)
        return Settlement("retry", outcome.reason, now + timedelta(seconds=wait), spent=False)
    if attempts >= policy.max_attempts:
        return Settlement("dead", f"gave up after {attempts} attempts: {outcome.reason}")
    if outcome.delay is not None:
        delay = outcome.delay  # Pardot said how long
    else:
        ceiling = policy.backoff_ceiling(attempts)
        delay = ceiling / 2 * (1 + jitter)
    return Settlement("retry", outcome.reason, now + timedelta(seconds=delay))
