"""Prospects and the one table that turns Segment traits into Pardot prospect fields."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A field value as Pardot's form API takes it: text, or several texts for a multi-value field
# (sent as `name_0`, `name_1`, ...). An empty string clears the field.
FieldValue = str | tuple[str, ...]
Fields = dict[str, FieldValue]

MAX_EMAIL_LENGTH = 255  # Pardot's documented limit
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

# Reserved Segment traits (either spelling) → Pardot standard field ids.
TRAIT_TO_FIELD: Mapping[str, str] = {
    "firstName": "first_name",
    "lastName": "last_name",
    "title": "job_title",
    "description": "comments",
    "phone": "phone",
    "website": "website",
}
ADDRESS_TO_FIELD: Mapping[str, str] = {
    "street": "address_one",
    "city": "city",
    "state": "state",
    "postalCode": "zip",
    "postal_code": "zip",
    "country": "country",
}
COMPANY_TO_FIELD: Mapping[str, str] = {
    "name": "company",
    "industry": "industry",
    "employee_count": "employees",
}
# Traits consumed by the mapping or by matching; never sent under their own name.
CONSUMED_TRAITS = frozenset({"email", "name", "address", "id", "fid", *TRAIT_TO_FIELD})


def normalise_email(value: object) -> str | None:
    """The trimmed email when it is syntactically valid, else None."""
    if not isinstance(value, str):
        return None
    email = value.strip()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        return None
    return email


def form_value(value: Any) -> FieldValue:
    """A JSON value as Pardot's form API wants it; null clears, lists are multi-value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 3.0 stays "3.0" as the sender wrote it; NaN and infinities are not JSON, so clear.
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return tuple(_scalar_text(item) for item in value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _scalar_text(value: Any) -> str:
    text = form_value(value)
    return json.dumps(list(text), separators=(",", ":")) if isinstance(text, tuple) else text


def traits_to_fields(traits: Mapping[str, Any]) -> Fields:
    """Map traits to prospect fields.

    Reserved traits go to their Pardot field; a trait already named like a Pardot field (or
    any custom field id) passes through unchanged and wins over a mapped reserved trait,
    because the sender chose that name on purpose.
    """
    mapped: Fields = {}
    for trait, target in TRAIT_TO_FIELD.items():
        if trait in traits:
            mapped[target] = form_value(traits[trait])
    for trait, target in (("first_name", "first_name"), ("last_name", "last_name")):
        if trait in traits:
            mapped[target] = form_value(traits[trait])
    _split_name(traits.get("name"), mapped)
    address = traits.get("address")
    if isinstance(address, Mapping):
        for key, target in ADDRESS_TO_FIELD.items():
            if key in address:
                mapped[target] = form_value(address[key])
    company = traits.get("company")
    if isinstance(company, Mapping):
        for key, target in COMPANY_TO_FIELD.items():
            if key in company:
                mapped[target] = form_value(company[key])
    passed: Fields = {
        name: form_value(value)
        for name, value in traits.items()
        if name not in CONSUMED_TRAITS and not (name == "company" and isinstance(value, Mapping))
    }
    return {**mapped, **passed}


def _split_name(full: object, fields: Fields) -> None:
    """Fill first/last name from `name` only where neither spelling gave them."""
    if not isinstance(full, str) or not full.strip():
        return
    first, _, last = full.strip().partition(" ")
    fields.setdefault("first_name", first)
    if last.strip():
        fields.setdefault("last_name", last.strip())


@dataclass(frozen=True)
class Prospect:
    """A prospect as read back from Pardot: its id, the keys we match on, and its fields."""

    id: int
    email: str | None = None
    fid: str | None = None
    # Pardot's `updated_at` plus a tiebreak: larger means more recently updated.
    updated: tuple[str, int] = ("", 0)
    fields: Mapping[str, FieldValue] = field(default_factory=dict)

    def field_text(self, name: str) -> str | None:
        """The field as the form string we compare lookup values with, None when unset."""
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        return ",".join(value) if isinstance(value, tuple) else value
