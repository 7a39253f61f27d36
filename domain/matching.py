"""`plan(event, settings)`: the seed's matching rules as one pure, total function.

Each plan says what to do with one event and carries a one-line account of why, which
surfaces in dry runs, logs and dead letters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.prospect import Fields, normalise_email, salesforce_id_18, traits_to_fields
from domain.settings import DestinationSettings

DEFAULT_DESTINATION_KEYS: tuple[str, ...] = ("Pardot",)
_PROSPECT_ID = re.compile(r"^[1-9][0-9]{0,18}$")
# Salesforce Lead (00Q) or Contact (003) ids, 15 or 18 characters.
_FID = re.compile(r"^(00Q|003)[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$")


@dataclass(frozen=True)
class Skip:
    """Not for Pardot at all (another event type, opted out by `integrations`)."""

    reason: str


@dataclass(frozen=True)
class Reject:
    """Meant for Pardot but cannot be delivered as sent; retrying will not help."""

    reason: str


@dataclass(frozen=True)
class _Write:
    fields: Fields = field(default_factory=dict)
    # Written only when a prospect is created (the configured campaign), never on update.
    create_fields: Fields = field(default_factory=dict)
    # The person behind the event: links to the prospect it resolves to are kept by these.
    user_id: str | None = None
    anonymous_id: str | None = None


@dataclass(frozen=True)
class UpsertByEmail(_Write):
    """v3: one prospect per email, so the email alone identifies it."""

    email: str = ""

    @property
    def identity(self) -> str:
        return f"email:{self.email.lower()}"

    @property
    def reason(self) -> str:
        return f"upsert by email {self.email}"


@dataclass(frozen=True)
class UpsertById(_Write):
    """v4: the sender named the Pardot prospect id in `integrations.Pardot.id`."""

    prospect_id: int = 0
    email: str | None = None

    @property
    def identity(self) -> str:
        return f"id:{self.prospect_id}"

    @property
    def reason(self) -> str:
        return f"matched by Pardot id {self.prospect_id}"


@dataclass(frozen=True)
class UpsertByFid(_Write):
    """v4: the sender named the Salesforce Lead/Contact id (18-character form)."""

    fid: str = ""
    email: str | None = None

    @property
    def identity(self) -> str:
        return f"fid:{self.fid}"

    @property
    def reason(self) -> str:
        return f"matched by fid {self.fid}"


@dataclass(frozen=True)
class MatchByLookup(_Write):
    """v4: the one prospect whose lookup field holds `value`; adopted or created when none."""

    lookup_field: str = ""
    value: str = ""
    email: str | None = None

    @property
    def identity(self) -> str:
        return f"lookup:{self.lookup_field}={self.value}"

    @property
    def reason(self) -> str:
        return f"match by {self.lookup_field}={self.value}"


@dataclass(frozen=True)
class MatchPerson(_Write):
    """v4 without id, fid or lookup value: the prospect this person is linked to, else one
    found by email (the latest, or the latest without a lookup value), else a new one.

    `lookup_field` is set when the account matches on one (then a prospect holding another
    person's lookup value is not taken); `missing_email` says why an event that is linked to
    no prospect cannot be delivered.
    """

    email: str | None = None
    lookup_field: str | None = None
    missing_email: str = ""

    @property
    def identity(self) -> str:
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.anonymous_id is not None:
            return f"anonymous:{self.anonymous_id}"
        return f"email:{(self.email or '').lower()}"

    @property
    def reason(self) -> str:
        return f"the prospect of this person, or by email {self.email}"


Write = UpsertByEmail | UpsertById | UpsertByFid | MatchByLookup | MatchPerson
Plan = Skip | Reject | Write


def plan(
    event: IdentifyEvent,
    settings: DestinationSettings,
    *,
    destination_keys: Sequence[str] = DEFAULT_DESTINATION_KEYS,
    create_campaign_id: str | None = None,
) -> Plan:
    """Decide what one event does to Pardot. Never raises: every input gets a plan.

    `create_campaign_id` is the campaign of prospects the service creates; the seed's
    campaign id is for the browser tracking code only.
    """
    if event.type != "identify":
        return Skip(f"skipped: {event.type!r} events are not sent to Pardot")
    enabled, options = destination_options(event.integrations, destination_keys)
    if not enabled:
        return Skip(options_reason(event.integrations, destination_keys))
    traits = event.all_traits
    email = normalise_email(traits.get("email"))
    fields = traits_to_fields(traits)
    create_fields: Fields = {}
    if create_campaign_id is not None and "campaign_id" not in fields:
        create_fields["campaign_id"] = create_campaign_id
    person = {"user_id": event.user_id, "anonymous_id": event.anonymous_id}
    if settings.api_version == 3:
        if email is None:
            return Reject(_email_problem(traits, "API v3 matches prospects by email"))
        return UpsertByEmail(fields=fields, create_fields=create_fields, email=email, **person)
    return _plan_v4(event, settings, options, email, fields, create_fields, traits)


def plan_payload(
    payload: object,
    settings: DestinationSettings,
    *,
    destination_keys: Sequence[str] = DEFAULT_DESTINATION_KEYS,
    create_campaign_id: str | None = None,
) -> Plan:
    """`plan` for any decoded JSON value: a malformed event is a Reject, never an exception."""
    try:
        event = parse_event(payload)
    except InvalidEvent as exc:
        return Reject(f"rejected: invalid event: {exc}")
    return plan(
        event, settings, destination_keys=destination_keys, create_campaign_id=create_campaign_id
    )


def _plan_v4(
    event: IdentifyEvent,
    settings: DestinationSettings,
    options: Mapping[str, Any],
    email: str | None,
    fields: Fields,
    create_fields: Fields,
    traits: Mapping[str, Any],
) -> Plan:
    common: dict[str, Any] = {
        "fields": fields,
        "create_fields": create_fields,
        "user_id": event.user_id,
        "anonymous_id": event.anonymous_id,
        "email": email,
    }
    if "id" in options and options["id"] not in (None, ""):
        raw_id = str(options["id"]).strip()
        if isinstance(options["id"], bool) or not _PROSPECT_ID.match(raw_id):
            return Reject(f"rejected: integrations.Pardot.id {raw_id!r} is not a Pardot id")
        return UpsertById(prospect_id=int(raw_id), **common)
    if "fid" in options and options["fid"] not in (None, ""):
        fid = str(options["fid"]).strip()
        if not _FID.match(fid):
            return Reject(f"rejected: integrations.Pardot.fid {fid!r} is not a Lead/Contact id")
        return UpsertByFid(fid=salesforce_id_18(fid), **common)
    lookup = settings.lookup_field
    if lookup is not None:
        value = _lookup_value(event, settings, traits, lookup)
        if value is not None:
            common["fields"] = {**fields, lookup: value}
            return MatchByLookup(lookup_field=lookup, value=value, **common)
    wanted = "an email trait, integrations.Pardot.id or .fid"
    if lookup is not None:
        source = "userId" if settings.use_user_id_as_lookup_value else f"the {lookup} trait"
        wanted += f", or {source} for the lookup field {lookup}"
    return MatchPerson(
        lookup_field=lookup,
        missing_email=_email_problem(traits, f"needs {wanted}"),
        **common,
    )


def _lookup_value(
    event: IdentifyEvent,
    settings: DestinationSettings,
    traits: Mapping[str, Any],
    lookup: str,
) -> str | None:
    raw = event.user_id if settings.use_user_id_as_lookup_value else traits.get(lookup)
    if raw is None or isinstance(raw, dict | list):
        return None
    text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw).strip()
    return text or None


def _email_problem(traits: Mapping[str, Any], why: str) -> str:
    if "email" not in traits or traits["email"] in (None, ""):
        return f"rejected: missing trait email ({why})"
    return f"rejected: trait email {str(traits['email'])[:80]!r} is not a valid address ({why})"


def destination_options(
    integrations: Mapping[str, Any], keys: Sequence[str]
) -> tuple[bool, Mapping[str, Any]]:
    """Whether `integrations` lets this event through, and our options object if any.

    Keys are case-sensitive. A key set to false wins; an options object or true enables
    even under `All: false`; a missing key follows `All`, which defaults to enabled.
    """
    named = [integrations[key] for key in keys if key in integrations]
    if any(value is False for value in named):
        return False, {}
    objects = [value for value in named if isinstance(value, dict)]
    # Whichever key carries the prospect id or fid wins, so the order of the configured
    # keys cannot hide them behind an empty options object.
    options = next(
        (o for o in objects if o.get("id") not in (None, "") or o.get("fid") not in (None, "")),
        next(iter(objects), None),
    )
    if options is not None:
        return True, options
    if any(value is True for value in named):
        return True, {}
    return integrations.get("All") is not False, {}


def options_reason(integrations: Mapping[str, Any], keys: Sequence[str]) -> str:
    for key in keys:
        if integrations.get(key) is False:
            return f"skipped: integrations.{key} is false"
    return f"skipped: integrations.All is false and {' / '.join(keys)} is not enabled"
