"""Create batches: the groups the index found no prospect for in, their new prospects out.

In: the `NeedsCreate` answers of `resolve` (decisions from the index). Out: per need a
`Target` (created, or found after all) or an outcome. The create locks of every email are
held (sorted, so two processes cannot deadlock), the index is refreshed (a form may have
created one meanwhile) and each group resolved again; only then are the rest created, 50 a
call and one email per round, and the new ids learned from a `created_after` query.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from domain.errors import ConfigurationError, OutcomeUnknown, PardotError
from domain.index import BudgetShort, IndexKeeper
from domain.ports import BATCH_LIMIT, ProspectWrite
from domain.prospect import Prospect
from domain.sync.context import Context, NeedsCreate, Target
from domain.sync.grouping import Group, Stamped
from domain.sync.learn import created
from domain.sync.outcomes import Outcome, Rejected, RetryLater, outcome_of
from domain.sync.resolve import resolve_safely


async def create_batches(needs: list[NeedsCreate], context: Context) -> list[Target | Outcome]:
    """Create what the index says is missing; the i-th answer belongs to the i-th need."""
    keeper = context.index
    assert keeper is not None
    results: list[Target | Outcome | None] = [None] * len(needs)
    emails = sorted({need.email.strip().lower() for need in needs})
    async with contextlib.AsyncExitStack() as held:
        for email in emails:
            await held.enter_async_context(context.store.create_lock(email))
        locked = replace(context, locked=True)
        try:
            await keeper.refresh(needed=True)
        except BudgetShort as short:
            return [RetryLater(f"retry: {short}", delay=short.seconds_to_reset)] * len(needs)
        except ConfigurationError:
            raise
        except PardotError as error:
            return [outcome_of(error)] * len(needs)
        remaining = list(range(len(needs)))
        while remaining:
            again = await asyncio.gather(
                *(resolve_safely(needs[i].group, locked) for i in remaining)
            )
            # One email per round: a second event for it finds what the first created.
            creating: dict[str, tuple[int, NeedsCreate]] = {}
            later: list[int] = []
            for position, result in zip(remaining, again, strict=True):
                if isinstance(result, NeedsCreate):
                    key = result.email.strip().lower()
                    if key in creating:
                        later.append(position)
                    else:
                        creating[key] = (position, result)
                else:
                    results[position] = result
            if not creating:
                break
            made = await _create_rows([need for _, need in creating.values()], keeper, context)
            for (position, _), outcome in zip(creating.values(), made, strict=True):
                results[position] = outcome
            remaining = later
    return [r if r is not None else Rejected("rejected: not processed") for r in results]


async def _create_rows(
    needs: list[NeedsCreate], keeper: IndexKeeper, context: Context
) -> list[Target | Outcome]:
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
    chunks = [range(i, min(i + BATCH_LIMIT, len(rows))) for i in range(0, len(rows), BATCH_LIMIT)]
    answers = await asyncio.gather(
        *(context.repository.write_batch([rows[i] for i in chunk]) for chunk in chunks),
        return_exceptions=True,
    )
    failed: dict[int, Outcome] = {}
    for chunk, answer in zip(chunks, answers, strict=True):
        if isinstance(answer, ConfigurationError):
            raise answer
        if isinstance(answer, OutcomeUnknown):
            continue  # maybe created: the query below tells
        if isinstance(answer, PardotError):
            failed.update({i: outcome_of(answer) for i in chunk})
        elif isinstance(answer, BaseException):
            raise answer
        else:
            for i, error in zip(chunk, answer, strict=True):
                if error is not None:
                    failed[i] = outcome_of(error)
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

    async def result(i: int, need: NeedsCreate) -> Target | Outcome:
        prospect = learned.get(need.email.strip().lower())
        if i in failed:
            return failed[i]
        if prospect is None:
            return RetryLater("retry: Pardot does not show the prospect created for this event yet")
        return await created(context, need, prospect)

    return list(await asyncio.gather(*(result(i, need) for i, need in enumerate(needs))))


def written_by_create(group: Group) -> dict[str, Stamped]:
    """Everything a create wrote for the group: its fields and its email."""
    return {**group.stamps, **({"email": group.email} if group.email is not None else {})}
