"""Which columns an export of prospects asks for, and whether custom fields are among them.

In: the IndexFeed's fields (keys, writable standard fields, every custom field, the lookup
field among them). Out: `export_columns`, the fields an export asks for and those the index
holds that its rows cannot carry (marked `unknown`); `CustomFieldExports`, what this process
learnt of whether the account's exports carry custom fields.

Why custom fields are asked for, then given up: Pardot's export page lists the prospect
fields of its field reference (standard fields only; `grade` and `notes` not exportable) and
says nothing of custom fields either way. Without them an index with a lookup field cannot
be filled by exports at all (a row's lookup value decides who it is), and rows without them
make change detection write every custom field again. So the first export a process makes
asks for them; when Pardot refuses that export, or its file comes back without them, the
process stops asking (one call lost, once per process) and does what it did before: exports
without custom fields, the scan where a lookup field is configured.

Pardot's export page also caps the fields an export may ask for at 150; the lookup field
comes first among the custom fields, and any beyond the cap stay unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from domain.index.feed import KEY_FIELDS, IndexFeed
from domain.prospect import STANDARD_FIELDS

NOT_EXPORTABLE = frozenset({"grade", "notes"})  # Pardot's export page
MAX_EXPORT_FIELDS = 150  # Pardot's export page: "can't exceed 150"


class CustomFieldsLeftOut(Exception):
    """Pardot refused an export that asked for custom fields, or wrote its file without them."""


class CustomFieldExports:
    """Whether this account's exports carry custom fields, as far as this process knows:
    None until an export that asked for them answered."""

    def __init__(self) -> None:
        self.carried: bool | None = None

    def asking(self) -> bool:
        return self.carried is not False

    def note(self, carried: bool) -> None:
        self.carried = carried


def export_columns(feed: IndexFeed, *, custom: bool) -> tuple[tuple[str, ...], frozenset[str]]:
    """What an export asks for (`id` first), and what the index holds that it cannot carry:
    `notes` always, and custom fields unless `custom` (then those beyond the cap)."""
    wanted = feed.fields or ()
    lookup = feed.lookup_column[0]
    customs = sorted(
        (n for n in wanted if n not in KEY_FIELDS and n not in STANDARD_FIELDS),
        key=lambda name: (name != lookup, name),
    )
    fixed = [n for n in wanted if n in KEY_FIELDS or n in STANDARD_FIELDS]
    asked = ["id", *(n for n in fixed if n not in NOT_EXPORTABLE)]
    if custom:
        asked += customs[: max(0, MAX_EXPORT_FIELDS - len(asked))]
    held = set(asked)
    return tuple(asked), frozenset(n for n in wanted if n not in held)


def failure_level(failed: BaseException) -> int:
    """How loud to log a failed export: a refusal of custom fields is what Pardot's docs
    lead one to expect (INFO), anything else a WARNING."""
    return logging.INFO if isinstance(failed.__cause__, CustomFieldsLeftOut) else logging.WARNING


def _custom(fields: Sequence[str]) -> list[str]:
    return [n for n in fields if n != "id" and n not in KEY_FIELDS and n not in STANDARD_FIELDS]


def asks_custom(fields: Sequence[str]) -> bool:
    return bool(_custom(fields))


def check_carried(fields: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    """Raises CustomFieldsLeftOut when a file's rows lack a custom column the export asked
    for (Pardot answered the export but left them out)."""
    missing = [n for n in _custom(fields) if rows and n not in rows[0]]
    if missing:
        raise CustomFieldsLeftOut(f"an export file came without {len(missing)} custom fields")
