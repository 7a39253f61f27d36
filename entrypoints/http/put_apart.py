"""When the put of a request's events fails: the events put one by one, so that one the store
cannot hold is refused on its own (400 for it) and its neighbours are stored.

The door refuses what it knows no store can hold (`event_checks`); this is for what it does
not know. A put that fails for every event (the store is down, the disk is full) is still the
503 that makes the sender retry; an event is blamed only if it fails alone twice, once after
another event went in, so a store that stumbled for a moment blames nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from domain.ports import EventQueue, QueueFull
from entrypoints.http.ingest import Intake

log = structlog.get_logger(__name__)


async def put_apart(queue: EventQueue, intake: Intake, scope: str, failure: Exception) -> None:
    """Store `intake.store` event by event after putting them together failed with `failure`;
    the events the store refused twice move from `intake.store` to `intake.errors`."""
    failed = await _put_each(queue, intake.store, range(len(intake.store)), scope)
    if len(failed) == len(intake.store):
        raise failure  # nothing could be stored: the store's fault, not an event's
    refused = await _put_each(queue, intake.store, failed, scope) if failed else []
    if not refused:
        return
    log.warning("events the store could not hold were refused alone", events=len(refused))
    for position in refused:
        payload = intake.store[position]
        message_id = payload.get("messageId")
        intake.errors.append(
            {
                "index": intake.store_index[position],
                "messageId": message_id,
                "reason": "the store could not hold this event; its neighbours were stored",
            }
        )
    intake.errors.sort(key=lambda error: int(error["index"]))
    kept = [p for p in range(len(intake.store)) if p not in set(refused)]
    intake.store = [intake.store[p] for p in kept]
    intake.store_index = [intake.store_index[p] for p in kept]


async def _put_each(
    queue: EventQueue, store: Sequence[dict[str, Any]], positions: Sequence[int], scope: str
) -> list[int]:
    """Put each event alone (at once: the stores commit them together); those that failed."""
    results = await asyncio.gather(
        *(queue.put([store[p]], scope=scope) for p in positions), return_exceptions=True
    )
    failed: list[int] = []
    for position, result in zip(positions, results, strict=True):
        # A full queue is no event's fault, and a cancelled request is no answer at all.
        if isinstance(result, QueueFull) or not isinstance(result, Exception | int):
            raise result
        if isinstance(result, Exception):
            failed.append(position)
    return failed
