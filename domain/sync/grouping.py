"""Plan and group: a batch of events in, groups of writes per identity out (pure).

In: the events of one `sync` call, the settings that steer `plan` and the form Pardot stores
lookup values in (so `7` and `7.0` of a Number field are one identity). Out: one `Group` per
identity (`email:…`, `id:…`, `fid:…`, `lookup:…=…`, or a person) holding its events' writes
merged in time order, and an outcome for every event that goes no further (a duplicate
messageId, a Skip or a Reject of the plan). Every event ends up in exactly one of the two.

`waves` orders the same events for delivery: one person's events (userId, else anonymousId)
that fall into several groups are split into successive waves in arrival order, each wave
resolved and written before the next, exactly as separate batches would be.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from domain.events import IdentifyEvent
from domain.matching import MatchByLookup, Reject, Skip, Write, plan
from domain.ports import FieldStamp
from domain.prospect import Fields, FieldValue
from domain.settings import DestinationSettings
from domain.sync.outcomes import Delivered, Outcome, Rejected, Skipped


@dataclass(frozen=True)
class Stamped:
    """A value with the time of the event it came from and that event's arrival position."""

    value: FieldValue
    at: datetime | None
    order: int  # arrival position: breaks ties between equal times, the later arrival wins

    def newer_than(self, other: Stamped | FieldStamp | None) -> bool:
        if other is None or self.at is None or other.at is None:
            return True
        if isinstance(other, FieldStamp):
            return self.at >= other.at
        return (self.at, self.order) >= (other.at, other.order)


@dataclass
class Group:
    """The events of one batch that name the same identity, merged in time order."""

    identity: str
    members: list[int]
    write: Write
    stamps: dict[str, Stamped]  # per field, the latest value and its event time
    email: Stamped | None  # the latest valid email among the members
    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)  # from events without a userId
    # Prospects these events were aimed at that Pardot no longer has (deleted, merged away):
    # what was written there, and when, still decides what is newer on the prospect found next.
    gone_from: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Grouping:
    """The groups to resolve, and the outcome of each event already decided (else None)."""

    groups: list[Group]
    outcomes: list[Outcome | None]
    # The same events, split so that each person's groups resolve one after the other.
    waves: list[list[Group]] = field(default_factory=list)


@dataclass(frozen=True)
class Planned:
    """Each event's write (arrival position, write), and the outcome of those that have none."""

    writes: list[tuple[int, Write]]
    outcomes: list[Outcome | None]


def as_sent(value: str) -> str:
    return value


def group_events(
    events: Sequence[IdentifyEvent],
    settings: DestinationSettings,
    *,
    destination_keys: tuple[str, ...],
    create_campaign_id: str | None,
    stored: Callable[[str], str] = as_sent,
) -> Grouping:
    """Plan each event; group the writes by identity, a repeated messageId is skipped."""
    planned = plan_events(
        events, settings, destination_keys=destination_keys, create_campaign_id=create_campaign_id
    )
    return group_planned(planned, events, stored)


def plan_events(
    events: Sequence[IdentifyEvent],
    settings: DestinationSettings,
    *,
    destination_keys: tuple[str, ...],
    create_campaign_id: str | None,
) -> Planned:
    """Plan each event; a messageId repeated by the same sender (`IdentifyEvent.sender`)
    is skipped."""
    outcomes: list[Outcome | None] = [None] * len(events)
    # The queue's scope: one sender's messageId never makes another sender's event vanish.
    seen: set[tuple[str, str]] = set()
    writes: list[tuple[int, Write]] = []
    for index, event in enumerate(events):
        if event.message_id is not None:
            sent = (event.sender, event.message_id)
            if sent in seen:
                outcomes[index] = Skipped(f"skipped: duplicate messageId {event.message_id}")
                continue
            seen.add(sent)
        decision = plan(
            event,
            settings,
            destination_keys=destination_keys,
            create_campaign_id=create_campaign_id,
        )
        if isinstance(decision, Skip):
            outcomes[index] = Skipped(decision.reason)
        elif isinstance(decision, Reject):
            outcomes[index] = Rejected(decision.reason)
        else:
            writes.append((index, decision))
    return Planned(writes, outcomes)


