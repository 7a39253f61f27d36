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
# Pardot's writable standard prospect fields (v3/v4 names); anything else is a custom field.
STANDARD_FIELDS = frozenset(
    "salutation first_name last_name email password company website job_title department "
    "country address_one address_two city state territory zip phone fax source annual_revenue "
    "employees industry years_in_business comments notes score is_do_not_email "
    "is_do_not_call is_reviewed is_starred campaign_id".split()
)
# Standard fields Pardot reads back as 1 or null (PARDOT_API.md).
BOOLEAN_FIELDS = frozenset({"is_do_not_email", "is_do_not_call", "is_reviewed", "is_starred"})
READ_ONLY_FIELDS = frozenset(
    "id grade opted_out created_at updated_at last_activity_at salesforce_fid "
    "crm_lead_fid crm_contact_fid crm_owner_fid crm_account_fid".split()
)
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
    if isinstance(address, str):
        # A one-line address is what most forms collect: it is the first address line.
        mapped["address_one"] = address
    elif isinstance(address, Mapping):
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
    # Any whitespace separates the parts: tabs and non-breaking spaces come from copy-paste.
    first, *rest = full.split(None, 1)
    fields.setdefault("first_name", first)
    if rest:
        fields.setdefault("last_name", rest[0].strip())


@dataclass(frozen=True)
class Prospect:
    """A prospect as read back from Pardot: its id, the keys we match on, and its fields."""

    id: int
    email: str | None = None
    fid: str | None = None
    # Pardot's `updated_at` plus a tiebreak: larger means more recently updated.
    updated: tuple[str, int] = ("", 0)
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    created_at: str = ""  # Pardot's created_at, in the account's zone
    # Fields whose values this copy does not hold (an export cannot carry them: notes and
    # custom fields): never taken as empty, so a value is never judged already held.
    unknown: frozenset[str] = frozenset()

    @property
    def updated_at(self) -> str:
        """Pardot's updated_at (`YYYY-MM-DD HH:MM:SS`, account zone); empty when unknown."""
        return self.updated[0]

    def field_text(self, name: str) -> str | None:
        """The field as the form string we compare lookup values with, None when unset."""
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        return ",".join(value) if isinstance(value, tuple) else value


_SALESFORCE_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id_18(fid: str) -> str:
    """The 18-character, case-insensitive form Pardot stores for a 15-character Salesforce id.

    Each suffix character encodes which letters of one 5-character chunk are upper case,
    read right to left as bits. An 18-character id is returned unchanged.
    """
    if len(fid) != 15:
        return fid
    suffix = ""
    for start in range(0, 15, 5):
        chunk = fid[start : start + 5]
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _SALESFORCE_ID_ALPHABET[bits]
    return fid + suffix


@dataclass(frozen=True)
class CustomField:
    """One custom field of the account, as Pardot's customField query lists it."""

    field_id: str  # what prospects use, case-sensitive
    type: str = "Text"  # Text, Number, Date, Dropdown, Checkbox, ...


def stored_form(value: str, field_type: str) -> str:
    """A field value as Pardot stores and reads it back, so values compare as Pardot sees them.

    A Number field reads "007" back as 7 and a Date field "2020-08-30T05:49:48Z" as
    "2020-08-30"; a value Pardot could not convert is left as sent.
    """
    text = value.strip()
    kind = field_type.strip().lower()
    if kind == "number":
        return _number_form(text)
    if kind == "date":
        match = _DATE_PREFIX.match(text)
        return match.group(0) if match else text
    return text


_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _number_form(text: str) -> str:
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def boolean_read_back(text: str) -> str:
    """A boolean field's value as Pardot reads it back: "1", or "" for null."""
    return "1" if text.strip().lower() in {"1", "true", "yes", "on"} else ""
