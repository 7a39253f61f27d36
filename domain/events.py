"""Segment events as they arrive: validated where the spec is strict, kept whole elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from domain.errors import InvalidEvent
from domain.validation import describe_validation_error

MAX_MESSAGE_ID = 100
# How far ahead of its arrival an event's time may be: clocks of well-run machines drift by
# fractions of a second, and a request spends some time on the wire.
CLOCK_TOLERANCE = timedelta(seconds=5)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class IdentifyEvent(BaseModel):
    """One Segment event. Usually an identify; other types parse too so they can be skipped.

    Unknown keys (a library's `_metadata`, say) are kept, so nothing a client sent is lost
    between the door and the dead-letter table.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    type: str
    message_id: str | None = Field(default=None, alias="messageId", max_length=MAX_MESSAGE_ID)
    user_id: str | None = Field(default=None, alias="userId")
    anonymous_id: str | None = Field(default=None, alias="anonymousId")
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    received_at: datetime | None = Field(default=None, alias="receivedAt")
    # Who sent it (the queue's de-duplication scope): never read from the payload, so no
    # sender can claim another's; a messageId is a duplicate only within it.
    _sender: str = PrivateAttr(default="")

    @property
    def sender(self) -> str:
        return self._sender

    @field_validator("user_id", "anonymous_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        # Segment's libraries stringify numeric ids; a JSON number here means the same user.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("traits", "context", "integrations", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("timestamp", "original_timestamp", "sent_at", "received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A timestamp without a zone is read as UTC so every comparison is well defined.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _someone(self) -> IdentifyEvent:
        if self.type == "identify" and not (self.user_id or self.anonymous_id):
            raise ValueError("an identify needs userId or anonymousId")
        return self

    @property
    def all_traits(self) -> dict[str, Any]:
        """`context.traits` merged under `traits`: the top-level value wins on a clash."""
        nested = self.context.get("traits")
        merged = dict(nested) if isinstance(nested, dict) else {}
        merged.update(self.traits)
        return merged

    @property
    def effective_time(self) -> datetime | None:
        """When the user did this, on the clock of whoever stored the event.

        `receivedAt` is our service's arrival time (the worker sets it from the queue). As
        Segment does, a client clock is corrected by the skew it showed when sending:
        `receivedAt - (sentAt - timestamp)`. An event that carries both `timestamp` and
        `originalTimestamp` was forwarded by Segment (its Webhooks destination), which already
        corrected `timestamp` that way: correcting it again against our own, later arrival
        would make a retried old event look new. An event claiming a time later than its
        arrival plus a small tolerance is taken to have happened on arrival, so a client whose
        clock runs years fast cannot win every comparison after it.
        """
        claimed = self.timestamp or self.original_timestamp
        arrival = self.received_at
        if claimed is None:
            return arrival or self.sent_at
        if arrival is None:
            return claimed
        corrected = self.timestamp is not None and self.original_timestamp is not None
        if self.sent_at is not None and not corrected:
            skew = self.sent_at - claimed
            try:
                claimed = arrival - skew
            except OverflowError:
                claimed = _EARLIEST if skew > timedelta(0) else arrival
        # Past the tolerance the clock is wrong, not early: arrival is the best estimate.
        return claimed if claimed <= arrival + CLOCK_TOLERANCE else arrival

    def to_json(self) -> dict[str, Any]:
        """The event as Segment spells it, unknown keys included."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_event(payload: object, *, sender: str = "") -> IdentifyEvent:
    """Validate one decoded JSON value, or raise InvalidEvent saying which field and why.

    `sender`: the scope the queue stored the event under (`EventQueue.put`).
    """
    if not isinstance(payload, dict):
        raise InvalidEvent([f"event: must be a JSON object, got {type(payload).__name__}"])
    try:
        event = IdentifyEvent.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc).split("; ")) from None
    if sender:
        event._sender = sender
    return event
