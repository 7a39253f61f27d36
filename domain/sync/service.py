"""The sync use case: events in, Pardot writes out, one outcome per event back.

Decisions are made **per prospect**. Each event is first resolved to the Pardot prospect it
concerns (rules 1-4 of docs/matching.md); every event that lands on one prospect,
whichever identity it came by, is then merged field by field, the later event time winning,
and compared with what the store remembers having written (value and event time per field,
the email included). So an older event never puts back a value a newer one replaced, within
a batch or across batches and processes.

Decisions about what Pardot holds come from the index only while it is fresh for the events
(its watermark's refresh began after they all arrived); else one refresh comes first, or the
values ride in writes made anyway when that is cheaper (`fresh`, `compare.refresh_pays`).

`SyncService` only orchestrates the stages, each in its own module: grouping (plan and
group), fresh (resolve, refresh, create), merge, compare, write, learn.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from domain.errors import ConfigurationError, PardotError
from domain.events import IdentifyEvent
from domain.index import IndexKeeper
from domain.lookup_field import check_lookup_field
from domain.matching import DEFAULT_DESTINATION_KEYS
from domain.ports import PardotRepository, ProspectStore
from domain.prospect import CustomField, FieldValue
from domain.settings import DestinationSettings
from domain.sync.context import Context, LookupValues, NeedsCreate, Stale, Target
from domain.sync.create import written_by_create
from domain.sync.fresh import resolve_fresh
from domain.sync.grouping import Group, group_planned, plan_events, settle
from domain.sync.import_lane import ImportLane
from domain.sync.learn import learn_upserted
from domain.sync.outcomes import Delivered, Outcome, Rejected, RetryLater
from domain.sync.recovery import recover
from domain.sync.write import indexed, write_targets

log = logging.getLogger(__name__)


def latest_arrival(events: Sequence[IdentifyEvent]) -> datetime | None:
    """The latest `receivedAt` among `events`; None when one has none (it arrives now)."""
    arrivals = [event.received_at for event in events]
    if not arrivals or any(moment is None for moment in arrivals):
        return None
    return max(moment for moment in arrivals if moment is not None)


LOOKUP_SETTING = "prospect_lookup_field_id"


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
        imports: ImportLane | None = None,
    ) -> None:
        """`index` lets decisions read the account from the store (scanned when it pays,
        refreshed from Pardot's own times); `waiting` counts the queued events, which decides
        whether a scan pays. `change_detection` skips writes of values the index holds.
        `imports` writes large sets of updates by Pardot imports (the bulk lane).
        """
        self._imports = imports
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

    @property
    def imports(self) -> ImportLane | None:
        return self._imports

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
        if self._keeper is not None:
            self._keeper.note_custom_fields(fields)
        found = check_lookup_field(lookup, fields, setting=self._lookup_setting)
        if self._lookup_broken is not None:
            message, seen = self._lookup_broken
            if found == seen:
                raise ConfigurationError(message)
            self._lookup_broken = None
        self._lookup = found

    async def close(self) -> None:
        """Stop what runs beside the batches (the index's periodic refresh)."""
        if self._keeper is not None:
            await self._keeper.close()

    async def sync(
        self, events: Sequence[IdentifyEvent], *, ids: Sequence[int] | None = None
    ) -> list[Outcome]:
        """Deliver `events`; the i-th outcome belongs to the i-th event.

        `ids` are the events' queue ids: imports record them, and events an import recorded
        before a restart wrote are settled through it (`recovery.recover`), after which the
        rest go the ordinary way.
        """
        if ids is None or self._imports is None:
            return await self._sync(events, ids)
        found = await recover(ids, self._imports, self._fields_of(events))
        if not found.outcomes and not found.refused:
            return await self._sync(events, ids)
        rest = [i for i in range(len(events)) if i not in found.outcomes]
        refused = {n: found.refused[i] for n, i in enumerate(rest) if i in found.refused}
        others = await self._sync([events[i] for i in rest], [ids[i] for i in rest], refused)
        outcomes: list[Outcome | None] = [found.outcomes.get(i) for i in range(len(events))]
        for position, outcome in zip(rest, others, strict=True):
            outcomes[position] = outcome
        return [o if o is not None else Rejected("rejected: not processed") for o in outcomes]

    async def _sync(
        self,
        events: Sequence[IdentifyEvent],
        ids: Sequence[int] | None,
        refused: Mapping[int, str] | None = None,
    ) -> list[Outcome]:
        if not events:
            return []
        planned = plan_events(
            events,
            self._settings,
            destination_keys=self._keys,
            create_campaign_id=self._create_campaign_id,
        )
        outcomes = planned.outcomes
        if planned.writes:
            # Grouping needs the lookup field's type: `7` and `7.0` are one Number value.
            await self.prepare()
            lookup = LookupValues(self._settings.lookup_field, self._lookup)
            grouping = group_planned(planned, events, lookup.stored)
            context = replace(
                await self._context(len(grouping.groups), events),
                event_ids=ids,
                refused=refused or {},
            )
            # One person's groups in successive waves, as separate batches would go.
            for wave in grouping.waves:
                await self._deliver(wave, outcomes, context)
        return [o if o is not None else Rejected("rejected: not processed") for o in outcomes]

    def _fields_of(
        self, events: Sequence[IdentifyEvent]
    ) -> Callable[[int], Mapping[str, FieldValue]]:
        """What each event (by position) writes, read when an import found again wrote it."""
        planned: dict[int, Mapping[str, FieldValue]] | None = None

        def fields_of(position: int) -> Mapping[str, FieldValue]:
            nonlocal planned
            if planned is None:
                writes = plan_events(
                    events,
                    self._settings,
                    destination_keys=self._keys,
                    create_campaign_id=self._create_campaign_id,
                ).writes
                planned = {i: write.fields for i, write in writes}
            return planned.get(position, {})

        return fields_of

    def _note_broken(self, message: str) -> None:
        if self._lookup is not None:
            self._lookup_broken = (message, self._lookup)

    async def _context(self, groups: int, events: Sequence[IdentifyEvent]) -> Context:
        """Decide from the index when it is complete (scanning first when that pays), and
        know whether it is fresh for every event's arrival (`receivedAt` as stored)."""
        context = Context(
            self._repository,
            self._store,
            LookupValues(self._settings.lookup_field, self._lookup),
            self._note_broken,
            imports=self._imports,
        )
        keeper = self._keeper
        if keeper is None:
            return context
        try:
            backlog = await self._waiting() if self._waiting is not None else 0
            if await keeper.before_batch(groups + backlog, backlog=backlog):
                arrived = latest_arrival(events)
                fresh = await keeper.fresh_for(arrived)
                return replace(context, index=keeper, arrived=arrived, fresh=fresh)
        except ConfigurationError:
            raise
        except PardotError as error:
            log.warning("prospect index unavailable for this batch: %s", error)
        keeper.note_read_one_by_one(groups)
        return context

    async def _deliver(
        self,
        groups: list[Group],
        outcomes: list[Outcome | None],
        context: Context,
        *,
        again: bool = False,
    ) -> None:
        """Resolve (fresh, creating), then merge, compare and write per prospect."""
        results, context = await resolve_fresh(groups, context)
        by_target: dict[str, list[Group]] = defaultdict(list)
        targets: dict[str, Target] = {}
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, Target):
                if result.created:
                    # The create wrote this group's fields already.
                    done = Delivered(result.reason, result.prospect_id, prospect=result.key)
                    settle(outcomes, group, done, written_by_create(group))
                    continue
                by_target[result.key].append(group)
                targets.setdefault(result.key, result)
            elif isinstance(result, NeedsCreate | Stale):
                raise AssertionError("creates and refreshes are settled by resolve_fresh")
            else:
                settle(outcomes, group, result)
        held = await indexed(list(targets.values()), context)
        detect = (
            context.index.field_type
            if context.index is not None and self._change_detection
            else None
        )
        written = await write_targets(by_target, targets, held, outcomes, context, detect)
        if written is None:
            # A refresh was made instead: decide again from the fresh index (the prospect
            # locks are taken anew: they are not reentrant, so never while held).
            fresh = replace(context, fresh=True)
            waiting = [g for members in by_target.values() for g in members]
            await self._deliver(waiting, outcomes, fresh, again=again)
            return
        gone, pending = written.gone, written.pending
        if gone and not again:
            # A link or the index named prospects Pardot no longer has: look again, once. The
            # index missed that delete or merge, whenever it happened, so it is fresh for
            # nothing now: only a refresh begun now may say "create" (or it finds the survivor).
            stale = replace(context, fresh=False, arrived=None)
            await self._deliver(gone, outcomes, stale, again=True)
        elif gone:
            # Gone again (a marketer deleted every prospect named since the refresh): these
            # events are offered again later, not left without an outcome and dead-lettered.
            for group in gone:
                settle(outcomes, group, RetryLater("retry: the prospect was deleted", delay=1))
        if context.index is not None and any(p.row.by == "email" for p in pending):
            # v3 upserts may have created prospects: learn them, batches return no ids.
            known = {key for key, value in held.items() if value is not None}
            if any(p.target.key not in known for p in pending):
                await learn_upserted(context.index)
