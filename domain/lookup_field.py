"""The lookup field must be a real custom field of the account, compared as Pardot stores it.

A typo, a case difference or a standard field would otherwise match nothing and create one
prospect per event; so deliveries wait, with one line that names the problem, until the
field exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from domain.errors import ConfigurationError
from domain.prospect import READ_ONLY_FIELDS, STANDARD_FIELDS, CustomField


def check_lookup_field(
    field_id: str, fields: Sequence[CustomField], *, setting: str = "prospect_lookup_field_id"
) -> CustomField:
    """The account's custom field named exactly `field_id`, or a ConfigurationError."""
    for custom in fields:
        if custom.field_id == field_id:
            return custom
    raise ConfigurationError(lookup_field_problem(field_id, fields, setting=setting))


def lookup_field_problem(
    field_id: str, fields: Sequence[CustomField], *, setting: str = "prospect_lookup_field_id"
) -> str:
    head = f"{setting}={field_id} is not a custom field of this Pardot account"
    if field_id in STANDARD_FIELDS or field_id in READ_ONLY_FIELDS:
        head = f"{setting}={field_id} is a standard prospect field; the lookup field must be custom"
    closest = closest_field(field_id, [f.field_id for f in fields])
    hint = f" (did you mean {closest}?)" if closest else ""
    return (
        f"{head}{hint}; nothing is written until the field exists in Pardot or {setting} names one"
    )


def closest_field(wanted: str, field_ids: Sequence[str]) -> str | None:
    """The existing field id a person most likely meant: same letters first, then similar."""
    folded = {field_id.lower(): field_id for field_id in field_ids}
    if wanted.lower() in folded:
        return folded[wanted.lower()]
    close = difflib.get_close_matches(wanted.lower(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None
