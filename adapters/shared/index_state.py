"""The IndexState as both SQL prospect indexes keep it: one JSON document, and back.

Times are ISO-8601 text; keys this version does not know (written by a newer one) are left
out rather than refused, so a rollback still reads the state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from domain.ports import IndexState

_KNOWN = {f.name for f in fields(IndexState)}


def state_to_json(state: IndexState) -> str:
    raw = asdict(state)
    began = state.watermark_began
    raw["watermark_began"] = began.isoformat() if began is not None else None
    raw["recent_refreshes"] = [moment.isoformat() for moment in state.recent_refreshes]
    return json.dumps(raw)


def state_from_json(text: str) -> IndexState:
    raw: dict[str, Any] = {k: v for k, v in json.loads(text).items() if k in _KNOWN}
    raw["ranges"] = tuple(tuple(r) for r in raw.get("ranges", ()))
    began = raw.get("watermark_began")
    raw["watermark_began"] = datetime.fromisoformat(began) if began else None
    raw["recent_refreshes"] = tuple(
        datetime.fromisoformat(moment) for moment in raw.get("recent_refreshes", ())
    )
    return IndexState(**raw)
