"""Recovery: imports found again after a restart, by the events a batch leased.

In: the queue ids of a batch's events and the import lane with its ledger. Out: `recover`,
the outcome of every event an import recorded before a restart wrote (settled delivered
through that import, never written again), after following the import to its end; the other
events, those of an import never submitted or rows the import refused among them, are left to
the ordinary sync, after the import finished. And `waiting_for_imports`: rows of the write
stage whose prospect is in an unfinished recorded import wait (retry later), so a newer value
is never written before an older one still inside an orphaned import lands.

Only the process whose lease holds an event decides it, so two nodes never settle one event;
both may follow one import, which costs a few status reads and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from domain.ports import ledger_digest
from domain.prospect import FieldValue
from domain.sync.context import Context
from domain.sync.grouping import settle
from domain.sync.import_lane import ImportLane
from domain.sync.outcomes import Delivered, Outcome, RetryLater

if TYPE_CHECKING:  # the write stage calls `waiting_for_imports`
    from domain.sync.write import Pending

FOUND_AGAIN = "written by an import found again after a restart"


@dataclass(frozen=True)
class Recovered:
    """By position in the call: the outcome of each event a recorded import wrote, and the
    import's refusal of each event whose row it refused (those go by batch calls)."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


async def recover(
    ids: Sequence[int],
    lane: ImportLane,
    fields_of: Callable[[int], Mapping[str, FieldValue]] = lambda _: {},
) -> Recovered:
    """Follow the recorded imports holding any of the events `ids` to their end.

    `fields_of(position)`: what the event at `position` writes, for its outcome (the ledger
    keeps no value): of a row's fields in the import's columns, each is the latest event's.
    """
    found = Recovered()
    if lane.ledger is None or not ids:
        return found
    entries = await lane.ledger.holding(ids)
    if not entries:
        return found
    positions = {event_id: i for i, event_id in enumerate(ids)}
    results = await asyncio.gather(*(lane.resume(entry) for entry in entries))
    outcomes, refused = found.outcomes, found.refused
    for entry, resumed in zip(entries, results, strict=True):
        for row in entry.rows:
            mine = [positions[e] for e in row.events if e in positions]
            lane.recovered([ids[p] for p in mine])
            if resumed.abandoned:
                continue  # the ordinary sync writes these, now that the import is over
            if (reason := resumed.refused.get(row.match)) is not None:
                refused.update((p, f"import {entry.id}: {reason}") for p in mine)
                continue
            reason = (
                f"updated prospect {row.prospect_id}: {FOUND_AGAIN}"
                if row.prospect_id is not None
                else FOUND_AGAIN
            )
            latest = {
                name: (position, value)
                for position in sorted(mine)
                for name, value in fields_of(position).items()
                if name in entry.columns
            }
            lane.rows_imported += 1 if mine else 0
            for position in mine:
                fields = {n: v for n, (p, v) in latest.items() if p == position}
                outcomes[position] = Delivered(
                    reason, row.prospect_id, fields=fields, via=f"import {entry.id}"
                )
    return found


async def waiting_for_imports(
    pending: list[Pending], outcomes: list[Outcome | None], context: Context
) -> list[Pending]:
    """The rows free to write; those whose prospect is in an unfinished recorded import
    (its process died mid-import; the import's own events will find it) retry later."""
    lane = context.imports
    if lane is None or lane.ledger is None or not pending:
        return pending
    digests = [ledger_digest(item.target.key) for item in pending]
    waiting = await lane.ledger.waiting_on(set(digests))
    if not waiting:
        return pending
    free: list[Pending] = []
    for item, digest in zip(pending, digests, strict=True):
        import_id = waiting.get(digest)
        if import_id is None:
            free.append(item)
            continue
        # Nobody's fault: the wait spends no attempt, however long the import runs.
        wait = RetryLater(
            f"retry: the prospect is in import {import_id}, not finished yet", spent=False
        )
        for group in item.groups:
            settle(outcomes, group, wait)
    return free
