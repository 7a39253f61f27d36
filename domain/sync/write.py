"""Write: the groups resolved to each prospect in, batch writes and their outcomes out.

In: per target prospect its groups, and what the index holds for it. Out: `write_targets`,
the whole stage under the prospects' locks: `decide` reads the store's stamps, merges and
compares (pure stages); `ride` drops change detection from a decision when a stale index
makes a refresh dearer than writing; `prepare_write` settles the groups at once (up to date,
unchanged) or yields a `Pending` row; `write_chunk` sends up to 50 rows in one call, learns
what was written and settles every group. Groups whose prospect Pardot no longer has (error 3)
come back to be resolved again, unless an explicit `integrations.Pardot.id` named it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from domain.errors import ConfigurationError, PardotError
from domain.index import BudgetShort
from domain.matching import UpsertById
from domain.ports import BATCH_LIMIT, FieldStamp, ProspectWrite, RecordedRow, ledger_digest
from domain.prospect import Prospect
from domain.sync.carried import known_stamps
from domain.sync.compare import Changes, FieldType, Unchanged, UpToDate, compare, refresh_pays
from domain.sync.context import Context, Target
from domain.sync.grouping import Group, Stamped, settle
from domain.sync.import_lane import match_digest
from domain.sync.imports import PlannedImport
from domain.sync.learn import as_written, remember
from domain.sync.locks import write_locks
from domain.sync.merge import Merged, merge
from domain.sync.outcomes import UNCHANGED, Delivered, Outcome, Rejected, outcome_of
from domain.sync.recovery import waiting_for_imports

log = logging.getLogger(__name__)


@dataclass
class Pending:
    target: Target
    groups: list[Group]
    row: ProspectWrite
    stamps: dict[str, FieldStamp]
    indexed: Prospect | None = None  # what the index holds for the prospect, if anything
    # What the row writes, each field with the event it came from (for the outcomes).
    written: dict[str, Stamped] = field(default_factory=dict)
    refused_by: str = ""  # the import that refused the row and why, before a batch call


async def indexed(targets: list[Target], context: Context) -> dict[str, Prospect | None]:
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


@dataclass(frozen=True)
class Decision:
    """What to do for one prospect, with what it was decided from."""

    target: Target
    groups: list[Group]
    merged: Merged
    known: dict[str, FieldStamp]  # the store's stamps
    indexed: Prospect | None  # what the index holds for the prospect, if anything
    verdict: UpToDate | Unchanged | Changes


async def decide(
    target: Target,
    groups: list[Group],
    context: Context,
    indexed: Prospect | None,
    detect: FieldType | None,
) -> Decision:
    """Merge every group aimed at one prospect and keep only what is newer than stored.

    With `detect` (change detection on the index), values Pardot already holds are not
    written again: when none is left the verdict is `Unchanged`.
    """
    known = await known_stamps(target, groups, context)
    merged = merge(groups, by_email=target.key.startswith("email:"))
    verdict = compare(target.key, groups, merged, known, indexed, detect)
    return Decision(target, groups, merged, known, indexed, verdict)


def ride(decision: Decision) -> Decision:
    """The decision without change detection: values a stale index says Pardot holds are
    written anyway (they ride in batch calls made anyway, cheaper than a refresh)."""
    d = decision
    return replace(d, verdict=compare(d.target.key, d.groups, d.merged, d.known, None, None))


async def prepare_write(
    decision: Decision, outcomes: list[Outcome | None], context: Context
) -> Pending | None:
    """Settle what needs no call (up to date; unchanged, recording the stamps) or yield the
    row to write."""
    target, groups, verdict = decision.target, decision.groups, decision.verdict
    if isinstance(verdict, UpToDate):
        for group in groups:
            done = Delivered(verdict.reason, target.prospect_id, prospect=target.key)
            settle(outcomes, group, done)
        return None
    if isinstance(verdict, Unchanged):
        assert decision.indexed is not None
        await remember(context, target.key, verdict.stamps, groups)
        prospect_id = target.prospect_id or decision.indexed.id
        for group in groups:
            settle(outcomes, group, Delivered(UNCHANGED, prospect_id, prospect=target.key))
        return None
    return Pending(target, groups, verdict.row, verdict.stamps, decision.indexed, verdict.written)


async def write_chunk(
    chunk: list[Pending], outcomes: list[Outcome | None], context: Context
) -> list[Group]:
    """One batch call; returns the groups whose prospect Pardot no longer has (error 3)
    when the index named it, so they can be resolved again."""
    try:
        errors = await context.repository.write_batch([item.row for item in chunk])
    except ConfigurationError:
        raise
    except PardotError as error:
        for item in chunk:
            for group in item.groups:
                settle(outcomes, group, outcome_of(error))
        return []
    return await applied(chunk, errors, outcomes, context)


async def applied(
    chunk: list[Pending],
    errors: list[PardotError | None],
    outcomes: list[Outcome | None],
    context: Context,
    *,
    via: str = "",
) -> list[Group]:
    """Learn and settle what a write call (or an import, `via` naming it) answered per row;
    returns the groups whose prospect Pardot no longer has (error 3), to resolve again."""
    gone: list[Group] = []
    written: list[Prospect] = []
    await asyncio.gather(
        *(
            remember(context, item.target.key, item.stamps, item.groups)
            for item, row_error in zip(chunk, errors, strict=True)
            if row_error is None
        )
    )
    for item, row_error in zip(chunk, errors, strict=True):
        if row_error is None:
            target = item.target
            outcome: Outcome = Delivered(
                target.reason, target.prospect_id, prospect=target.key, via=via
            )
            if item.indexed is not None:
                assert context.index is not None
                written.append(as_written(item.indexed, item.row.fields, context.index.field_type))
            for group in item.groups:
                settle(outcomes, group, outcome, item.written)
            continue
        if item.target.via_links:
            # The person's prospect is gone (deleted or merged in Pardot): find it anew.
            await context.store.unlink(list(item.target.via_links))
        # Only an explicit `integrations.Pardot.id` names the prospect itself; every other
        # way to it (a link, the index, an email) can be resolved again without it.
        explicit = all(isinstance(g.write, UpsertById) for g in item.groups)
        if row_error.code == 3 and not explicit:
            # The index keeps the row: only a refresh, which reads the recycle bin with the
            # live rows after it, takes it out (the resolution again begins one). Dropped here,
            # a merge's survivor is not in yet: to events the index is still fresh for, the
            # person would look new and be created again.
            for group in item.groups:
                group.gone_from.append(item.target.key)
            gone.extend(item.groups)
            continue
        outcome = outcome_of(row_error)
        if item.refused_by and isinstance(outcome, Rejected):
            outcome = Rejected(f"{outcome.reason} (refused by {item.refused_by} too)")
        for group in item.groups:
            settle(outcomes, group, outcome)
    if written and context.index is not None:
        await context.index.put(written)
    return gone


@dataclass(frozen=True)
class Written:
    """What the write stage sent (`pending`) and the groups whose prospect Pardot no longer
    has (`gone`), to be resolved again."""

    pending: list[Pending]
    gone: list[Group]


async def write_targets(
    by_target: Mapping[str, list[Group]],
    targets: Mapping[str, Target],
    held: Mapping[str, Prospect | None],
    outcomes: list[Outcome | None],
    context: Context,
    detect: FieldType | None,
) -> Written | None:
    """Decide and write every prospect's rows, 50 a call; None when a refresh was made
    instead (decide again from the fresh index).

    From the stamp check to the recorded write the prospects' locks are held, so another
    process (or batch) writing one of them waits and neither passes the check with an older
    value. "Pardot already holds it" needs an index fresh for the events: on a stale one,
    refresh, or write those values along with the rest when that costs fewer calls.
    """
    async with context.store.hold(write_locks(by_target)):
        # Concurrently, so the store's group commit carries many prospects per transaction.
        decisions = list(
            await asyncio.gather(
                *(
                    decide(targets[key], members, context, held.get(key), detect)
                    for key, members in by_target.items()
                )
            )
        )
        unchanged = sum(isinstance(d.verdict, Unchanged) for d in decisions)
        if context.index is not None and not context.fresh and unchanged:
            writes = sum(isinstance(d.verdict, Changes) for d in decisions)
            if refresh_pays(writes, unchanged) and await _refreshed(context):
                return None
            decisions = [ride(d) if isinstance(d.verdict, Unchanged) else d for d in decisions]
        prepared = await asyncio.gather(*(prepare_write(d, outcomes, context) for d in decisions))
        pending = [item for item in prepared if item is not None]
        pending = await waiting_for_imports(pending, outcomes, context)
        batched = await by_imports(pending, outcomes, context)
        chunks = [batched[i : i + BATCH_LIMIT] for i in range(0, len(batched), BATCH_LIMIT)]
        lists = await asyncio.gather(*(write_chunk(c, outcomes, context) for c in chunks))
    return Written(pending, [group for gone in lists for group in gone])


async def by_imports(
    pending: list[Pending], outcomes: list[Outcome | None], context: Context
) -> list[Pending]:
    """Write what pays by Pardot imports (`import_lane`), settling those rows; returns the
    rows left for batch calls (all of them without a lane, or when no import pays)."""
    lane = context.imports
    if lane is None or not pending:
        return pending
    if context.refused:
        # Rows an import found again after a restart refused go by batch calls, as the
        # rows an import refuses now do: Pardot's answer then says what to do with them.
        for item in pending:
            members = (m for g in item.groups for m in g.members if m in context.refused)
            item.refused_by = next(iter(context.refused[m] for m in members), item.refused_by)
        again = [item for item in pending if item.refused_by]
        if again:
            rest = [item for item in pending if not item.refused_by]
            return again + (await by_imports(rest, outcomes, replace(context, refused={})))
    plan = lane.plan([item.row for item in pending])
    if not plan.imports:
        return pending
    left = list(plan.by_batches)
    keys = [item.row.key for item in pending]
    results = await asyncio.gather(
        *(lane.send(keys, planned, recorded(planned, pending, context)) for planned in plan.imports)
    )
    for planned, imported in zip(plan.imports, results, strict=True):
        if imported is None:
            left.extend(planned.rows)
            continue
        # A row the import refused goes by a batch call: its answer has Pardot's code, so a
        # prospect gone since the index saw it (3) is resolved again, and a row Pardot
        # refuses either way is settled with Pardot's reason, as a batch row's is.
        written = [i for i in planned.rows if imported.refusals[i] is None]
        for i in planned.rows:
            if (reason := imported.refusals[i]) is not None:
                pending[i].refused_by = f"import {imported.id}: {reason}"
                left.append(i)
        carried = [pending[i] for i in written]
        errors: list[PardotError | None] = [None] * len(carried)
        await applied(carried, errors, outcomes, context, via=f"import {imported.id}")
    return [pending[i] for i in sorted(left)]


def recorded(
    planned: PlannedImport, pending: list[Pending], context: Context
) -> list[RecordedRow] | None:
    """What the ledger keeps of an import's rows: their events' queue ids, digests of the
    match value and the prospect key (never an email) and the prospect id when known."""
    if context.event_ids is None:
        return None
    rows = []
    for position in planned.rows:
        item = pending[position]
        events = sorted({context.event_ids[m] for g in item.groups for m in g.members})
        rows.append(
            RecordedRow(
                tuple(events),
                match_digest(planned.match, item.row.key),
                ledger_digest(item.target.key),
                item.target.prospect_id,
            )
        )
    return rows


async def _refreshed(context: Context) -> bool:
    """Refresh for the call's events; False when it cannot be now (then write instead)."""
    assert context.index is not None
    try:
        await context.index.refresh_for(context.arrived)
    except ConfigurationError:
        raise
    except (BudgetShort, PardotError) as error:
        log.warning("prospect index not refreshed, writing instead: %s", error)
        return False
    return True
