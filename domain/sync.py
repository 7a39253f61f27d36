"""The sync use case: events in, Pardot writes out, one outcome per event back.

Decisions are made **per prospect**. Each event is first resolved to the Pardot prospect it
concerns (rules 1-4 of the README's matching table); every event that lands on one prospect,
whichever identity it came by, is then merged field by field, the later event time winning,
and compared with what the store remembers having written (value and event time per field,
the email included). So an older event never puts back a value a newer one replaced, within
a batch or across batches and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from domain.errors import (
    AuthenticationExpired,
    ConfigurationError,
    DailyLimitReached,
    PardotError,
    PermanentPardotError,
    RetryableError,
)
from domain.events import IdentifyEvent
from domain.lookup_field import check_lookup_field
from domain.matching import (
    DEFAULT_DESTINATION_KEYS,
    MatchByLookup,
    MatchPerson,
    Reject,
    Skip,
    UpsertByEmail,
    UpsertByFid,
    UpsertById,
    Write,
    plan,
)
from domain.ports import BATCH_LIMIT, FieldStamp, PardotRepository, ProspectStore, ProspectWrite
from domain.prospect import CustomField, Fields, FieldValue, Prospect, stored_form
from domain.settings import DestinationSettings

LOOKUP_SETTING = "prospect_lookup_field_id"


@dataclass(frozen=True)
class Delivered:
    """Pardot holds what the event says. `fields` is what this event wrote (empty: nothing
    needed writing, the event was unchanged); `prospect` is the store's prospect key."""

    reason: str
    prospect_id: int | None = None
    # For the operator's "why?" (explain, history): not part of what the outcome means.
    fields: Mapping[str, FieldValue] = field(default_factory=dict, compare=False)
    prospect: str | None = field(default=None, compare=False)

    @property
    def unchanged(self) -> bool:
        return not self.fields


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Rejected:
    reason: str


@dataclass(frozen=True)
class RetryLater:
    """Try again later: after `delay` seconds if Pardot said so, or at `resume_at`."""

    reason: str
    delay: float | None = None
    resume_at: datetime | None = None


Outcome = Delivered | Skipped | Rejected | RetryLater


@dataclass(frozen=True)
class _Stamped:
    value: FieldValue
    at: datetime | None
    order: int  # arrival position: breaks ties between equal times, the later arrival wins

    def newer_than(self, other: _Stamped | FieldStamp | None) -> bool:
        if other is None or self.at is None or other.at is None:
            return True
        if isinstance(other, FieldStamp):
            return self.at >= other.at
        return (self.at, self.order) >= (other.at, other.order)


@dataclass
class _Group:
    """The events of one batch that name the same identity, merged in time order."""

    identity: str
    members: list[int]
    write: Write
    stamps: dict[str, _Stamped]  # per field, the latest value and its event time
    email: _Stamped | None  # the latest valid email among the members
    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)  # from events without a userId


@dataclass(frozen=True)
class _Target:
    """Where a group's events go: a prospect key, and how it was found."""

    key: str
    reason: str
    prospect_id: int | None = None
    created: bool = False
    # Links that led here; dropped if Pardot says the prospect does not exist.
    via_links: tuple[str, ...] = ()


@dataclass
class _Pending:
    target: _Target
    groups: list[_Group]
    row: ProspectWrite
    stamps: dict[str, FieldStamp]
    written: dict[str, _Stamped]  # what the row writes, each field with the event it came from


