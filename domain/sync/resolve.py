"""Resolve: one group in, the prospect its events go to out (rules 1-4, docs/matching.md).

In: a group and the call's `Context`. Out: a `Target` (a prospect key and why), an outcome
(rejected, or retry when Pardot or the budget says so), `NeedsCreate` when the index says
no prospect fits (without the index the create happens here, under the email's create lock),
or `Stale` when the decision depends on what Pardot holds and the index is older than the
events (only our own links and an explicit id are trusted from a stale index).
Links come first, then the index (whole account) or Pardot (by id, fid or email).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from domain.errors import ConfigurationError, PardotError
from domain.index import BudgetShort
from domain.matching import MatchByLookup, MatchPerson, UpsertByEmail, UpsertByFid, UpsertById
from domain.prospect import Prospect
from domain.sync.context import Context, NeedsCreate, Stale, Target, updated
from domain.sync.grouping import Group
from domain.sync.learn import created
from domain.sync.locks import lookup_lock
from domain.sync.outcomes import Outcome, Rejected, refused

Resolution = Target | Outcome | NeedsCreate | Stale
STALE = Stale("the index is older than the events")


async def resolve_safely(group: Group, context: Context) -> Resolution:
    """`resolve`, with Pardot's errors and a short budget as the group's outcome."""
    try:
        return await resolve(group, context)
    except ConfigurationError:
        raise
    except (BudgetShort, PardotError) as error:
        return refused(error)


async def resolve(group: Group, context: Context) -> Resolution:
    write = group.write
    if isinstance(write, UpsertByEmail):
        return Target(f"email:{write.email.lower()}", write.reason)
    if isinstance(write, UpsertById):
        return updated(write.prospect_id, write.reason)
    if isinstance(write, UpsertByFid):
        return await _by_fid(write, context)
    email = group.email.value if group.email is not None else None
    assert email is None or isinstance(email, str)
    if isinstance(write, MatchByLookup):
        return await _by_lookup(group, write, email, context)
    return await _by_person(group, write, email, context)


async def _by_fid(write: UpsertByFid, context: Context) -> Target | Outcome | Stale:
    identity = f"fid:{write.fid}"
    known = (await context.store.links([identity])).get(identity)
    if known is not None:
        return updated(int(known), write.reason, via_links=(identity,))
    if context.index is not None:
        prospect = await context.index.index.by_fid(write.fid)
    else:
        prospect = await context.repository.read_by_fid(write.fid)
    if prospect is None:
        return _pardot_holds(context, Rejected(f"rejected: no prospect has fid {write.fid}"))
    if _stale(context):
        return STALE  # the fid may have moved to another prospect since
    await context.store.link({identity: str(prospect.id)})
    return updated(prospect.id, write.reason)


async def _by_lookup(
    group: Group, write: MatchByLookup, email: str | None, context: Context
) -> Resolution:
    """Rules 1 and 2: the one prospect holding V; else adopt one with E and no value.

    From the index, the prospects holding V are all of them; without it, those linked to
    V and those with email E (Pardot cannot search custom fields).
    """
    lookup = context.lookup
    value = lookup.stored(write.value)
    identity = f"lookup:{write.lookup_field}={value}"
    described = f"{write.lookup_field}={write.value}"
    async with _lock(email, context, lookup_lock(write.lookup_field, value)):
        holders: dict[int, Prospect] = {}
        if context.index is not None:
            holders.update({p.id: p for p in await context.index.index.holding(value)})
            candidates = await _with_email(email, context)
        else:
            linked = (await context.store.links([identity])).get(identity)
            if linked is not None:
                # A marketer may have changed the value in Pardot since: check, never trust.
                prospect = await context.repository.read_by_id(int(linked))
                if prospect is not None and lookup.holds(prospect, value):
                    holders[prospect.id] = prospect
                else:
                    await context.store.unlink([identity])
            candidates = await context.repository.read_by_email(email) if email else []
        holders.update({p.id: p for p in candidates if lookup.holds(p, value)})
        if len(holders) > 1:
            ids = ", ".join(str(i) for i in sorted(holders))
            return _pardot_holds(
                context,
                Rejected(
                    f"rejected: {len(holders)} prospects have {described} (ids {ids}); "
                    "wrote nothing rather than guess"
                ),
            )
        if holders:
            [prospect] = holders.values()
            # A marketer may have moved V to another prospect since the index last looked.
            return _pardot_holds(context, updated(prospect.id, described))
        if email is None:
            return _pardot_holds(
                context,
                Rejected(
                    f"rejected: no prospect has {described} and there is no email to find or "
                    "create one by (Pardot v4 cannot search custom fields)"
                ),
            )
        empty = [p for p in candidates if lookup.text_of(p) is None]
        if empty:
            adopted = latest(empty)
            return _pardot_holds(
                context,
                updated(
                    adopted.id,
                    f"adopted for {described}, the latest with email {email} and no "
                    f"{write.lookup_field}",
                ),
            )
        need = NeedsCreate(group, email, f"no prospect has {described}", expect=value)
        return need if context.index is not None else await _create(need, context)


async def _by_person(
    group: Group, write: MatchPerson, email: str | None, context: Context
) -> Resolution:
    """Rules 3 and 4: the person's own prospect; else one found by email; else a new one.

    An anonymousId link yields when the event brings another email than the linked
    prospect's (two visitors on one device): that email's own resolution is taken.
    """
    person = person_identity(group)
    if person is not None:
        linked = (await context.store.links([person])).get(person)
        if linked is not None:
            kind = person.split(":", 1)[0]
            weak = kind == "anonymous" and email is not None
            theirs = await _linked_email(int(linked), context) if weak else None
            if isinstance(theirs, Stale):
                return theirs
            if theirs is None or _same_email(theirs, email):
                return updated(int(linked), f"linked to {kind} id", via_links=(person,))
            # Another visitor on the same device: this email's own prospect, not theirs.
    if email is None:
        return Rejected(write.missing_email)
    async with _lock(email, context):
        candidates = await _with_email(email, context)
        if write.lookup_field is None:
            if candidates:
                found = updated(latest(candidates).id, f"the latest with email {email}")
                return _pardot_holds(context, found)
            need = NeedsCreate(group, email, f"no prospect has email {email}")
            return need if context.index is not None else await _create(need, context)
        free = [p for p in candidates if context.lookup.text_of(p) is None]
        if free:
            return _pardot_holds(
                context,
                updated(
                    latest(free).id,
                    f"the latest with email {email} and no {write.lookup_field}",
                ),
            )
        if len(candidates) == 1:
            [only] = candidates
            return _pardot_holds(context, updated(only.id, f"the only one with email {email}"))
        if candidates:
            ids = ", ".join(str(p.id) for p in sorted(candidates, key=lambda p: p.id))
            return _pardot_holds(
                context,
                Rejected(
                    f"rejected: {len(candidates)} prospects have email {email}, each with its "
                    f"own {write.lookup_field} (ids {ids}); wrote nothing rather than guess"
                ),
            )
        need = NeedsCreate(group, email, f"no prospect has email {email}")
        return need if context.index is not None else await _create(need, context)


async def _linked_email(prospect_id: int, context: Context) -> str | Stale | None:
    """The email of the prospect an anonymousId is linked to, the cheapest way that is right.

    The store's stamp first: it is the email our own events last wrote there, read from the
    store like the link itself, and trusted as the link is, even from a stale index. Without
    one (the link came from an event without email), the index when it is fresh, else
    Pardot (one read). None when the prospect is gone (the write finds out and resolves again).
    """
    stamp = (await context.store.stamps(str(prospect_id))).get("email")
    if stamp is not None and isinstance(stamp.value, str) and stamp.value:
        return stamp.value
    if context.index is not None:
        if _stale(context):
            return STALE
        found = (await context.index.index.by_ids([prospect_id])).get(prospect_id)
    else:
        found = await context.repository.read_by_id(prospect_id)
    return found.email if found is not None else None


def _same_email(one: str, other: str | None) -> bool:
    return other is not None and one.strip().lower() == other.strip().lower()


def _pardot_holds(context: Context, decision: Target | Outcome) -> Target | Outcome | Stale:
    """A decision about what Pardot holds (which prospects have E, hold V or none): made from
    the index only while it is fresh for the call's events; Pardot read now needs nothing."""
    return STALE if _stale(context) else decision


