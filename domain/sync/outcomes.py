"""What the sync says about each event: Delivered, Skipped, Rejected or RetryLater.

In: a Pardot error (`outcome_of`). Out: the outcome the event gets for it. Every stage ends
in these values; the worker settles the queue from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from domain.errors import (
    AuthenticationExpired,
    DailyLimitReached,
    PardotError,
    PermanentPardotError,
    RetryableError,
)
from domain.index import BudgetShort
from domain.prospect import FieldValue

UNCHANGED = "unchanged"  # the reason of a delivery whose values Pardot already holds


@dataclass(frozen=True)
class Delivered:
    """Pardot holds what the event says. `fields` is what this event wrote (empty: nothing
    needed writing, the event was unchanged); `prospect` is the store's prospect key."""

    reason: str
    prospect_id: int | None = None
    # For the operator's "why?" (explain, history): not part of what the outcome means.
    fields: Mapping[str, FieldValue] = field(default_factory=dict, compare=False)
    prospect: str | None = field(default=None, compare=False)
    via: str = field(default="", compare=False)  # the Pardot import that wrote it, if any

    @property
    def unchanged(self) -> bool:
        return not self.fields


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Rejected:
    reason: str


@dataclass(frozen=True)
class RetryLater:
    """Try again later: after `delay` seconds if Pardot said so, or at `resume_at`."""

    reason: str
    delay: float | None = None
    resume_at: datetime | None = None
    # False when the failure was not the event's (the store unreachable): no attempt spent.
    spent: bool = True


Outcome = Delivered | Skipped | Rejected | RetryLater


def refused(error: PardotError | BudgetShort) -> Outcome:
    """The outcome of events waiting on a call Pardot refused, or the daily budget did not
    allow (those wait for the budget's reset)."""
    if isinstance(error, BudgetShort):
        return RetryLater(f"retry: {error}", delay=error.seconds_to_reset)
    return outcome_of(error)


def outcome_of(error: PardotError) -> Outcome:
    """Permanent errors reject the event; everything retryable comes back later.

    ConfigurationError is neither: it propagates and stops the worker, because no event can
    succeed until an operator fixes the setup.
    """
    if isinstance(error, DailyLimitReached):
        return RetryLater(f"retry: {error}", resume_at=error.resume_at)
    if isinstance(error, RetryableError):
        return RetryLater(f"retry: {error}", delay=error.retry_after)
    if isinstance(error, AuthenticationExpired):
        return RetryLater(f"retry: {error}")
    if isinstance(error, PermanentPardotError):
        return Rejected(f"rejected by Pardot: {error}")
    if type(error) is PardotError:
        return Rejected(f"rejected by Pardot: {error}")
    raise error