class SyncService:
    """Turns events into Pardot writes through a PardotRepository and a ProspectStore."""

    def __init__(
        self,
        repository: PardotRepository,
        settings: DestinationSettings,
        store: ProspectStore,
        *,
        destination_keys: Sequence[str] = DEFAULT_DESTINATION_KEYS,
        create_campaign_id: str | None = None,
        lookup_setting: str = LOOKUP_SETTING,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._store = store
        self._keys = tuple(destination_keys)
        self._create_campaign_id = create_campaign_id
        self._lookup_setting = lookup_setting
        self._lookup: CustomField | None = None
        # Set when a created prospect did not hold the lookup value it was given; cleared
        # when the account's definition of the field changes.
        self._lookup_broken: tuple[str, CustomField] | None = None

    @property
    def settings(self) -> DestinationSettings:
        return self._settings

    async def prepare(self) -> None:
        """Check the setup before the first delivery: the lookup field must exist.

        Raises ConfigurationError while it does not; call again to re-check.
        """
        lookup = self._settings.lookup_field
        if lookup is None:
            return
        if self._lookup is not None and self._lookup_broken is None:
            return
        fields = await self._repository.custom_fields()
        found = check_lookup_field(lookup, fields, setting=self._lookup_setting)
        if self._lookup_broken is not None:
            message, seen = self._lookup_broken
            if found == seen:
                raise ConfigurationError(message)
            self._lookup_broken = None
        self._lookup = found

    async def sync(self, events: Sequence[IdentifyEvent]) -> list[Outcome]:
        """Deliver `events`; the i-th outcome belongs to the i-th event."""
        outcomes: list[Outcome | None] = [None] * len(events)
        groups = self._group(events, outcomes)
        if groups:
            await self.prepare()
            await self._deliver(groups, outcomes)
        return [o if o is not None else Rejected("rejected: not processed") for o in outcomes]

    # -- planning and merging -------------------------------------------------------------

    def _group(
        self, events: Sequence[IdentifyEvent], outcomes: list[Outcome | None]
    ) -> list[_Group]:
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
                self._settings,
                destination_keys=self._keys,
                create_campaign_id=self._create_campaign_id,
            )
            if isinstance(decision, Skip):
                outcomes[index] = Skipped(decision.reason)
            elif isinstance(decision, Reject):
                outcomes[index] = Rejected(decision.reason)
            else:
                by_identity[decision.identity].append((index, decision))
        return [_coalesce(identity, members, events) for identity, members in by_identity.items()]

    # -- delivery ---------------------------------------------------------------------------

    async def _deliver(self, groups: list[_Group], outcomes: list[Outcome | None]) -> None:
        results = await asyncio.gather(*(self._resolve_safely(group) for group in groups))
        by_target: dict[str, list[_Group]] = defaultdict(list)
        targets: dict[str, _Target] = {}
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, _Target):
                if result.created:
                    # The create wrote this group's fields already.
                    done = Delivered(result.reason, result.prospect_id, prospect=result.key)
                    _settle(outcomes, group, done, _written(group))
                    continue
                by_target[result.key].append(group)
                targets.setdefault(result.key, result)
            else:
                _settle(outcomes, group, result)
        pending: list[_Pending] = []
        for key, members in by_target.items():
            prepared = await self._prepare_write(targets[key], members, outcomes)
            if prepared is not None:
                pending.append(prepared)
        for start in range(0, len(pending), BATCH_LIMIT):
            await self._write(pending[start : start + BATCH_LIMIT], outcomes)

    async def _resolve_safely(self, group: _Group) -> _Target | Outcome:
        try:
            return await self._resolve(group)
        except ConfigurationError:
            raise
        except PardotError as error:
            return _outcome_of(error)

    async def _resolve(self, group: _Group) -> _Target | Outcome:
        write = group.write
        if isinstance(write, UpsertByEmail):
            return _Target(f"email:{write.email.lower()}", write.reason)
        if isinstance(write, UpsertById):
            key = str(write.prospect_id)
            return _Target(key, f"updated prospect {key}: {write.reason}", write.prospect_id)
        if isinstance(write, UpsertByFid):
            return await self._by_fid(write)
        email = group.email.value if group.email is not None else None
        assert email is None or isinstance(email, str)
        if isinstance(write, MatchByLookup):
            return await self._by_lookup(group, write, email)
        return await self._by_person(group, write, email)

    async def _by_fid(self, write: UpsertByFid) -> _Target | Outcome:
        identity = f"fid:{write.fid}"
        known = (await self._store.links([identity])).get(identity)
        if known is not None:
            reason = f"updated prospect {known}: {write.reason}"
            return _Target(known, reason, int(known), via_links=(identity,))
        prospect = await self._repository.read_by_fid(write.fid)
        if prospect is None:
            return Rejected(f"rejected: no prospect has fid {write.fid}")
        await self._store.link({identity: str(prospect.id)})
        reason = f"updated prospect {prospect.id}: {write.reason}"
        return _Target(str(prospect.id), reason, prospect.id)

    async def _by_lookup(
        self, group: _Group, write: MatchByLookup, email: str | None
    ) -> _Target | Outcome:
        """Rules 1 and 2: the one prospect holding V; else adopt one with E and no value."""
        value = self._stored(write.value)
        identity = f"lookup:{write.lookup_field}={value}"
        described = f"{write.lookup_field}={write.value}"
        async with self._lock(email):
            holders: dict[int, Prospect] = {}
            linked = (await self._store.links([identity])).get(identity)
            if linked is not None:
                # A marketer may have changed the value in Pardot since: check, never trust.
                prospect = await self._repository.read_by_id(int(linked))
                if prospect is not None and self._holds(prospect, value):
                    holders[prospect.id] = prospect
                else:
                    await self._store.unlink([identity])
            candidates = await self._repository.read_by_email(email) if email else []
            holders.update({p.id: p for p in candidates if self._holds(p, value)})
            if len(holders) > 1:
                ids = ", ".join(str(i) for i in sorted(holders))
                return Rejected(
                    f"rejected: {len(holders)} prospects have {described} (ids {ids}); "
                    "wrote nothing rather than guess"
                )
            if holders:
                [prospect] = holders.values()
                return _Target(
                    str(prospect.id), f"updated prospect {prospect.id}: {described}", prospect.id
                )
            if email is None:
                return Rejected(
                    f"rejected: no prospect has {described} and there is no email to find or "
                    "create one by (Pardot v4 cannot search custom fields)"
                )
            empty = [p for p in candidates if self._lookup_text(p) is None]
            if empty:
                adopted = _latest(empty)
                return _Target(
                    str(adopted.id),
                    f"updated prospect {adopted.id}: adopted for {described}, the latest with "
                    f"email {email} and no {write.lookup_field}",
                    adopted.id,
                )
            reason = f"no prospect has {described}"
            return await self._create(group, email, reason, expect=value)

    async def _by_person(
        self, group: _Group, write: MatchPerson, email: str | None
    ) -> _Target | Outcome:
        """Rules 3 and 4: the person's own prospect; else one found by email; else a new one."""
        person = _person_identity(group)
        if person is not None:
            linked = (await self._store.links([person])).get(person)
            if linked is not None:
                return _Target(
                    linked,
                    f"updated prospect {linked}: linked to {person.split(':', 1)[0]} id",
                    int(linked),
                    via_links=(person,),
                )
        if email is None:
            return Rejected(write.missing_email)
        async with self._lock(email):
            candidates = await self._repository.read_by_email(email)
            if write.lookup_field is None:
                if candidates:
                    latest = _latest(candidates)
                    return _Target(
                        str(latest.id),
                        f"updated prospect {latest.id}: the latest with email {email}",
                        latest.id,
                    )
                return await self._create(group, email, f"no prospect has email {email}")
            free = [p for p in candidates if self._lookup_text(p) is None]
            if free:
                latest = _latest(free)
                return _Target(
                    str(latest.id),
                    f"updated prospect {latest.id}: the latest with email {email} and no "
                    f"{write.lookup_field}",
                    latest.id,
                )
            if len(candidates) == 1:
                [only] = candidates
                return _Target(
                    str(only.id), f"updated prospect {only.id}: the only one with email {email}",
                    only.id,
                )  # fmt: skip
            if candidates:
                ids = ", ".join(str(p.id) for p in sorted(candidates, key=lambda p: p.id))
                return Rejected(
                    f"rejected: {len(candidates)} prospects have email {email}, each with its "
                    f"own {write.lookup_field} (ids {ids}); wrote nothing rather than guess"
                )
            return await self._create(group, email, f"no prospect has email {email}")

    async def _create(
        self, group: _Group, email: str, why: str, *, expect: str | None = None
    ) -> _Target:
        fields = {name: stamped.value for name, stamped in group.stamps.items()}
        created = await self._repository.create(email, {**group.write.create_fields, **fields})
        lookup = self._settings.lookup_field
        if expect is not None and lookup is not None and self._lookup_text(created) != expect:
            message = (
                f"prospect {created.id} was created with {lookup}={expect} but Pardot stored "
                f"{self._lookup_text(created)!r}: check the type of the field {lookup}; "
                "deliveries wait rather than create one prospect per event"
            )
            if self._lookup is not None:
                self._lookup_broken = (message, self._lookup)
            raise ConfigurationError(message)
        key = str(created.id)
        stamps = {name: FieldStamp(s.value, s.at) for name, s in group.stamps.items()}
        if group.email is not None:
            stamps["email"] = FieldStamp(group.email.value, group.email.at)
        await self._store.record(key, stamps)
        await self._store.link(self._links(key, [group], created))
        return _Target(key, f"created prospect {created.id}: {why}", created.id, created=True)

    async def _prepare_write(
        self, target: _Target, groups: list[_Group], outcomes: list[Outcome | None]
    ) -> _Pending | None:
        """Merge every group aimed at one prospect and keep only what is newer than stored."""
        known = await self._store.stamps(target.key)
        merged: dict[str, _Stamped] = {}
        for group in groups:
            for name, stamped in group.stamps.items():
                if stamped.newer_than(merged.get(name)):
                    merged[name] = stamped
        fresh = {n: s for n, s in merged.items() if s.newer_than(known.get(n))}
        v3 = target.key.startswith("email:")
        emails = [g.email for g in groups if g.email is not None]
        if emails and not v3:
            latest = emails[0]
            for candidate in emails[1:]:
                if candidate.newer_than(latest):
                    latest = candidate
            if latest.newer_than(known.get("email")):
                fresh["email"] = latest
        if not fresh and (merged or not v3):
            reason = (
                "up to date: newer values were already written"
                if merged or emails
                else "nothing to write"
            )
            for group in groups:
                _settle(outcomes, group, Delivered(reason, target.prospect_id, prospect=target.key))
            return None
        fields: Fields = {name: stamped.value for name, stamped in fresh.items()}
        if v3:
            write = groups[0].write
            assert isinstance(write, UpsertByEmail)
            create_fields: Fields = {}
            for group in groups:
                create_fields.update(group.write.create_fields)
            row = ProspectWrite("email", write.email, fields, create_fields)
        else:
            row = ProspectWrite("id", target.key, fields, mode="update")
        stamps = {name: FieldStamp(s.value, s.at) for name, s in fresh.items()}
        if v3 and groups[0].email is not None:
            fresh.setdefault("email", groups[0].email)  # the row's key: v3 upserts by it
        return _Pending(target, groups, row, stamps, fresh)

    async def _write(self, chunk: list[_Pending], outcomes: list[Outcome | None]) -> None:
        try:
            errors = await self._repository.write_batch([item.row for item in chunk])
        except ConfigurationError:
            raise
        except PardotError as error:
            for item in chunk:
                for group in item.groups:
                    _settle(outcomes, group, _outcome_of(error))
            return
        for item, row_error in zip(chunk, errors, strict=True):
            if row_error is None:
                await self._store.record(item.target.key, item.stamps)
                await self._store.link(self._links(item.target.key, item.groups, None))
                target = item.target
                outcome: Outcome = Delivered(target.reason, target.prospect_id, prospect=target.key)
                for group in item.groups:
                    _settle(outcomes, group, outcome, item.written)
                continue
            if item.target.via_links:
                # The person's prospect is gone (deleted or merged in Pardot): find it anew.
                await self._store.unlink(list(item.target.via_links))
            failed = _outcome_of(row_error)
            for group in item.groups:
                _settle(outcomes, group, failed)

    # -- helpers ----------------------------------------------------------------------------

    def _links(
        self, key: str, groups: Iterable[_Group], prospect: Prospect | None
    ) -> dict[str, str]:
        links: dict[str, str] = {}
        for group in groups:
            links.update({f"user:{u}": key for u in group.user_ids})
            links.update({f"anonymous:{a}": key for a in group.anonymous_ids})
            write = group.write
            if isinstance(write, MatchByLookup):
                links[f"lookup:{write.lookup_field}={self._stored(write.value)}"] = key
            elif isinstance(write, UpsertByFid):
                links[f"fid:{write.fid}"] = key
        if prospect is not None and prospect.fid:
            links[f"fid:{prospect.fid}"] = key
        return links if not key.startswith("email:") else {}

    def _lock(self, email: str | None) -> contextlib.AbstractAsyncContextManager[None]:
        if email is None:
            return contextlib.nullcontext()
        return self._store.create_lock(email)

    def _stored(self, value: str) -> str:
        kind = self._lookup.type if self._lookup is not None else "Text"
        return stored_form(value, kind)

    def _lookup_text(self, prospect: Prospect) -> str | None:
        lookup = self._settings.lookup_field
        text = prospect.field_text(lookup) if lookup is not None else None
        return None if text is None else self._stored(text)

    def _holds(self, prospect: Prospect, value: str) -> bool:
        return self._lookup_text(prospect) == value


