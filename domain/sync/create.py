"""Create batches: the groups a fresh index found no prospect for in, their new prospects out.

In: the `NeedsCreate` answers of `resolve`, with the create locks of their emails held and the
index fresh (`fresh.resolve_fresh`). Out: per need a `Target` (created, or found after all) or
an outcome. Creates go 50 a call, one email per round (a second group of that email then finds
what the first created); the new ids are learned from the prospects created since the last
refresh or learn (`IndexKeeper.learn_created`, begun after the creates were answered). Until
then a `creating:<lock>` mark (email, lookup value) tells any process that takes the email's
lock that the index may not hold that prospect yet.
"""

from __future__ import annotations

import asyncio

from domain.errors import ConfigurationError, OutcomeUnknown, PardotError
from domain.index import BudgetShort, IndexKeeper
from domain.ports import BATCH_LIMIT, ProspectWrite
from domain.prospect import Prospect
from domain.sync.context import Context, NeedsCreate, Stale, Target
from domain.sync.grouping import Group, Stamped
from domain.sync.learn import created
from domain.sync.locks import create_locks
from domain.sync.outcomes import Outcome, Rejected, RetryLater, outcome_of, refused
from domain.sync.resolve import Resolution, resolve_safely

CREATING = "creating:"


def creating(name: str) -> str:
    """The store's mark of a create under the lock `name` (an email, a lookup value) whose
    prospect may not be in the index yet."""
    return CREATING + name


async def create_batches(needs: list[NeedsCreate], context: Context) -> list[Target | Outcome]:
    """Create what the index says is missing; the i-th answer belongs to the i-th need."""
    keeper = context.index
    assert keeper is not None and context.locked
    results: list[Target | Outcome | None] = [None] * len(needs)
    pending: list[tuple[int, Resolution]] = list(enumerate(needs))
    while pending:
        # One email per round: a second event for it finds what the first created.
        creating_now: dict[str, tuple[int, NeedsCreate]] = {}
        later: list[int] = []
        for position, result in pending:
            if isinstance(result, NeedsCreate):
                key = result.email.strip().lower()
                if key in creating_now:
                    later.append(position)
                else:
                    creating_now[key] = (position, result)
            elif isinstance(result, Stale):
                raise AssertionError("the index is fresh while creating")
            else:
                results[position] = result
        if not creating_now:
            break
        made = await _create_rows([need for _, need in creating_now.values()], keeper, context)
        for (position, _), outcome in zip(creating_now.values(), made, strict=True):
            results[position] = outcome
        again = await asyncio.gather(*(resolve_safely(needs[i].group, context) for i in later))
        pending = list(zip(later, again, strict=True))
    return [r if r is not None else Rejected("rejected: not processed") for r in results]


async def _create_rows(
    needs: list[NeedsCreate], keeper: IndexKeeper, context: Context
) -> list[Target | Outcome]:
    """batchCreate, then learn the new ids from the creates Pardot shows once they are answered.

    A batch whose answer was lost may have created its rows: the learn says which exist,
    so nothing is created twice; the others come back later and are looked for again.
    """
    emails = [need.email.strip().lower() for need in needs]
    before = await keeper.index.by_emails(emails)
    seen = {p.id for found in before.values() for p in found}
    marks = {i: [creating(name) for name in create_locks([need])] for i, need in enumerate(needs)}
    await context.store.link({mark: "pending" for names in marks.values() for mark in names})
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
    async with keeper.creating():
        answers = await asyncio.gather(
            *(context.repository.write_batch([rows[i] for i in chunk]) for chunk in chunks),
            return_exceptions=True,
        )
    answered = await keeper.index.clock()
    failed: dict[int, Outcome] = {}
    for chunk, answer in zip(chunks, answers, strict=True):
        if isinstance(answer, ConfigurationError):
            raise answer
        if isinstance(answer, OutcomeUnknown):
            continue  # maybe created: the refresh below tells
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
            await keeper.learn_created(answered)
        except ConfigurationError:
            raise
        except (BudgetShort, PardotError) as error:
            later = refused(error)
            return [failed.get(i) or later for i in range(len(needs))]
        for email, found in (await keeper.index.by_emails(emails)).items():
            new = [p for p in found if p.id not in seen]
            if new:
                learned[email] = max(new, key=lambda p: p.id)
    # Learned, or certainly not created: the index holds the truth about these again.
    done = [i for i, email in enumerate(emails) if email in learned or i in failed]
    await context.store.unlink([mark for i in done for mark in marks[i]])

    async def result(i: int, need: NeedsCreate) -> Target | Outcome:
        prospect = learned.get(emails[i])
        if i in failed:
            return failed[i]
        if prospect is None:
            return RetryLater("retry: Pardot does not show the prospect created for this event yet")
        return await created(context, need, prospect)

    return list(await asyncio.gather(*(result(i, need) for i, need in enumerate(needs))))


def written_by_create(group: Group) -> dict[str, Stamped]:
    """Everything a create wrote for the group: its fields and its email."""
    return {**group.stamps, **({"email": group.email} if group.email is not None else {})}