def _stale(context: Context) -> bool:
    return context.index is not None and not context.fresh


async def _with_email(email: str | None, context: Context) -> list[Prospect]:
    if email is None:
        return []
    if context.index is not None:
        found = await context.index.index.by_emails([email])
        return found.get(email.strip().lower(), [])
    return await context.repository.read_by_email(email)


async def _create(need: NeedsCreate, context: Context) -> Target:
    """One create, read straight from Pardot's answer (without the index: see create.py)."""
    group = need.group
    fields = {name: stamped.value for name, stamped in group.stamps.items()}
    made = await context.repository.create(need.email, {**group.write.create_fields, **fields})
    return await created(context, need, made)


def _lock(
    email: str | None, context: Context, *names: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """Reading Pardot, finding or creating holds the email's lock (and the lookup value's,
    in `names`, so two emails cannot both find nobody holding it and create); from the
    index, finding only reads the store, and creates take the locks in
    `fresh.resolve_fresh`. Without an email nothing is created: no lock."""
    if email is None or context.index is not None:
        return contextlib.nullcontext()
    return context.store.hold([email, *names])


def person_identity(group: Group) -> str | None:
    """userId first; an anonymousId only for events that carry no userId."""
    write = group.write
    if write.user_id is not None:
        return f"user:{write.user_id}"
    if write.anonymous_id is not None:
        return f"anonymous:{write.anonymous_id}"
    return None


def latest(prospects: Sequence[Prospect]) -> Prospect:
    """The most recently updated prospect (Pardot's updated_at), the higher id on a tie."""
    return max(prospects, key=lambda p: (p.updated, p.id))
