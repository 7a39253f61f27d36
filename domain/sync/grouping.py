"""Plan and group: a batch of events in, groups of writes per identity out (pure).

In: the events of one `sync` call and the settings that steer `plan`. Out: one `Group` per
identity (`email:…`, `id:…`, `fid:…`, `lookup:…=…`, or a person) holding its events' writes
merged in time order, and an outcome for every event that goes no further (a duplicate
messageId, a Skip or a Reject of the plan). Every event ends up in exactly one of the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from domain.events import IdentifyEvent
from domain.matching import Reject, Skip, Write, plan
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


@dataclass(frozen=True)
class Grouping:
    """The groups to resolve, and the outcome of each event already decided (else None)."""

    groups: list[Group]
    outcomes: list[Outcome | None]


def group_events(
    events: Sequence[IdentifyEvent],
    settings: DestinationSettings,
    *,
    destination_keys: tuple[str, ...],
    create_campaign_id: str | None,
) -> Grouping:
    """Plan each event; group the writes by identity, a repeated messageId is skipped."""
    outcomes: list[Outcome | None] = [None] * len(events)
    seen: set[str] = set()
    by_identity: dict[str, list[tuple[int, Write]]] = defaultdict(list)
    for index, event in enumerate(events):
        if event.message_id is not None:
            if event.message_id in seen:
                outcomes[index] = Skipped(f"skipped: duplicate messageId {event.message_id}")
                continue
            seen.add(event.message_id)
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
            by_identity[decision.identity].append((index, decision))
    groups = [coalesce(identity, members, events) for identity, members in by_identity.items()]
    return Grouping(groups, outcomes)


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
