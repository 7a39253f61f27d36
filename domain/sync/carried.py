"""Stamps carried to a merge's survivor: an older event never writes over a newer one's value
because Pardot moved the person to another prospect (pure rule over the store and index).

Our stamps are kept per prospect. When a marketer merges the prospect our events wrote into
another, the survivor has none of them, so an older event still waiting would write its value
over the newer one's. The person's earlier prospects are known two ways: a write there met
error 3 (`Group.gone_from`), or, when a refresh saw the merge before any write did, one of
the person's identities (userId, anonymousId, lookup value or email: `learn.identities`)
still links to a prospect the fresh index no longer holds. Their stamps are
counted as the survivor's, and recorded on it, so later events of the person see them too.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.ports import FieldStamp
from domain.sync.context import Context, Target
from domain.sync.grouping import Group
from domain.sync.learn import identities


async def known_stamps(
    target: Target, groups: Sequence[Group], context: Context
) -> dict[str, FieldStamp]:
    """The store's stamps of `target`, with those of the person's prospects now gone."""
    known = await context.store.stamps(target.key)
    carried: dict[str, FieldStamp] = {}
    for gone in await _gone_before(target, groups, context):
        for name, stamp in (await context.store.stamps(gone)).items():
            if later(stamp, known.get(name)):
                known[name] = carried[name] = stamp
    if carried:
        await context.store.record(target.key, carried)
    return known


async def _gone_before(target: Target, groups: Sequence[Group], context: Context) -> list[str]:
    gone = {key for group in groups for key in group.gone_from}
    # By id only: with v3 the email is the key, and a survivor keeps the person's email.
    if target.key.isdigit() and context.index is not None and context.fresh:
        names = sorted({name for g in groups for name in identities(context.lookup, g)})
        linked = {
            key
            for key in (await context.store.links(names)).values()
            if key.isdigit() and key != target.key
        }
        if linked:
            held = await context.index.index.by_ids([int(key) for key in linked])
            gone |= {key for key in linked if int(key) not in held}
    return sorted(gone - {target.key})


def later(stamp: FieldStamp, other: FieldStamp | None) -> bool:
    """Whether `stamp` is later than `other` (a stamp without a time is never later)."""
    if other is None:
        return True
    return stamp.at is not None and (other.at is None or stamp.at > other.at)
