"""Hypothesis strategies for Segment events and destination settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from domain.settings import DestinationSettings

BUSINESS_UNIT = "0Uv000000000001AAA"
EVENT_TYPES = ["identify", "track", "page", "screen", "group", "alias"]

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
emails = st.emails().filter(lambda e: len(e) <= 255)
bad_emails = st.sampled_from(["", "   ", "not-an-email", "a@b", "@example.com", "a b@c.de"])
fids = st.from_regex(r"\A(00Q|003)[0-9A-Za-z]{15}\Z")
prospect_ids = st.integers(min_value=1, max_value=10**12)
lookup_fields = st.sampled_from(["org_id", "Org_Id", "customer_key"])
user_ids = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
timestamps = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@st.composite
def settings(
    draw: st.DrawFn, version: int | None = None, *, with_lookup: bool = False
) -> DestinationSettings:
    """`with_lookup` (v4): always a lookup field, for tests about it (drawn, not filtered)."""
    api_version = version if version is not None else draw(st.sampled_from([3, 4]))
    lookups = lookup_fields if with_lookup else st.none() | lookup_fields
    lookup = draw(lookups) if api_version == 4 else None
    use_user_id = draw(st.booleans()) if lookup is not None else False
    return DestinationSettings(
        api_version=api_version,
        prospect_lookup_field_id=lookup,
        use_user_id_as_lookup_value=use_user_id,
        account_id=str(draw(st.integers(1000, 999999))),
        campaign_id=draw(st.none() | st.integers(1, 99999).map(str)),
        business_unit_id=BUSINESS_UNIT,
    )


integration_values = st.one_of(
    st.booleans(),
    st.fixed_dictionaries(
        {}, optional={"id": prospect_ids | st.text(max_size=5), "fid": fids | st.text(max_size=5)}
    ),
)


@st.composite
def integrations(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = draw(
        st.dictionaries(st.sampled_from(["Mixpanel", "pardot"]), st.booleans(), max_size=2)
    )
    if draw(st.booleans()):
        result["All"] = draw(st.booleans())
    if draw(st.booleans()):
        result["Pardot"] = draw(integration_values)
    return result


@st.composite
def traits(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = draw(
        st.dictionaries(st.from_regex(r"\A[a-z][a-z_]{0,10}\Z"), json_values, max_size=4)
    )
    choice = draw(st.sampled_from(["valid", "invalid", "missing"]))
    if choice == "valid":
        result["email"] = draw(emails)
    elif choice == "invalid":
        result["email"] = draw(bad_emails)
    else:
        result.pop("email", None)
    for name in ("org_id", "Org_Id", "customer_key"):
        if draw(st.booleans()):
            result[name] = draw(st.none() | st.text(max_size=6) | st.integers(0, 99))
    result.update(draw(reserved_traits))
    return result


# Segment's reserved traits in both spellings and shapes, so mapping is always exercised.
short_text = st.text(max_size=12)
reserved_traits = st.fixed_dictionaries(
    {},
    optional={
        "firstName": short_text,
        "lastName": short_text,
        "first_name": short_text,
        "name": st.sampled_from(["Ann Lee", "Ann\tLee", "Ann\u00a0Mary Lee", "Cher", " "]),
        "title": short_text,
        "phone": short_text,
        "company": short_text
        | st.fixed_dictionaries(
            {},
            optional={
                "name": short_text,
                "industry": short_text,
                "employee_count": st.integers(0, 9),
            },
        ),
        "address": short_text
        | st.fixed_dictionaries(
            {}, optional={"street": short_text, "city": short_text, "postalCode": short_text}
        ),
    },
)


@st.composite
def events(draw: st.DrawFn, event_type: str | None = None) -> dict[str, Any]:
    """A well-formed Segment event as JSON, with everything that steers matching varied."""
    payload: dict[str, Any] = {
        "type": event_type or draw(st.sampled_from(EVENT_TYPES)),
        "messageId": draw(st.uuids()).hex,
        "traits": draw(traits()),
        "integrations": draw(integrations()),
        "timestamp": draw(timestamps).isoformat(),
    }
    if draw(st.booleans()):
        payload["userId"] = draw(user_ids)
    else:
        payload["anonymousId"] = draw(user_ids)
    if draw(st.booleans()):
        payload["context"] = {"traits": draw(traits())}
    return payload


def later(base: datetime, seconds: int) -> str:
    return (base + timedelta(seconds=seconds)).isoformat()
