"""Validation messages of events and settings, and the trait -> field table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidEvent, InvalidSettings
from domain.events import parse_event
from domain.prospect import form_value, traits_to_fields
from domain.settings import DestinationSettings
from tests.strategies import BUSINESS_UNIT

GOOD = {"api_version": 4, "account_id": "507251", "business_unit_id": BUSINESS_UNIT}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "event: must be a JSON object, got list"),
        ({"userId": "u"}, "type: Field required"),
        ({"type": "identify"}, "an identify needs userId or anonymousId"),
        (
            {"type": "identify", "userId": "u", "traits": "x"},
            "traits: Input should be a valid dictionary",
        ),
        (
            {"type": "identify", "userId": "u", "timestamp": "yesterday"},
            "timestamp: Input should be a valid datetime",
        ),
        (
            {"type": "identify", "userId": "u", "messageId": "m" * 101},
            "messageId: String should have at most 100",
        ),
    ],
)
def test_malformed_events_say_which_field_and_why(payload: object, message: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(payload)
    assert message in str(caught.value)


def test_events_keep_unknown_keys_and_merge_context_traits_under_traits() -> None:
    event = parse_event(
        {
            "type": "identify",
            "userId": None,
            "anonymousId": "a1",
            "sentAt": None,
            "_metadata": {"nodeVersion": "20"},
            "traits": {"email": "top@x.io"},
            "context": {"traits": {"email": "nested@x.io", "plan": "pro"}},
            "timestamp": "2024-01-01T00:00:00.123456789Z",
        }
    )
    assert event.all_traits == {"email": "top@x.io", "plan": "pro"}
    assert event.to_json()["_metadata"] == {"nodeVersion": "20"}
    assert event.timestamp is not None and event.timestamp.microsecond == 123456


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"api_version": 5}, "api_version"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": "12ab"}, "account_id"),
        ({"campaign_id": "x1"}, "campaign_id"),
        ({"business_unit_id": "0Uv123"}, "business_unit_id"),
        ({"business_unit_id": "1Uv000000000001AAA"}, "business_unit_id"),
        ({"prospect_lookup_field_id": "id"}, "prospect_lookup_field_id"),
        ({"prospect_lookup_field_id": "fid"}, "prospect_lookup_field_id"),
        ({"prospect_lookup_field_id": "org id"}, "prospect_lookup_field_id"),
        ({"use_user_id_as_lookup_value": True}, "use_user_id_as_lookup_value"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    change: dict[str, object], setting: str
) -> None:
    with pytest.raises(InvalidSettings) as caught:
        DestinationSettings.parse({**GOOD, **change})
    assert setting in str(caught.value)


def test_lookup_field_is_case_sensitive_and_blank_means_unset() -> None:
    assert (
        DestinationSettings.parse(
            {**GOOD, "prospect_lookup_field_id": "Org_Id"}
        ).prospect_lookup_field_id
        == "Org_Id"
    )
    assert (
        DestinationSettings.parse(
            {**GOOD, "prospect_lookup_field_id": " "}
        ).prospect_lookup_field_id
        is None
    )


def test_the_trait_table() -> None:
    fields = traits_to_fields(
        {
            "email": "a@x.io",
            "id": "seg-1",
            "fid": "00Q000000000000AAA",
            "firstName": "Ann",
            "lastName": "Lee",
            "name": "Ignored Whenever Parts Exist",
            "title": "CTO",
            "phone": "+1 555",
            "website": "https://x.io",
            "description": "likes APIs",
            "company": {
                "name": "X Inc",
                "industry": "Software",
                "employee_count": 40,
                "plan": "pro",
            },
            "address": {
                "street": "1 Main St",
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
                "country": "US",
            },
            "premium_users": True,
            "score": 12,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "prefs": {"b": 1, "a": [1]},
            "nickname": None,
        }
    )
    assert fields == {
        "first_name": "Ann",
        "last_name": "Lee",
        "job_title": "CTO",
        "phone": "+1 555",
        "website": "https://x.io",
        "comments": "likes APIs",
        "company": "X Inc",
        "industry": "Software",
        "employees": "40",
        "address_one": "1 Main St",
        "city": "Springfield",
        "state": "IL",
        "zip": "62701",
        "country": "US",
        "premium_users": "true",
        "score": "12",
        "ratio": "0.5",
        "tags": ("a", "b"),
        "prefs": '{"a":[1],"b":1}',
        "nickname": "",
    }


def test_pardot_field_ids_win_over_mapped_reserved_traits() -> None:
    fields = traits_to_fields(
        {
            "title": "Boss",
            "job_title": "CEO",
            "firstName": "A",
            "first_name": "B",
            "company": "Initech",
            "description": "d",
            "comments": "c",
        }
    )
    assert fields["job_title"] == "CEO" and fields["first_name"] == "B"
    assert fields["company"] == "Initech" and fields["comments"] == "c"


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Tom Smykowski", "Tom", "Smykowski"),
        ("Cher", "Cher", None),
        ("Mary Ann de Vries", "Mary", "Ann de Vries"),
    ],
)
def test_name_is_split_when_parts_are_absent(full: str, first: str, last: str | None) -> None:
    fields = traits_to_fields({"name": full})
    assert fields.get("first_name") == first and fields.get("last_name") == last


@given(st.integers() | st.booleans() | st.none() | st.text())
def test_scalar_form_values_are_text(value: object) -> None:
    text = form_value(value)
    assert isinstance(text, str)
    if value is None:
        assert text == ""
