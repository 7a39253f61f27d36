"""Fresh decisions: the groups of one call in, each resolved from an index fresh enough for it.

In: the groups and the call's `Context`. Out: one resolution per group (never `Stale`) and the
context the rest of the call uses. Decisions that depend on what Pardot holds come from the
index only while the refresh behind its watermark began after every event of the call arrived
(docs/matching.md); otherwise one refresh comes first, shared with every batch and process
that needs it then. Creates take the create locks of every email and lookup value they may
create for (one sorted `ProspectStore.hold`), refresh (from a moment after the locks when an
earlier create of one of those emails may not be in the index yet), resolve again and only
then create (`create.create_batches`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from domain.errors import ConfigurationError, PardotError
from domain.index import BudgetShort
from domain.matching import MatchByLookup
from domain.sync.context import Context, NeedsCreate, Stale
from domain.sync.create import create_batches, creating
from domain.sync.grouping import Group
from domain.sync.locks import create_locks, lookup_lock
from domain.sync.outcomes import Outcome, RetryLater, refused
from domain.sync.resolve import Resolution, resolve_safely


async def resolve_all(groups: Sequence[Group], context: Context) -> list[Resolution]:
    return list(await asyncio.gather(*(resolve_safely(group, context) for group in groups)))


async def resolve_fresh(
    groups: Sequence[Group], context: Context
) -> tuple[list[Resolution], Context]:
    """Resolve every group; refresh first where a decision needs it (once, twice only when the
    refresh shows a create is needed after all)."""
    results = await resolve_all(groups, context)
    keeper = context.index
    if keeper is None or not any(isinstance(r, Stale | NeedsCreate) for r in results):
        return results, context
    if not any(isinstance(r, NeedsCreate) for r in results):
        failed = await _refreshed(lambda: keeper.refresh_for(context.arrived))
        if failed is not None:
            return [failed if isinstance(r, Stale) else r for r in results], context
        context = replace(context, fresh=True)
        results = await resolve_all(groups, context)
        if not any(isinstance(r, NeedsCreate) for r in results):
            return results, context
    return await _with_creates(groups, results, context), replace(context, fresh=True)


async def _with_creates(
    groups: Sequence[Group], results: list[Resolution], context: Context
) -> list[Resolution]:
    keeper = context.index
    assert keeper is not None
    keys = sorted(
        {
            group.email.value.strip().lower()
            for group, result in zip(groups, results, strict=True)
            if isinstance(result, Stale | NeedsCreate)
            and group.email is not None
            and isinstance(group.email.value, str)
        }
    )
    # And the lookup values they may create a holder of: two emails with one value wait too.
    names = sorted({*keys, *lookup_locks(groups, results, context)})
    async with context.store.hold(names):
        # A create for one of these emails or lookup values whose prospect was never learned
        # (its process died, or Pardot did not answer the query) is not in the index: only a
        # refresh begun now finds it. Otherwise any refresh begun after the events arrived will do.
        unlearned = await context.store.links([creating(name) for name in names])
        moment = await keeper.index.clock() if unlearned else context.arrived
        failed = await _refreshed(lambda: keeper.refresh_for(moment))
        if failed is not None:
            return [failed if isinstance(r, Stale | NeedsCreate) else r for r in results]
        locked = replace(context, fresh=True, locked=True)
        results = await resolve_all(groups, locked)
        needs = [i for i, r in enumerate(results) if isinstance(r, NeedsCreate)]
        held = set(names)  # once: a first sync's batch holds 20,000 names for 20,000 needs
        mine = [i for i in needs if held.issuperset(create_locks([_need(results[i])]))]
        expected = set(mine)
        for i in needs:
            if i not in expected:
                # The refresh showed this group needs a create for an email (or lookup value)
                # not locked here.
                results[i] = RetryLater("retry: a create this batch did not expect", delay=1)
        made = await create_batches([_need(results[i]) for i in mine], locked)
        for position, outcome in zip(mine, made, strict=True):
            results[position] = outcome
    return results


def lookup_locks(
    groups: Sequence[Group], results: Sequence[Resolution], context: Context
) -> set[str]:
    """The lookup values of the groups that may need a create, in the form Pardot stores."""
    return {
        lookup_lock(group.write.lookup_field, context.lookup.stored(group.write.value))
        for group, result in zip(groups, results, strict=True)
        if isinstance(result, Stale | NeedsCreate) and isinstance(group.write, MatchByLookup)
    }


async def _refreshed(refresh: Callable[[], Awaitable[None]]) -> Outcome | None:
    """Run a refresh; the outcome of the groups waiting on it when it cannot be made."""
    try:
        await refresh()
    except ConfigurationError:
        raise
    except (BudgetShort, PardotError) as error:
        return refused(error)
    return None


def _need(result: Resolution) -> NeedsCreate:
    assert isinstance(result, NeedsCreate)
    return result
