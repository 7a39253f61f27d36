"""Pardot's error codes, mapped onto the domain's error tree in one table.

Source: PARDOT_API.md (Pardot's published error codes and what a client should do).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Literal

from domain.errors import (
    AuthenticationExpired,
    ConfigurationError,
    DailyLimitReached,
    PardotError,
    PermanentPardotError,
    RetryableError,
)

Kind = Literal["permanent", "retry", "config", "auth", "daily"]

CODE_KIND: dict[int, Kind] = {
    3: "permanent",  # invalid prospect id
    4: "permanent",  # invalid or unknown email
    9: "permanent",  # v3 create: email exists (the adapter switches to update itself)
    13: "permanent",  # required parameter missing
    14: "permanent",  # upsert by id: no such id and no email
    46: "config",  # API user lacks permission: an operator must grant it
    56: "permanent",  # invalid number for a field
    57: "permanent",  # invalid date for a field
    62: "retry",  # conflicting update
    66: "retry",  # more than 5 concurrent requests
    70: "permanent",  # batch too big: our bug, dead-letter the rows with the reason
    71: "permanent",  # batch not valid JSON: our bug
    77: "permanent",  # invalid fid
    81: "permanent",  # id and fid do not match
    85: "retry",  # unable to save
    88: "config",  # account must use version 4
    89: "config",  # account cannot use version 4
    90: "permanent",  # batch row not flat: our bug
    91: "permanent",  # batch not keyed: our bug
    121: "retry",  # unable to sync
    122: "daily",  # daily API limit met
    181: "config",  # business unit header missing
    182: "config",  # business unit header malformed
    183: "retry",  # internal error
    184: "auth",  # access token invalid or expired
    201: "config",  # business unit unknown or inactive
    214: "retry",  # timed out
}

VERSION_HINT = {
    88: "this Pardot account allows several prospects per email: set PARDOT_API_VERSION=4",
    89: "this Pardot account has one prospect per email: set PARDOT_API_VERSION=3",
    181: "the Pardot-Business-Unit-Id header is missing: set PARDOT_BUSINESS_UNIT_ID",
    182: "check PARDOT_BUSINESS_UNIT_ID: 18 characters starting with 0Uv",
    201: (
        "check PARDOT_BUSINESS_UNIT_ID: it names no active business unit this user can reach "
        "(Setup > Account Engagement > Business Unit Setup shows the id)"
    ),
    46: "the Salesforce user lacks Pardot API access for this business unit",
}


def pardot_error(
    code: int | None,
    message: str,
    *,
    status: int,
    account_zone: tzinfo,
    now: datetime,
    retry_after: float | None = None,
) -> PardotError:
    """The domain error for one Pardot failure; unknown codes follow the HTTP status.

    Without Pardot's error code the answer came from something in between (a proxy, a
    firewall, maintenance): whatever its status, trying again is the only safe move.
    `retry_after` (the answer's Retry-After, in seconds) goes with a retryable error.
    """
    if code is None:
        return RetryableError(message, retry_after=retry_after)
    kind = CODE_KIND.get(code)
    if kind is None:
        kind = "retry" if status >= 500 or status in (408, 429) else "permanent"
    if kind == "retry":
        return RetryableError(message, code=code, retry_after=retry_after)
    if kind == "auth":
        return AuthenticationExpired(message, code=code)
    if kind == "daily":
        return DailyLimitReached(message, resume_at=next_midnight(now, account_zone), code=code)
    if kind == "config":
        hint = VERSION_HINT.get(code or 0)
        return ConfigurationError(f"{message} ({hint})" if hint else message, code=code)
    return PermanentPardotError(message, code=code)


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    A date in the past means "now" (0); anything unreadable is ignored (None).
    """
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_midnight(now: datetime, zone: tzinfo) -> datetime:
    """When Pardot's daily budget resets: the account's next local midnight."""
    local = now.astimezone(zone)
    tomorrow = (local + timedelta(days=1)).date()
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)
