"""Compare: the merged values of one prospect in, what still needs writing out (pure).

In: the prospect key, its groups and their merge, the stamps the store keeps for it (value
and event time per field written) and, with the index, the prospect as Pardot holds it.
Out: `UpToDate` (every value is older than a stamp), `Unchanged` (Pardot already holds every
newer value: only the stamps are recorded) or `Changes` (the row to write). Values are
compared in the form Pardot returns them (`normal`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from domain.matching import UpsertByEmail
from domain.ports import BATCH_LIMIT, FieldStamp, ProspectWrite
from domain.prospect import (
    BOOLEAN_FIELDS,
    Fields,
    FieldValue,
    Prospect,
    boolean_read_back,
    stored_form,
)
from domain.sync.grouping import Group, Stamped
from domain.sync.merge import Merged

FieldType = Callable[[str], str]  # a field's type (Text, Number, Date...) by its name
# What a refresh costs at the least: a page of changes and a page of the recycle bin.
REFRESH_CALLS = 2


@dataclass(frozen=True)
class UpToDate:
    """Nothing newer than what was written: no call, no stamps."""

    reason: str


@dataclass(frozen=True)
class Unchanged:
    """Newer values, all of which Pardot already holds: record them, write nothing."""

    stamps: dict[str, FieldStamp]


@dataclass(frozen=True)
class Changes:
    """A row to write; `written` names each field's value with the event it came from."""

    row: ProspectWrite
    stamps: dict[str, FieldStamp]
    written: dict[str, Stamped]


def newer(merged: Merged, known: Mapping[str, FieldStamp]) -> dict[str, Stamped]:
    """The merged values newer than the store's stamps (an unstamped one always is)."""
    fresh = {name: s for name, s in merged.fields.items() if s.newer_than(known.get(name))}
    if merged.email is not None and merged.email.newer_than(known.get("email")):
        fresh["email"] = merged.email
    return fresh


def compare(
    key: str,
    groups: Sequence[Group],
    merged: Merged,
    known: Mapping[str, FieldStamp],
    indexed: Prospect | None,
    field_type: FieldType | None,
) -> UpToDate | Unchanged | Changes:
    """What to do for the prospect `key`; `field_type` set means change detection is on and
    `indexed` (what the index holds, if anything) is compared value by value."""
    by_email = key.startswith("email:")
    fresh = newer(merged, known)
    if not fresh and (merged.fields or not by_email):
        if merged.fields or merged.any_email:
            return UpToDate("up to date: newer values were already written")
        return UpToDate("nothing to write")
    stamps = {name: FieldStamp(s.value, s.at) for name, s in fresh.items()}
    if indexed is not None and field_type is not None:
        changed = {
            n: s for n, s in fresh.items() if not holds_value(indexed, n, s.value, field_type)
        }
        if not changed:
            return Unchanged(stamps)
        fresh = changed
    fields: Fields = {name: stamped.value for name, stamped in fresh.items()}
    if by_email:
        write = groups[0].write
        assert isinstance(write, UpsertByEmail)
        create_fields: Fields = {}
        for group in groups:
            create_fields.update(group.write.create_fields)
        row = ProspectWrite("email", write.email, fields, create_fields)
    else:
        row = ProspectWrite("id", key, fields, mode="update")
    if by_email and groups[0].email is not None:
        fresh.setdefault("email", groups[0].email)  # the row's key: v3 upserts by it
    return Changes(row, stamps, fresh)


def refresh_pays(writes: int, unchanged: int) -> bool:
    """Whether refreshing a stale index costs fewer calls than writing the `unchanged` rows
    (values the stale index says Pardot holds) along with the `writes` made anyway."""
    extra = -(-(writes + unchanged) // BATCH_LIMIT) - -(-writes // BATCH_LIMIT)
    return extra > REFRESH_CALLS


def holds_value(prospect: Prospect, name: str, value: FieldValue, field_type: FieldType) -> bool:
    """Whether Pardot already holds `value` in `name`, compared as Pardot returns it (a
    field the index copy does not hold never is: it is written)."""
    if name in prospect.unknown:
        return False
    if name == "email":
        return isinstance(value, str) and (prospect.email or "").strip() == value.strip()
    return normal(name, value, field_type) == normal(name, prospect.fields.get(name), field_type)


def normal(name: str, value: FieldValue | None, field_type: FieldType) -> FieldValue:
    """`value` as Pardot returns it for the field `name`: trimmed, in its type's form."""
    if isinstance(value, tuple):
        items = tuple(item.strip() for item in value if item.strip())
        if len(items) != 1:
            return items
        value = items[0]
    text = (value or "").strip()
    if name in BOOLEAN_FIELDS:
        return boolean_read_back(text)
    return stored_form(text, field_type(name)) if text else ""
