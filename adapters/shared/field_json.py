"""Field values as the stores keep them: JSON text, a multi-value field as a list."""

from __future__ import annotations

import json
from collections.abc import Mapping

from domain.prospect import FieldValue


def field_json(value: FieldValue) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def fields_json(fields: Mapping[str, FieldValue]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})


def field_from_json(text: str | None) -> FieldValue:
    """The stored value; NULL (a stamp carried over without its value) reads as ""."""
    if text is None:
        return ""
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else str(value)
