"""A batch that fails as a whole: find the people whose events cause it, blame no one else.

The worker calls `blaming_poison` for every batch it delivers. Halves of the batch are tried
(each person's events kept together, `domain.isolation.isolate`) until the failing people
stand alone; a failure of the store or of the batch's lease is nobody's and ends the search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from domain.errors import ConfigurationError
from domain.events import IdentifyEvent
from domain.isolation import isolate, last_line
from domain.ports import QueuedEvent, Settlement, ordering_key_of
from domain.sync import Outcome, RetryLater, SyncService
from entrypoints.faults import blameless
from entrypoints.lease_hold import LeaseLost

log = structlog.get_logger(__name__)


async def blaming_poison(
    service: SyncService, items: list[QueuedEvent], events: list[IdentifyEvent]
) -> dict[int, Outcome | Settlement]:
    """Sync the batch; after an unexpected error, find the people who cause it.

    The batch is retried in halves (each person's events kept together) until the
    failing people stand alone: only their events are dead-lettered, with the error's
    last line as the reason. When no part succeeds, nobody in particular is to blame:
    the whole batch is retried later instead. An error that says the store or the lease
    failed (`surroundings_failed`) blames no one at all: it ends the search, and whoever
    it left undecided is retried without spending an attempt.
    """
    try:
        ids = [i.id for i in items]
        return dict(zip(ids, await service.sync(events, ids=ids), strict=True))
    except ConfigurationError:
        raise
    except Exception as error:
        first = error
    log.error("batch failed; looking for the events that cause it", error=type(first).__name__)
    log.debug("batch failed", exc_info=first)

    async def attempt(indexes: Sequence[int]) -> Mapping[int, Outcome]:
        ids = [items[i].id for i in indexes]
        found = await service.sync([events[i] for i in indexes], ids=ids)
        return dict(zip(indexes, found, strict=True))

    found = await isolate(
        _people(items),
        attempt,
        first,
        passthrough=(ConfigurationError,),
        blameless=surroundings_failed,
    )
    outcomes: dict[int, Outcome | Settlement] = {
        items[i].id: outcome for i, outcome in found.results.items()
    }
    if found.stopped_by is not None:
        log.warning(
            "batch stopped: the store or the lease failed",
            error=type(found.stopped_by).__name__,
        )
        retry = RetryLater(f"retry: {last_line(found.stopped_by)}", spent=False)
        outcomes |= {items[i].id: retry for i in found.untried}
    if found.all_failed:
        retry = RetryLater(f"retry: {last_line(first)}")
        return {item.id: outcomes.get(item.id, retry) for item in items}
    for index, failure in found.failures.items():
        outcomes[items[index].id] = Settlement("dead", last_line(failure))
    if found.failures:
        log.error("dead-lettered the events that broke their batch", events=len(found.failures))
    return outcomes


def surroundings_failed(error: Exception) -> bool:
    """The store unreachable, or this batch's lease gone: no event's fault."""
    return isinstance(error, LeaseLost) or blameless(error)


def _people(items: Sequence[QueuedEvent]) -> list[list[int]]:
    """Indexes of the batch, one list per person (events without userId/anonymousId alone)."""
    people: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    for index, item in enumerate(items):
        key = ordering_key_of(item.payload)
        if key is None:
            alone.append([index])
        else:
            people.setdefault(key, []).append(index)
    return [*people.values(), *alone]
