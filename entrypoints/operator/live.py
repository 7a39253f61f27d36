"""`explain --live`: what Pardot holds now for one explained prospect, field by field.

In: the prospect's Pardot id (or, under v3 when the index never saw it, the email that keys
it), the store's stamps for it (value and event time of each field the service wrote), the
events that wrote them, the PardotRepository and the account's field types. Out: a
`LiveProspect`: `found`, with per field written what Pardot holds now and whether that
differs, compared as the sync compares (`domain.sync.compare.holds_value`: trimmed, in the
field type's form, booleans read back as 1/null); `missing` (Pardot has no such prospect:
deleted, merged away, or never created); or `unreachable` (Pardot could not be asked, and
why). One call: a read by id, or by email when the id is not known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from domain.errors import PardotError
from domain.ports import FieldStamp, HistoryEntry
from domain.prospect import FieldValue, Prospect
from domain.sync.compare import holds_value
from entrypoints.operator.fields import RepositoryProvider

FieldType = Callable[[str], str]


@dataclass(frozen=True)
class LiveField:
    name: str
    written: FieldStamp  # what the service wrote (or found already there) and the event time
    written_at: datetime | None  # when that event was settled, while the history keeps it
    pardot: FieldValue | None  # what Pardot holds now; None: not set
    differs: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written.value,
            "event_time": self.written.at and self.written.at.isoformat(),
            "written_at": self.written_at and self.written_at.isoformat(),
            "pardot": self.pardot,
            "differs": self.differs,
        }


@dataclass(frozen=True)
class LiveProspect:
    state: Literal["found", "missing", "unreachable"]
    prospect_id: int | None = None
    detail: str = ""  # why Pardot could not be asked, or which read found nothing
    updated_at: str = ""  # Pardot's updated_at (the account's zone)
    fields: tuple[LiveField, ...] = ()

    @property
    def differs(self) -> bool:
        """Pardot does not hold what the service wrote: a field differs, or it is gone."""
        return self.state == "missing" or any(f.differs for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "prospect_id": self.prospect_id,
            "detail": self.detail,
            "updated_at": self.updated_at or None,
            "differs": self.differs,
            "fields": {f.name: f.as_dict() for f in self.fields},
        }


async def look_up(
    pardot: RepositoryProvider,
    *,
    prospect_id: int | None,
    email: str | None,
    stamps: Mapping[str, FieldStamp],
    events: Sequence[HistoryEntry],
    field_type: FieldType,
) -> LiveProspect:
    """What Pardot holds for the prospect; `pardot` gives the repository (awaitable), so a
    missing credential is reported as `unreachable` like a refused one."""
    asked = f"id {prospect_id}" if prospect_id is not None else f"email {email}"
    try:
        repository = await pardot()
        if prospect_id is not None:
            prospect = await repository.read_by_id(prospect_id)
        elif email is not None:
            prospect = max(await repository.read_by_email(email), key=_latest, default=None)
        else:
            return LiveProspect("unreachable", detail="no Pardot id or email to read it by")
    except PardotError as error:
        return LiveProspect("unreachable", prospect_id, detail=f"Pardot could not be read: {error}")
    if prospect is None:
        return LiveProspect("missing", prospect_id, detail=f"Pardot has no prospect with {asked}")
    return LiveProspect(
        "found",
        prospect.id,
        updated_at=prospect.updated_at,
        fields=tuple(
            _field(prospect, name, stamp, events, field_type) for name, stamp in stamps.items()
        ),
    )


def _latest(prospect: Prospect) -> tuple[str, int]:
    return prospect.updated


def _field(
    prospect: Prospect,
    name: str,
    stamp: FieldStamp,
    events: Sequence[HistoryEntry],
    field_type: FieldType,
) -> LiveField:
    now = prospect.email if name == "email" else prospect.fields.get(name)
    wrote = [e.at for e in events if name in e.fields]
    return LiveField(
        name,
        stamp,
        written_at=max(wrote, default=None),
        pardot=now,
        differs=not holds_value(prospect, name, stamp.value, field_type),
    )
