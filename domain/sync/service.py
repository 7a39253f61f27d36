"""The sync use case: events in, Pardot writes out, one outcome per event back.

Decisions are made **per prospect**. Each event is first resolved to the Pardot prospect it
concerns (rules 1-4 of docs/matching.md); every event that lands on one prospect,
whichever identity it came by, is then merged field by field, the later event time winning,
and compared with what the store remembers having written (value and event time per field,
the email included). So an older event never puts back a value a newer one replaced, within
a batch or across batches and processes.

`SyncService` only orchestrates the stages, each in its own module: grouping (plan and
group), resolve (and create), merge, compare, write, learn.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from domain.errors import ConfigurationError, PardotError
from domain.events import IdentifyEvent
from domain.index import IndexKeeper
from domain.lookup_field import check_lookup_field
from domain.matching import DEFAULT_DESTINATION_KEYS
from domain.ports import BATCH_LIMIT, PardotRepository, ProspectStore
from domain.prospect import CustomField
from domain.settings import DestinationSettings
from domain.sync.context import Context, LookupValues, NeedsCreate, Target
from domain.sync.create import create_batches, written_by_create
from domain.sync.grouping import Group, group_events, settle
from domain.sync.learn import learn_upserted
from domain.sync.outcomes import Delivered, Outcome, Rejected
from domain.sync.resolve import Resolution, resolve_safely
from domain.sync.write import indexed, prepare_write, write_chunk

log = logging.getLogger(__name__)

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
        grouping = group_events(
            events,
            self._settings,
            destination_keys=self._keys,
            create_campaign_id=self._create_campaign_id,
        )
        outcomes = grouping.outcomes
        if grouping.groups:
            await self.prepare()
            context = await self._context(len(grouping.groups))
            await self._deliver(grouping.groups, outcomes, context)
        return [o if o is not None else Rejected("rejected: not processed") for o in outcomes]

    def _note_broken(self, message: str) -> None:
        if self._lookup is not None:
            self._lookup_broken = (message, self._lookup)

    async def _context(self, groups: int) -> Context:
        """Decide from the index when it is complete (scanning first when that pays)."""
        context = Context(
            self._repository,
            self._store,
            LookupValues(self._settings.lookup_field, self._lookup),
            self._note_broken,
        )
        keeper = self._keeper
        if keeper is None:
            return context
        try:
            waiting = groups + (await self._waiting() if self._waiting is not None else 0)
            if await keeper.before_batch(waiting):
                return replace(context, index=keeper)
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
        """Resolve, create, then merge, compare and write per prospect; learn what was new."""
        results: list[Resolution] = list(
            await asyncio.gather(*(resolve_safely(group, context) for group in groups))
        )
        needs = [i for i, result in enumerate(results) if isinstance(result, NeedsCreate)]
        if needs:
            created = await create_batches(
                [r for r in results if isinstance(r, NeedsCreate)], context
            )
            for position, outcome in zip(needs, created, strict=True):
                results[position] = outcome
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
            elif isinstance(result, NeedsCreate):
                raise AssertionError("creates are settled above")
            else:
                settle(outcomes, group, result)
        held = await indexed(list(targets.values()), context)
        detect = (
            context.index.field_type
            if context.index is not None and self._change_detection
            else None
        )
        # Concurrently, so the store's group commit carries many prospects per transaction.
        prepared = await asyncio.gather(
            *(
                prepare_write(targets[key], members, outcomes, context, held.get(key), detect)
                for key, members in by_target.items()
            )
        )
        pending = [item for item in prepared if item is not None]
        chunks = [pending[i : i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
        lists = await asyncio.gather(*(write_chunk(c, outcomes, context) for c in chunks))
        gone = [group for groups_ in lists for group in groups_]
        if gone and not again:
            # The index named prospects Pardot no longer has: they are dropped, look again.
            await self._deliver(gone, outcomes, context, again=True)
        if context.index is not None and any(p.row.by == "email" for p in pending):
            # v3 upserts may have created prospects: learn them, batches return no ids.
            known = {key for key, value in held.items() if value is not None}
            if any(p.target.key not in known for p in pending):
                await learn_upserted(context.index)