def _coalesce(
    identity: str, members: list[tuple[int, Write]], events: Sequence[IdentifyEvent]
) -> _Group:
    """Merge one identity's writes: per field, the value of the latest event.

    Events without any time sort first, then by arrival.
    """
    ordered = sorted(members, key=lambda m: (_time_key(events[m[0]].effective_time), m[0]))
    stamps: dict[str, _Stamped] = {}
    create_fields: Fields = {}
    email: _Stamped | None = None
    user_ids: set[str] = set()
    anonymous_ids: set[str] = set()
    for index, write in ordered:
        when = events[index].effective_time
        for name, value in write.fields.items():
            stamps[name] = _Stamped(value, when, index)
        create_fields.update(write.create_fields)
        candidate = getattr(write, "email", None)
        if candidate:
            email = _Stamped(candidate, when, index)
        if write.user_id is not None:
            user_ids.add(write.user_id)
        elif write.anonymous_id is not None:
            anonymous_ids.add(write.anonymous_id)
    last = ordered[-1][1]
    merged = replace(last, create_fields=create_fields)
    return _Group(identity, [i for i, _ in members], merged, stamps, email, user_ids, anonymous_ids)


def _person_identity(group: _Group) -> str | None:
    """userId first; an anonymousId only for events that carry no userId."""
    write = group.write
    if write.user_id is not None:
        return f"user:{write.user_id}"
    if write.anonymous_id is not None:
        return f"anonymous:{write.anonymous_id}"
    return None


