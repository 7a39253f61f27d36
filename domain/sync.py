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
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from domain.errors import (
    AuthenticationExpired,
    ConfigurationError,
    DailyLimitReached,
    OutcomeUnknown,
    PardotError,
    PermanentPardotError,
    RetryableError,
)
from domain.events import IdentifyEvent
from domain.index import BudgetShort, IndexKeeper
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

log = logging.getLogger(__name__)

LOOKUP_SETTING = "prospect_lookup_field_id"
UNCHANGED = "unchanged"  # the reason of a delivery whose values Pardot already holds
# Standard fields Pardot reads back as 1 or null (PARDOT_API.md).
_BOOLEAN_FIELDS = frozenset({"is_do_not_email", "is_do_not_call", "is_reviewed", "is_starred"})


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
    indexed: Prospect | None = None  # what the index holds for the prospect, if anything
    # What the row writes, each field with the event it came from (for the outcomes).
    written: dict[str, _Stamped] = field(default_factory=dict)


@dataclass(frozen=True)
class _NeedsCreate:
    """The index says no prospect fits: create one, once the index is fresh and locked."""

    group: _Group
    email: str
    why: str
    expect: str | None = None


@dataclass(frozen=True)
class _Context:
    """How one call of `sync` decides: from the index, or by reading Pardot one by one."""

    index: IndexKeeper | None = None
    locked: bool = False  # phase two: the create locks of the emails are held


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
        index: IndexKeeper | None = None,
        change_detection: bool = True,
        waiting: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`index` lets decisions read the account from the store (scanned when it pays,
        refreshed from Pardot's own times); `waiting` counts the queued events, which decides
        whether a scan pays. `change_detection` skips writes of values the index holds.
        """
        self._repository = repository
        self._keeper = index
        self._change_detection = change_detection
        self._waiting = waiting
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
            context = await self._context(len(groups))
            await self._deliver(groups, outcomes, context)
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

    async def _context(self, groups: int) -> _Context:
        """Decide from the index when it is complete (scanning first when that pays)."""
        keeper = self._keeper
        if keeper is None:
            return _Context()
        try:
            waiting = groups + (await self._waiting() if self._waiting is not None else 0)
            if await keeper.before_batch(waiting):
                return _Context(index=keeper)
        except ConfigurationError:
            raise
        except PardotError as error:
            log.warning("prospect index unavailable for this batch: %s", error)
        keeper.note_read_one_by_one(groups)
        return _Context()

    async def _deliver(
        self,
        groups: list[_Group],
        outcomes: list[Outcome | None],
        context: _Context,
        *,
        again: bool = False,
    ) -> None:
        results: list[_Target | Outcome | _NeedsCreate] = list(
            await asyncio.gather(*(self._resolve_safely(group, context) for group in groups))
        )
        needs = [i for i, result in enumerate(results) if isinstance(result, _NeedsCreate)]
        if needs:
            created = await self._create_batches(
                [r for r in results if isinstance(r, _NeedsCreate)], context
            )
            for position, outcome in zip(needs, created, strict=True):
                results[position] = outcome
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
            elif isinstance(result, _NeedsCreate):
                raise AssertionError("creates are settled above")
            else:
                _settle(outcomes, group, result)
        indexed = await self._indexed(list(targets.values()), context)
        # Concurrently, so the store's group commit carries many prospects per transaction.
        prepared = await asyncio.gather(
            *(
                self._prepare_write(targets[key], members, outcomes, indexed.get(key))
                for key, members in by_target.items()
            )
        )
        pending = [item for item in prepared if item is not None]
        chunks = [pending[i : i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
        lists = await asyncio.gather(*(self._write(c, outcomes, context) for c in chunks))
        gone = [group for groups_ in lists for group in groups_]
        if gone and not again:
            # The index named prospects Pardot no longer has: they are dropped, look again.
            await self._deliver(gone, outcomes, context, again=True)
        if context.index is not None and any(p.row.by == "email" for p in pending):
            # v3 upserts may have created prospects: learn them, batches return no ids.
            known = {key for key, value in indexed.items() if value is not None}
            if any(p.target.key not in known for p in pending):
                with contextlib.suppress(PardotError, BudgetShort):
                    await context.index.learn_created()

    async def _resolve_safely(
        self, group: _Group, context: _Context
    ) -> _Target | Outcome | _NeedsCreate:
        try:
            return await self._resolve(group, context)
        except ConfigurationError:
            raise
        except BudgetShort as short:
            return RetryLater(f"retry: {short}", delay=short.seconds_to_reset)
        except PardotError as error:
            return _outcome_of(error)

    async def _resolve(self, group: _Group, context: _Context) -> _Target | Outcome | _NeedsCreate:
        write = group.write
        if isinstance(write, UpsertByEmail):
            return _Target(f"email:{write.email.lower()}", write.reason)
        if isinstance(write, UpsertById):
            return _updated(write.prospect_id, write.reason)
        if isinstance(write, UpsertByFid):
            return await self._by_fid(write, context)
        email = group.email.value if group.email is not None else None
        assert email is None or isinstance(email, str)
        if isinstance(write, MatchByLookup):
            return await self._by_lookup(group, write, email, context)
        return await self._by_person(group, write, email, context)

    async def _by_fid(self, write: UpsertByFid, context: _Context) -> _Target | Outcome:
        identity = f"fid:{write.fid}"
        known = (await self._store.links([identity])).get(identity)
        if known is not None:
            return _updated(int(known), write.reason, via_links=(identity,))
        if context.index is not None:
            prospect = await context.index.index.by_fid(write.fid)
            if prospect is None:
                # Absent from the index: only a fresh look may say so.
                await context.index.refresh(needed=True)
                prospect = await context.index.index.by_fid(write.fid)
        else:
            prospect = await self._repository.read_by_fid(write.fid)
        if prospect is None:
            return Rejected(f"rejected: no prospect has fid {write.fid}")
        await self._store.link({identity: str(prospect.id)})
        return _updated(prospect.id, write.reason)

    async def _by_lookup(
        self, group: _Group, write: MatchByLookup, email: str | None, context: _Context
    ) -> _Target | Outcome | _NeedsCreate:
        """Rules 1 and 2: the one prospect holding V; else adopt one with E and no value.

        From the index, the prospects holding V are all of them; without it, those linked to
        V and those with email E (Pardot cannot search custom fields).
        """
        value = self._stored(write.value)
        identity = f"lookup:{write.lookup_field}={value}"
        described = f"{write.lookup_field}={write.value}"
        async with self._lock(email, context):
            holders: dict[int, Prospect] = {}
            if context.index is not None:
                holders.update({p.id: p for p in await context.index.index.holding(value)})
                candidates = await self._with_email(email, context)
            else:
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
                return _updated(prospect.id, described)
            if email is None:
                return Rejected(
                    f"rejected: no prospect has {described} and there is no email to find or "
                    "create one by (Pardot v4 cannot search custom fields)"
                )
            empty = [p for p in candidates if self._lookup_text(p) is None]
            if empty:
                adopted = _latest(empty)
                return _updated(
                    adopted.id,
                    f"adopted for {described}, the latest with email {email} and no "
                    f"{write.lookup_field}",
                )
            need = _NeedsCreate(group, email, f"no prospect has {described}", expect=value)
            return need if context.index is not None else await self._create(need)

    async def _by_person(
        self, group: _Group, write: MatchPerson, email: str | None, context: _Context
    ) -> _Target | Outcome | _NeedsCreate:
        """Rules 3 and 4: the person's own prospect; else one found by email; else a new one."""
        person = _person_identity(group)
        if person is not None:
            linked = (await self._store.links([person])).get(person)
            if linked is not None:
                kind = person.split(":", 1)[0]
                return _updated(int(linked), f"linked to {kind} id", via_links=(person,))
        if email is None:
            return Rejected(write.missing_email)
        async with self._lock(email, context):
            candidates = await self._with_email(email, context)
            if write.lookup_field is None:
                if candidates:
                    return _updated(_latest(candidates).id, f"the latest with email {email}")
                need = _NeedsCreate(group, email, f"no prospect has email {email}")
                return need if context.index is not None else await self._create(need)
            free = [p for p in candidates if self._lookup_text(p) is None]
            if free:
                return _updated(
                    _latest(free).id,
                    f"the latest with email {email} and no {write.lookup_field}",
                )
            if len(candidates) == 1:
                [only] = candidates
                return _updated(only.id, f"the only one with email {email}")
            if candidates:
                ids = ", ".join(str(p.id) for p in sorted(candidates, key=lambda p: p.id))
                return Rejected(
                    f"rejected: {len(candidates)} prospects have email {email}, each with its "
                    f"own {write.lookup_field} (ids {ids}); wrote nothing rather than guess"
                )
            need = _NeedsCreate(group, email, f"no prospect has email {email}")
            return need if context.index is not None else await self._create(need)

    async def _with_email(self, email: str | None, context: _Context) -> list[Prospect]:
        if email is None:
            return []
        if context.index is not None:
            found = await context.index.index.by_emails([email])
            return found.get(email.strip().lower(), [])
        return await self._repository.read_by_email(email)

    async def _create(self, need: _NeedsCreate) -> _Target:
        """One create, read straight from Pardot's answer (without the index)."""
        group = need.group
        fields = {name: stamped.value for name, stamped in group.stamps.items()}
        created = await self._repository.create(need.email, {**group.write.create_fields, **fields})
        return await self._created(need, created)

    async def _create_batches(
        self, needs: list[_NeedsCreate], context: _Context
    ) -> list[_Target | Outcome]:
        """Create what the index says is missing, 50 prospects a call.

        The create locks of every email are held (in one order, so two processes cannot
        deadlock), the index is refreshed (a form may have created one meanwhile) and each
        event resolved again; only then are the rest created, one email per round so that
        a second event for an email finds the prospect the first created.
        """
        keeper = context.index
        assert keeper is not None
        results: list[_Target | Outcome | None] = [None] * len(needs)
        emails = sorted({need.email.strip().lower() for need in needs})
        async with contextlib.AsyncExitStack() as held:
            for email in emails:
                await held.enter_async_context(self._store.create_lock(email))
            locked = replace(context, locked=True)
            try:
                await keeper.refresh(needed=True)
            except BudgetShort as short:
                return [RetryLater(f"retry: {short}", delay=short.seconds_to_reset)] * len(needs)
            except ConfigurationError:
                raise
            except PardotError as error:
                return [_outcome_of(error)] * len(needs)
            remaining = list(range(len(needs)))
            while remaining:
                again = await asyncio.gather(
                    *(self._resolve_safely(needs[i].group, locked) for i in remaining)
                )
                creating: dict[str, tuple[int, _NeedsCreate]] = {}
                later: list[int] = []
                for position, result in zip(remaining, again, strict=True):
                    if isinstance(result, _NeedsCreate):
                        key = result.email.strip().lower()
                        if key in creating:
                            later.append(position)
                        else:
                            creating[key] = (position, result)
                    else:
                        results[position] = result
                if not creating:
                    break
                made = await self._create_rows([need for _, need in creating.values()], keeper)
                for (position, _), outcome in zip(creating.values(), made, strict=True):
                    results[position] = outcome
                remaining = later
        return [r if r is not None else Rejected("rejected: not processed") for r in results]

    async def _create_rows(
        self, needs: list[_NeedsCreate], keeper: IndexKeeper
    ) -> list[_Target | Outcome]:
        """batchCreate, then learn the new ids from a `created_after` query.

        A batch whose answer was lost may have created its rows: the query says which exist,
        so nothing is created twice; the others come back later and are looked for again.
        """
        before = await keeper.index.by_emails([need.email for need in needs])
        seen = {p.id for found in before.values() for p in found}
        rows = [
            ProspectWrite(
                "email",
                need.email,
                {name: stamped.value for name, stamped in need.group.stamps.items()},
                dict(need.group.write.create_fields),
                mode="create",
            )
            for need in needs
        ]
        chunks = [
            range(i, min(i + BATCH_LIMIT, len(rows))) for i in range(0, len(rows), BATCH_LIMIT)
        ]
        answers = await asyncio.gather(
            *(self._repository.write_batch([rows[i] for i in chunk]) for chunk in chunks),
            return_exceptions=True,
        )
        failed: dict[int, Outcome] = {}
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, ConfigurationError):
                raise answer
            if isinstance(answer, OutcomeUnknown):
                continue  # maybe created: the query below tells
            if isinstance(answer, PardotError):
                failed.update({i: _outcome_of(answer) for i in chunk})
            elif isinstance(answer, BaseException):
                raise answer
            else:
                for i, error in zip(chunk, answer, strict=True):
                    if error is not None:
                        failed[i] = _outcome_of(error)
        learned: dict[str, Prospect] = {}
        if len(failed) < len(needs):
            try:
                for prospect in await keeper.learn_created():
                    key = (prospect.email or "").strip().lower()
                    if prospect.id not in seen and (
                        key not in learned or prospect.id > learned[key].id
                    ):
                        learned[key] = prospect
            except BudgetShort as short:
                return [
                    failed.get(i) or RetryLater(f"retry: {short}", delay=short.seconds_to_reset)
                    for i in range(len(needs))
                ]

        async def result(i: int, need: _NeedsCreate) -> _Target | Outcome:
            created = learned.get(need.email.strip().lower())
            if i in failed:
                return failed[i]
            if created is None:
                return RetryLater(
                    "retry: Pardot does not show the prospect created for this event yet"
                )
            return await self._created(need, created)

        return list(await asyncio.gather(*(result(i, need) for i, need in enumerate(needs))))

    async def _created(self, need: _NeedsCreate, created: Prospect) -> _Target:
        """Remember what a create wrote, and check it kept the lookup value it was given."""
        group, lookup = need.group, self._settings.lookup_field
        held = self._lookup_text(created)
        if need.expect is not None and lookup is not None and held != need.expect:
            message = (
                f"prospect {created.id} was created with {lookup}={need.expect} but Pardot "
                f"stored {held!r}: check the type of the field {lookup}; deliveries wait "
                "rather than create one prospect per event"
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
        return _Target(key, f"created prospect {created.id}: {need.why}", created.id, created=True)

    async def _indexed(
        self, targets: list[_Target], context: _Context
    ) -> dict[str, Prospect | None]:
        """What the index holds for each target (v3: by email), for change detection."""
        if context.index is None or not targets:
            return {}
        index = context.index.index
        ids = [int(t.key) for t in targets if t.key.isdigit()]
        emails = [t.key.removeprefix("email:") for t in targets if t.key.startswith("email:")]
        found: dict[str, Prospect | None] = {t.key: None for t in targets}
        found.update({str(i): p for i, p in (await index.by_ids(ids)).items()})
        for email, prospects in (await index.by_emails(emails)).items():
            found[f"email:{email}"] = prospects[0]
        return found

    async def _prepare_write(
        self,
        target: _Target,
        groups: list[_Group],
        outcomes: list[Outcome | None],
        indexed: Prospect | None = None,
    ) -> _Pending | None:
        """Merge every group aimed at one prospect and keep only what is newer than stored.

        With the index, values Pardot already holds are not written again: when none is
        left the events are delivered as "unchanged" without a call.
        """
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
        stamps = {name: FieldStamp(s.value, s.at) for name, s in fresh.items()}
        if indexed is not None and self._change_detection:
            changed = {n: s for n, s in fresh.items() if not self._holds_value(indexed, n, s.value)}
            if not changed:
                await self._store.record(target.key, stamps)
                await self._store.link(self._links(target.key, groups, None))
                for group in groups:
                    unchanged = Delivered(
                        UNCHANGED, target.prospect_id or indexed.id, prospect=target.key
                    )
                    _settle(outcomes, group, unchanged)
                return None
            fresh = changed
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
        if v3 and groups[0].email is not None:
            fresh.setdefault("email", groups[0].email)  # the row's key: v3 upserts by it
        return _Pending(target, groups, row, stamps, indexed, fresh)

    async def _write(
        self, chunk: list[_Pending], outcomes: list[Outcome | None], context: _Context
    ) -> list[_Group]:
        """One batch call; returns the groups whose prospect Pardot no longer has (error 3)
        when the index named it, so they can be resolved again."""
        try:
            errors = await self._repository.write_batch([item.row for item in chunk])
        except ConfigurationError:
            raise
        except PardotError as error:
            for item in chunk:
                for group in item.groups:
                    _settle(outcomes, group, _outcome_of(error))
            return []
        gone: list[_Group] = []
        written: list[Prospect] = []
        await asyncio.gather(
            *(
                self._remember(item)
                for item, row_error in zip(chunk, errors, strict=True)
                if row_error is None
            )
        )
        for item, row_error in zip(chunk, errors, strict=True):
            if row_error is None:
                target = item.target
                outcome: Outcome = Delivered(target.reason, target.prospect_id, prospect=target.key)
                if item.indexed is not None:
                    written.append(self._as_written(item.indexed, item.row.fields))
                for group in item.groups:
                    _settle(outcomes, group, outcome, item.written)
                continue
            else:
                if item.target.via_links:
                    # The person's prospect is gone (deleted or merged in Pardot): find it anew.
                    await self._store.unlink(list(item.target.via_links))
                explicit = all(isinstance(g.write, UpsertById) for g in item.groups)
                if context.index is not None and row_error.code == 3 and not explicit:
                    await context.index.index.drop([int(item.target.key)])
                    gone.extend(item.groups)
                    continue
                outcome = _outcome_of(row_error)
            for group in item.groups:
                _settle(outcomes, group, outcome)
        if written and context.index is not None:
            await context.index.put(written)
        return gone

    async def _remember(self, item: _Pending) -> None:
        await self._store.record(item.target.key, item.stamps)
        await self._store.link(self._links(item.target.key, item.groups, None))

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

    def _lock(
        self, email: str | None, context: _Context
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Reading Pardot, finding or creating holds the email's lock; from the index,
        finding only reads the store, and creates take the locks in `_create_batches`."""
        if email is None or context.index is not None:
            return contextlib.nullcontext()
        return self._store.create_lock(email)

    def _holds_value(self, prospect: Prospect, name: str, value: FieldValue) -> bool:
        """Whether Pardot already holds `value` in `name`, compared as Pardot returns it."""
        if name == "email":
            return isinstance(value, str) and (prospect.email or "").strip() == value.strip()
        return self._normal(name, value) == self._normal(name, prospect.fields.get(name))

    def _normal(self, name: str, value: FieldValue | None) -> FieldValue:
        if isinstance(value, tuple):
            items = tuple(item.strip() for item in value if item.strip())
            if len(items) != 1:
                return items
            value = items[0]
        text = (value or "").strip()
        if name in _BOOLEAN_FIELDS:
            return "1" if text.lower() in {"1", "true", "yes", "on"} else ""
        keeper = self._keeper
        kind = keeper.field_type(name) if keeper is not None else "Text"
        return stored_form(text, kind) if text else ""

    def _as_written(self, prospect: Prospect, fields: Fields) -> Prospect:
        """The index's copy of a prospect after a write, values as Pardot would return them."""
        values = dict(prospect.fields)
        email = prospect.email
        for name, value in fields.items():
            if name == "email":
                email = value if isinstance(value, str) and value else email
                continue
            normal = self._normal(name, value)
            if normal in ("", ()):
                values.pop(name, None)
            else:
                values[name] = normal
        return replace(prospect, email=email, fields=values)

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


def _updated(prospect_id: int, why: str, *, via_links: tuple[str, ...] = ()) -> _Target:
    """Where events go when they update an existing prospect, and the reason they say so."""
    return _Target(
        str(prospect_id), f"updated prospect {prospect_id}: {why}", prospect_id, via_links=via_links
    )


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
