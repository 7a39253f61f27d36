"""The sync use case: events in, Pardot writes out, one outcome per event back.

Several events for one identity are coalesced into one write in timestamp order (later wins
per field, ties by arrival), so an Engage `true` then `false` ends `false` whatever order
they arrived in. Field times are remembered per identity, so an older event arriving in a
later batch cannot overwrite a newer value either.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from domain.errors import (
    AuthenticationExpired,
    DailyLimitReached,
    PardotError,
    PermanentPardotError,
    RetryableError,
)
from domain.events import IdentifyEvent
from domain.matching import (
    DEFAULT_DESTINATION_KEYS,
    MatchByLookup,
    Reject,
    Skip,
    UpsertByEmail,
    UpsertByFid,
    UpsertById,
    UpsertLatestByEmail,
    Write,
    plan,
)
from domain.ports import BATCH_LIMIT, IdentityMap, PardotRepository, ProspectWrite
from domain.prospect import Fields
from domain.settings import DestinationSettings


@dataclass(frozen=True)
class Delivered:
    reason: str
    prospect_id: int | None = None


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


@dataclass
class _Group:
    """All the events of one batch that write to the same identity."""

    identity: str
    members: list[int]
    write: Write
    times: dict[str, datetime]


@dataclass(frozen=True)
class _Pending:
    group: _Group
    row: ProspectWrite
    reason: str
    prospect_id: int | None = None


class SyncService:
    """Turns events into Pardot writes through a PardotRepository."""

    def __init__(
        self,
        repository: PardotRepository,
        settings: DestinationSettings,
        identities: IdentityMap,
        *,
        destination_keys: Sequence[str] = DEFAULT_DESTINATION_KEYS,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._identities = identities
        self._keys = tuple(destination_keys)

    async def sync(self, events: Sequence[IdentifyEvent]) -> list[Outcome]:
        """Deliver `events`; the i-th outcome belongs to the i-th event."""
        outcomes: list[Outcome | None] = [None] * len(events)
        groups = self._group(events, outcomes)
        # Two identities can share an email; finding-or-creating under one lock per email
        # keeps two concurrent resolutions from both creating a prospect. The locks live for
        # one call only, so a long-running service does not keep one per email ever seen.
        locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        results = await asyncio.gather(*(self._resolve(group, locks) for group in groups.values()))
        pending: list[_Pending] = []
        for group, result in zip(groups.values(), results, strict=True):
            if isinstance(result, _Pending):
                pending.append(result)
            else:
                self._settle(outcomes, group, result)
        for start in range(0, len(pending), BATCH_LIMIT):
            await self._write(pending[start : start + BATCH_LIMIT], outcomes)
        return [o if o is not None else Rejected("rejected: not processed") for o in outcomes]

    def _group(
        self, events: Sequence[IdentifyEvent], outcomes: list[Outcome | None]
    ) -> dict[str, _Group]:
        seen: set[str] = set()
        planned: list[tuple[int, Write]] = []
        for index, event in enumerate(events):
            if event.message_id is not None:
                if event.message_id in seen:
                    outcomes[index] = Skipped(f"skipped: duplicate messageId {event.message_id}")
                    continue
                seen.add(event.message_id)
            decision = plan(event, self._settings, destination_keys=self._keys)
            if isinstance(decision, Skip):
                outcomes[index] = Skipped(decision.reason)
            elif isinstance(decision, Reject):
                outcomes[index] = Rejected(decision.reason)
            else:
                planned.append((index, decision))
        by_identity: dict[str, list[tuple[int, Write]]] = defaultdict(list)
        for index, write in planned:
            by_identity[write.identity].append((index, write))
        return {
            identity: _coalesce(identity, members, events)
            for identity, members in by_identity.items()
        }

    async def _resolve(
        self, group: _Group, locks: defaultdict[str, asyncio.Lock]
    ) -> _Pending | Outcome:
        """Drop what newer events already wrote, then find which prospect to write."""
        try:
            known = await self._identities.field_times(group.identity)
            fresh = {
                name: value
                for name, value in group.write.fields.items()
                if name not in known or name not in group.times or group.times[name] >= known[name]
            }
            if group.write.fields and not fresh:
                # Fields were stamped before, so the prospect exists and holds newer values.
                return Delivered("up to date: newer values were already written")
            group.write = replace(group.write, fields=fresh)
            return await self._target(group, locks)
        except PardotError as error:
            return _outcome_of(error)

    async def _target(
        self, group: _Group, locks: defaultdict[str, asyncio.Lock]
    ) -> _Pending | Outcome:
        write = group.write
        if isinstance(write, UpsertByEmail):
            row = ProspectWrite("email", write.email, write.fields, write.create_fields)
            return _Pending(group, row, write.reason)
        if isinstance(write, UpsertById | UpsertByFid):
            fields = _with_email(write.fields, write.email)
            # Update only: Pardot's upsert would create a new prospect (with a new id) on every
            # call naming an id or fid it does not know, a duplicate per event.
            if isinstance(write, UpsertById):
                row = ProspectWrite("id", str(write.prospect_id), fields, mode="update")
            else:
                row = ProspectWrite("fid", write.fid, fields, mode="update")
            return _Pending(group, row, write.reason)
        async with locks[(write.email or "").lower()]:
            if isinstance(write, MatchByLookup):
                return await self._match_lookup(group, write)
            return await self._latest_by_email(group, write)

    async def _match_lookup(self, group: _Group, write: MatchByLookup) -> _Pending | Outcome:
        fields = _with_email(write.fields, write.email)
        known_id = await self._identities.prospect_id(group.identity)
        if known_id is not None:
            prospect = await self._repository.read_by_id(known_id)
            if prospect is not None and prospect.field_text(write.lookup_field) == write.value:
                row = ProspectWrite("id", str(known_id), fields, mode="update")
                reason = f"updated prospect {known_id}: {write.lookup_field}={write.value}"
                return _Pending(group, row, reason, known_id)
        if write.email is None:
            return Rejected(
                f"rejected: no email to search prospects by for {write.lookup_field}="
                f"{write.value} (Pardot v4 cannot search custom fields)"
            )
        candidates = await self._repository.read_by_email(write.email)
        matches = [p for p in candidates if p.field_text(write.lookup_field) == write.value]
        if len(matches) > 1:
            ids = ", ".join(str(p.id) for p in sorted(matches, key=lambda p: p.id))
            return Rejected(
                f"rejected: {len(matches)} prospects have {write.lookup_field}={write.value} "
                f"(ids {ids}); wrote nothing rather than guess"
            )
        if matches:
            prospect_id = matches[0].id
            await self._identities.remember(group.identity, prospect_id)
            row = ProspectWrite("id", str(prospect_id), fields, mode="update")
            reason = f"updated prospect {prospect_id}: {write.lookup_field}={write.value}"
            return _Pending(group, row, reason, prospect_id)
        created = await self._repository.create(write.email, {**write.create_fields, **fields})
        await self._identities.remember(group.identity, created.id)
        await self._record(group)
        return Delivered(
            f"created prospect {created.id}: no prospect has {write.lookup_field}={write.value}",
            created.id,
        )

    async def _latest_by_email(
        self, group: _Group, write: UpsertLatestByEmail
    ) -> _Pending | Outcome:
        candidates = await self._repository.read_by_email(write.email)
        if candidates:
            latest = max(candidates, key=lambda p: (p.updated, p.id))
            row = ProspectWrite("id", str(latest.id), write.fields, mode="update")
            reason = f"updated prospect {latest.id}: the latest with email {write.email}"
            return _Pending(group, row, reason, latest.id)
        created = await self._repository.create(
            write.email, {**write.create_fields, **write.fields}
        )
        await self._record(group)
        return Delivered(
            f"created prospect {created.id}: no prospect has email {write.email}", created.id
        )

    async def _write(self, chunk: list[_Pending], outcomes: list[Outcome | None]) -> None:
        try:
            errors = await self._repository.write_batch([item.row for item in chunk])
        except PardotError as error:
            for item in chunk:
                self._settle(outcomes, item.group, _outcome_of(error))
            return
        for item, row_error in zip(chunk, errors, strict=True):
            if row_error is None:
                await self._record(item.group)
                self._settle(outcomes, item.group, Delivered(item.reason, item.prospect_id))
            else:
                self._settle(outcomes, item.group, _outcome_of(row_error))

    async def _record(self, group: _Group) -> None:
        stamped = {name: group.times[name] for name in group.write.fields if name in group.times}
        if stamped:
            await self._identities.record_field_times(group.identity, stamped)

    @staticmethod
    def _settle(outcomes: list[Outcome | None], group: _Group, outcome: Outcome) -> None:
        for index in group.members:
            outcomes[index] = outcome


def _coalesce(
    identity: str, members: list[tuple[int, Write]], events: Sequence[IdentifyEvent]
) -> _Group:
    """Merge one identity's writes: oldest first, so a later event wins each field it sets.

    Events without any timestamp sort first, then by arrival.
    """
    ordered = sorted(members, key=lambda m: (_time_key(events[m[0]].effective_time), m[0]))
    fields: Fields = {}
    create_fields: Fields = {}
    times: dict[str, datetime] = {}
    email: str | None = None
    for index, write in ordered:
        fields.update(write.fields)
        create_fields.update(write.create_fields)
        email = getattr(write, "email", None) or email
        when = events[index].effective_time
        for name in write.fields:
            if when is not None:
                times[name] = when
            else:
                times.pop(name, None)
    last = ordered[-1][1]
    merged = replace(last, fields=fields, create_fields=create_fields)
    if email is not None and hasattr(merged, "email"):
        merged = replace(merged, email=email)
    return _Group(identity, [index for index, _ in members], merged, times)


def _time_key(when: datetime | None) -> tuple[int, float]:
    return (0, 0.0) if when is None else (1, when.timestamp())


def _with_email(fields: Fields, email: str | None) -> Fields:
    return fields if email is None else {**fields, "email": email}


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
