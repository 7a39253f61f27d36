"""Property-based tests: one per matching rule of the seed (issue 2, rules 1-9)."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from domain.events import parse_event
from domain.matching import (
    MatchByLookup,
    MatchPerson,
    Reject,
    Skip,
    UpsertByEmail,
    UpsertByFid,
    UpsertById,
    destination_options,
    plan,
    plan_payload,
)
from domain.prospect import normalise_email, salesforce_id_18
from domain.settings import DestinationSettings
from tests.strategies import events, fids, json_values, prospect_ids, settings

WRITES = (UpsertByEmail, UpsertById, UpsertByFid, MatchByLookup, MatchPerson)


def _enabled(integrations: dict[str, Any]) -> bool:
    pardot = integrations.get("Pardot")
    if pardot is False:
        return False
    if pardot is True or isinstance(pardot, dict):
        return True
    return integrations.get("All") is not False


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    pardot = payload["integrations"].get("Pardot")
    return pardot if isinstance(pardot, dict) else {}


@given(events().filter(lambda e: e["type"] != "identify"), settings())
def test_rule_1_only_identify_is_planned(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    decision = plan(parse_event(payload), config)
    assert isinstance(decision, Skip)
    assert payload["type"] in decision.reason


@given(events("identify"), settings())
def test_rule_2_integrations_object_decides(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    decision = plan(parse_event(payload), config)
    if _enabled(payload["integrations"]):
        assert not isinstance(decision, Skip)
    else:
        assert isinstance(decision, Skip)
        assert "integrations." in decision.reason


@given(st.sampled_from([{}, {"Pardot": True}, {"All": True}, {"All": False, "Pardot": {}}]))
def test_rule_2_missing_keys_true_and_options_mean_enabled(integrations: dict[str, Any]) -> None:
    assert destination_options(integrations, ("Pardot",))[0]


@given(events("identify"), settings(version=3))
def test_rule_3_v3_needs_a_valid_email_and_matches_by_it_alone(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    assume(_enabled(payload["integrations"]))
    event = parse_event(payload)
    decision = plan(event, config)
    email = normalise_email(event.all_traits.get("email"))
    if email is None:
        assert isinstance(decision, Reject)
        assert "email" in decision.reason
    else:
        assert isinstance(decision, UpsertByEmail)
        assert decision.email == email == decision.email.strip()


@given(events("identify"), settings(version=4), prospect_ids)
def test_rule_4_v4_pardot_id_wins(
    payload: dict[str, Any], config: DestinationSettings, prospect_id: int
) -> None:
    payload["integrations"] = {**payload["integrations"], "Pardot": {"id": prospect_id, "fid": "x"}}
    event = parse_event(payload)
    decision = plan(event, config)
    assert isinstance(decision, UpsertById)
    assert decision.prospect_id == prospect_id
    assert decision.email == normalise_email(event.all_traits.get("email"))
    assert "id" not in decision.fields and "fid" not in decision.fields


@given(events("identify"), settings(version=4), fids.map(lambda f: f[:15]))
def test_rule_5_v4_a_15_character_fid_is_matched_in_its_18_character_form(
    payload: dict[str, Any], config: DestinationSettings, fid: str
) -> None:
    payload["integrations"] = {"Pardot": {"fid": fid}}
    decision = plan(parse_event(payload), config)
    assert isinstance(decision, UpsertByFid)
    assert len(decision.fid) == 18 and decision.fid.startswith(fid)
    # The suffix encodes the case: the 18-character form names the same record in any case.
    assert plan(parse_event({**payload}), config) == decision


@given(fids.map(lambda f: f[:15]), fids.map(lambda f: f[:15]))
def test_rule_5_ids_that_differ_only_in_case_stay_apart_in_18_characters(a: str, b: str) -> None:
    assume(a != b)
    assert salesforce_id_18(a).upper() != salesforce_id_18(b).upper()


def test_rule_5_salesforce_documented_example() -> None:
    assert salesforce_id_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"


@given(events("identify"), settings(version=4), fids)
def test_rule_5_v4_fid_without_id(
    payload: dict[str, Any], config: DestinationSettings, fid: str
) -> None:
    payload["integrations"] = {"Pardot": {"fid": fid}}
    event = parse_event(payload)
    decision = plan(event, config)
    assert isinstance(decision, UpsertByFid)
    assert decision.fid == fid
    assert decision.email == normalise_email(event.all_traits.get("email"))


@given(events("identify"), settings(version=4, with_lookup=True))
def test_rule_6_v4_lookup_field_value_from_trait_or_user_id(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    assume(_enabled(payload["integrations"]) and config.prospect_lookup_field_id is not None)
    assume(not {"id", "fid"} & set(_options(payload)))
    event = parse_event(payload)
    lookup = config.prospect_lookup_field_id
    assert lookup is not None
    raw = event.user_id if config.use_user_id_as_lookup_value else event.all_traits.get(lookup)
    expected = None
    if raw is not None and not isinstance(raw, dict | list):
        expected = (str(raw).lower() if isinstance(raw, bool) else str(raw).strip()) or None
    decision = plan(event, config)
    if expected is None:
        assert not isinstance(decision, MatchByLookup)
    else:
        assert isinstance(decision, MatchByLookup)
        assert (decision.lookup_field, decision.value) == (lookup, expected)
        assert decision.fields[lookup] == expected  # the value is always written


@given(events("identify"), settings(version=4))
def test_rule_7_v4_without_keys_matches_the_person_then_the_email(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    assume(_enabled(payload["integrations"]) and not {"id", "fid"} & set(_options(payload)))
    config = config.model_copy(
        update={"prospect_lookup_field_id": None, "use_user_id_as_lookup_value": False}
    )
    event = parse_event(payload)
    decision = plan(event, config)
    email = normalise_email(event.all_traits.get("email"))
    assert isinstance(decision, MatchPerson)
    assert decision.email == email
    assert (decision.user_id, decision.anonymous_id) == (event.user_id, event.anonymous_id)
    assert decision.lookup_field is None
    if email is None:
        # Delivered only if the person is already linked to a prospect; else this is why not.
        assert "email" in decision.missing_email


@given(events(), settings(version=4))
def test_rule_8_v4_never_writes_by_email(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    assert not isinstance(plan(parse_event(payload), config), UpsertByEmail)


@given(events(), settings(version=3))
def test_rule_3_v3_never_plans_by_id_fid_or_lookup(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    decision = plan(parse_event(payload), config)
    assert isinstance(decision, Skip | Reject | UpsertByEmail)


@given(
    st.one_of(json_values, st.dictionaries(st.text(max_size=12), json_values), events()), settings()
)
def test_rule_9_planning_is_total(payload: Any, config: DestinationSettings) -> None:
    decision = plan_payload(payload, config)
    assert isinstance(decision, (Skip, Reject, *WRITES))
    assert decision.reason.strip() and "\n" not in decision.reason


@given(events(), settings())
def test_every_plan_explains_itself_in_one_line(
    payload: dict[str, Any], config: DestinationSettings
) -> None:
    decision = plan(parse_event(payload), config)
    assert decision.reason and "\n" not in decision.reason


@given(events("identify"), settings(version=3), st.sampled_from(["org_id", "customer_key"]))
def test_rule_3_v3_ignores_the_lookup_settings_with_a_warning(
    payload: dict[str, Any], config: DestinationSettings, lookup: str
) -> None:
    with_lookup = DestinationSettings(**{**config.model_dump(), "prospect_lookup_field_id": lookup})
    assert plan(parse_event(payload), with_lookup) == plan(parse_event(payload), config)
    assert with_lookup.lookup_field is None
    [warning] = with_lookup.warnings()
    assert "prospect_lookup_field_id" in warning and "ignored" in warning


@given(
    events("identify"), settings(version=4), prospect_ids, st.permutations(["Webhooks", "Pardot"])
)
def test_rule_2_the_options_object_holding_an_id_wins_whatever_the_key_order(
    payload: dict[str, Any], config: DestinationSettings, prospect_id: int, keys: list[str]
) -> None:
    payload["integrations"] = {"Webhooks": {}, "Pardot": {"id": prospect_id}}
    decision = plan(parse_event(payload), config, destination_keys=keys)
    assert isinstance(decision, UpsertById) and decision.prospect_id == prospect_id
