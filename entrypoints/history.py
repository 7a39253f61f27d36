"""From settled events to the delivery history that `explain` and the status page read."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.events import IdentifyEvent
from domain.ports import HistoryEntry, Settlement
from domain.prospect import normalise_email, traits_to_fields


def outcome_of(settlement: Settlement) -> str:
    """The settled state, with a delivery that wrote nothing told apart as `unchanged`."""
    return "unchanged" if settlement.unchanged else settlement.state


def entry(
    settlement: Settlement,
    at: datetime,
    *,
    event: IdentifyEvent | None = None,
    payload: Mapping[str, Any] | None = None,
    source: str = "queue",
) -> HistoryEntry:
    """One history row; `event` when the payload parsed, else what the raw payload shows."""
    message_id = user_id = email = None
    seen: tuple[str, ...] = ()
    if event is not None:
        message_id, user_id = event.message_id, event.user_id
        if event.type == "identify":
            traits = event.all_traits
            email = normalise_email(traits.get("email"))
            seen = tuple(traits_to_fields(traits))
    elif payload is not None:
        message_id = _text(payload.get("messageId"))
        user_id = _text(payload.get("userId"))
    return HistoryEntry(
        at=at,
        outcome=outcome_of(settlement),
        reason=settlement.reason,
        message_id=message_id,
        user_id=user_id,
        email=email,
        prospect=settlement.prospect,
        fields=dict(settlement.fields or {}),
        source=source,
        seen=seen,
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
