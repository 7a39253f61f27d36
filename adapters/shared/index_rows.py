"""A prospect as both SQL prospect indexes store it, and back.

In: a Prospect and its lookup value; out: the row (id, email in lower case for searching, fid,
lookup value, and the rest as JSON: the email as Pardot spells it, field values, times).
`prospect_from_row` reads the id, fid and JSON back into the Prospect.
"""

from __future__ import annotations

import json
from typing import Any

from domain.prospect import FieldValue, Prospect

IndexRow = tuple[int, str, str | None, str | None, str]


def index_row(prospect: Prospect, lookup: str | None) -> IndexRow:
    data: dict[str, object] = {
        "email": prospect.email,
        "fields": {k: list(v) if isinstance(v, tuple) else v for k, v in prospect.fields.items()},
        "updated": list(prospect.updated),
        "created_at": prospect.created_at,
    }
    if prospect.unknown:
        data["unknown"] = sorted(prospect.unknown)
    email = (prospect.email or "").strip().lower()
    return (prospect.id, email, prospect.fid, lookup, json.dumps(data, separators=(",", ":")))


def prospect_from_row(prospect_id: int, fid: str | None, data: str) -> Prospect:
    raw: dict[str, Any] = json.loads(data)
    fields: dict[str, FieldValue] = {
        k: tuple(v) if isinstance(v, list) else str(v) for k, v in raw["fields"].items()
    }
    updated = raw.get("updated") or ["", 0]
    return Prospect(
        prospect_id,
        raw.get("email"),
        fid,
        (str(updated[0]), int(updated[1])),
        fields,
        str(raw.get("created_at") or ""),
        frozenset(str(name) for name in raw.get("unknown", ())),
    )
