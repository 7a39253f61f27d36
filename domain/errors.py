"""One small tree of errors, so every layer can decide what to do by type alone.

The HTTP adapter maps Pardot's error codes onto these classes in one table; the sync
service and the worker only ever look at the class (and `retry_after`).
"""

from __future__ import annotations

from datetime import datetime


class DestinationError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidEvent(DestinationError):
    """A payload that is not a well-formed Segment event; `problems` says where and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidSettings(DestinationError):
    """A destination setting with a bad value; the message names the setting."""


class PardotError(DestinationError):
    """Pardot said no. `code` is Pardot's own error code when it gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        self.message = message
        super().__init__(f"Pardot error {code}: {message}" if code is not None else message)


class PermanentPardotError(PardotError):
    """Retrying the same event cannot help (invalid email, bad field value, unknown id)."""


class RetryableError(PardotError):
    """Worth trying again later; `retry_after` is a hint in seconds, or None for backoff.

    `maybe_applied` is False: the call certainly did not take effect (see OutcomeUnknown).
    """

    maybe_applied = False

    def __init__(
        self, message: str, *, code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class OutcomeUnknown(RetryableError):
    """A call that may have taken effect although no answer said so.

    Raised for a create whose answer was lost (a dropped connection, a read timeout) or was
    not Pardot's (an empty body, a proxy's page, a 5xx without Pardot's error code): Pardot
    may have created the prospect. Repeating the create blindly could make a duplicate, so
    look for the prospect first.
    """

    maybe_applied = True


class DailyLimitReached(RetryableError):
    """Pardot's daily call budget is spent: every delivery waits until `resume_at`."""

    def __init__(self, message: str, *, resume_at: datetime, code: int | None = 122) -> None:
        super().__init__(message, code=code)
        self.resume_at = resume_at


class AuthenticationExpired(PardotError):
    """The access token was refused (error 184): refresh it once and retry."""


class ConfigurationError(PardotError):
    """The destination is set up wrong (API version, business unit, permissions).

    No event can succeed until an operator changes the configuration, so deliveries stop
    and the message says what to change.
    """


class StoreUnusable(DestinationError):
    """The store (the queue's database) cannot be opened or is damaged; the message says
    which file and what to do. Start-up stops with it rather than run without a queue."""


class ImportUnavailable(PardotError):
    """The account will not take imports (the Import API is off for it, or the API user's
    role lacks the Prospect Import ability): the work goes back to batches, with a warning."""


class BulkLimitExceeded(PermanentPardotError):
    """An import refused a batch by Pardot's limits (10 MB a batch, 10 batches an import,
    1,000 batches a day): start another import, or send those rows by batches."""