def _latest(prospects: Sequence[Prospect]) -> Prospect:
    """The most recently updated prospect (Pardot's updated_at), the higher id on a tie."""
    return max(prospects, key=lambda p: (p.updated, p.id))


def _time_key(when: datetime | None) -> tuple[int, float]:
    return (0, 0.0) if when is None else (1, when.timestamp())


def _settle(
    outcomes: list[Outcome | None],
    group: _Group,
    outcome: Outcome,
    written: Mapping[str, _Stamped] | None = None,
) -> None:
    """Give each member its outcome; a delivery names the fields that member's values won."""
    for index in group.members:
        if written and isinstance(outcome, Delivered):
            mine = {name: s.value for name, s in written.items() if s.order == index}
            outcomes[index] = replace(outcome, fields=mine)
        else:
            outcomes[index] = outcome


def _written(group: _Group) -> dict[str, _Stamped]:
    """Everything a create wrote for the group: its fields and its email."""
    return {**group.stamps, **({"email": group.email} if group.email is not None else {})}


def _outcome_of(error: PardotError) -> Outcome:
    """Permanent errors reject the event; everything retryable comes back later.

    ConfigurationError is neither: it propagates and stops the worker, because no event can
    succeed until an operator fixes the setup.
    """
    if isinstance(error, DailyLimitReached):
        return RetryLater(f"retry: {error}", resume_at=error.resume_at)
    if isinstance(error, RetryableError):
        return RetryLater(f"retry: {error}", delay=error.retry_after)
    if isinstance(error, AuthenticationExpired):
        return RetryLater(f"retry: {error}")
    if isinstance(error, PermanentPardotError):
        return Rejected(f"rejected by Pardot: {error}")
    if type(error) is PardotError:
        return Rejected(f"rejected by Pardot: {error}")
    raise error