def group_planned(
    planned: Planned, events: Sequence[IdentifyEvent], stored: Callable[[str], str] = as_sent
) -> Grouping:
    """Group the writes by identity, lookup values in the form Pardot stores them (`stored`),
    and split them into waves per person."""
    by_identity: dict[str, list[tuple[int, Write]]] = defaultdict(list)
    by_wave: dict[tuple[int, str], list[tuple[int, Write]]] = defaultdict(list)
    wave_of = person_waves(planned.writes, stored)
    for index, write in planned.writes:
        identity = identity_of(write, stored)
        by_identity[identity].append((index, write))
        by_wave[(wave_of[index], identity)].append((index, write))
    groups = [coalesce(identity, members, events) for identity, members in by_identity.items()]
    if max(wave_of.values(), default=0) == 0:
        waves = [groups] if groups else []
    else:
        waves = [[] for _ in range(max(wave_of.values()) + 1)]
        for (wave, identity), members in by_wave.items():
            waves[wave].append(coalesce(identity, members, events))
    return Grouping(groups, planned.outcomes, waves)


def identity_of(write: Write, stored: Callable[[str], str] = as_sent) -> str:
    """The write's identity, a lookup value in the form Pardot stores it."""
    if isinstance(write, MatchByLookup):
        return f"lookup:{write.lookup_field}={stored(write.value)}"
    return write.identity


def person_of(write: Write) -> str | None:
    """Who the event is about: its userId, else its anonymousId."""
    if write.user_id is not None:
        return f"user:{write.user_id}"
    if write.anonymous_id is not None:
        return f"anonymous:{write.anonymous_id}"
    return None


def person_waves(
    writes: Sequence[tuple[int, Write]], stored: Callable[[str], str]
) -> dict[int, int]:
    """The wave of each write: a person's writes stay in one wave while they share an identity
    (in arrival order); a write of another identity starts the person's next wave. So one
    batch resolves as the same events in separate batches would: the lookup group that
    creates the user's prospect links it before the user's events without the value look.

    A new email starts a new wave too (events without email stay in the run): the earlier
    email resolves first, as it would alone, and a later one then changes it in place through
    the person's link, or, for an anonymousId (weak evidence: two visitors may share a
    device), finds its own prospect.
    """
    wave_of: dict[int, int] = {}
    current: dict[str, tuple[int, str, str | None]] = {}  # person → wave, identity, email
    for index, write in writes:
        person = person_of(write)
        identity = identity_of(write, stored)
        email = _email_of(write)
        if person is None:
            wave_of[index] = 0
            continue
        seen = current.get(person)
        if seen is None:
            wave, run_email = 0, email
        else:
            wave, run_identity, run_email = seen
            if run_identity != identity or (email and run_email and email != run_email):
                wave, run_email = wave + 1, email
            else:
                run_email = run_email or email
        current[person] = (wave, identity, run_email)
        wave_of[index] = wave
    return wave_of


def _email_of(write: Write) -> str | None:
    email = getattr(write, "email", None)
    return email.strip().lower() if isinstance(email, str) and email else None


def coalesce(
    identity: str, members: list[tuple[int, Write]], events: Sequence[IdentifyEvent]
) -> Group:
    """Merge one identity's writes: per field, the value of the latest event.

    Events without any time sort first, then by arrival.
    """
    ordered = sorted(members, key=lambda m: (time_key(events[m[0]].effective_time), m[0]))
    stamps: dict[str, Stamped] = {}
    create_fields: Fields = {}
    email: Stamped | None = None
    user_ids: set[str] = set()
    anonymous_ids: set[str] = set()
    for index, write in ordered:
        when = events[index].effective_time
        for name, value in write.fields.items():
            stamps[name] = Stamped(value, when, index)
        create_fields.update(write.create_fields)
        candidate = getattr(write, "email", None)
        if candidate:
            email = Stamped(candidate, when, index)
        if write.user_id is not None:
            user_ids.add(write.user_id)
        elif write.anonymous_id is not None:
            anonymous_ids.add(write.anonymous_id)
    last = ordered[-1][1]
    merged = replace(last, create_fields=create_fields)
    return Group(identity, [i for i, _ in members], merged, stamps, email, user_ids, anonymous_ids)


def time_key(when: datetime | None) -> tuple[int, float]:
    return (0, 0.0) if when is None else (1, when.timestamp())


def settle(
    outcomes: list[Outcome | None],
    group: Group,
    outcome: Outcome,
    written: Mapping[str, Stamped] | None = None,
) -> None:
    """Give each member its outcome; a delivery names the fields that member's values won."""
    for index in group.members:
        if written and isinstance(outcome, Delivered):
            mine = {name: s.value for name, s in written.items() if s.order == index}
            outcomes[index] = replace(outcome, fields=mine)
        else:
            outcomes[index] = outcome
