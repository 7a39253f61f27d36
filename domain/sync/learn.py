"""Learn: what a write or a create did in, the store's and the index's memory of it out.

In: a prospect key with the stamps of what was written and the groups that wrote it (or a
prospect Pardot created). Out: the stamps recorded (value and event time per field), the
identities linked to the prospect (userId, anonymousId, lookup value, fid), and the index's
copy of a written prospect in the form Pardot would return it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import replace

from domain.errors import ConfigurationError, PardotError
from domain.index import BudgetShort, IndexKeeper
from domain.matching import MatchByLookup, UpsertByFid
from domain.ports import FieldStamp
from domain.prospect import Fields, Prospect, normalise_email
from domain.sync.compare import FieldType, normal
from domain.sync.context import Context, LookupValues, NeedsCreate, Target
from domain.sync.grouping import Group


def links(
    lookup: LookupValues, key: str, groups: Iterable[Group], prospect: Prospect | None
) -> dict[str, str]:
    """The identities that lead to the prospect `key` (none with v3: the email is the key)."""
    found = {identity: key for group in groups for identity in identities(lookup, group)}
    if prospect is not None and prospect.fid:
        found[f"fid:{prospect.fid}"] = key
    return found if not key.startswith("email:") else {}


def identities(lookup: LookupValues, group: Group) -> list[str]:
    """Who the group's events are: userIds, anonymousIds, the key it matched by (the lookup
    value, the fid) and its email. Matching never follows an email link (it reads the index):
    it only leads to the person's earlier prospect once Pardot dropped it (sync/carried.py)."""
    found = [f"user:{u}" for u in sorted(group.user_ids)]
    found += [f"anonymous:{a}" for a in sorted(group.anonymous_ids)]
    write = group.write
    if isinstance(write, MatchByLookup):
        found.append(f"lookup:{write.lookup_field}={lookup.stored(write.value)}")
    elif isinstance(write, UpsertByFid):
        found.append(f"fid:{write.fid}")
    email = normalise_email(group.email.value) if group.email is not None else None
    if email is not None:
        found.append(f"email:{email.lower()}")
    return found


async def remember(
    context: Context, key: str, stamps: Mapping[str, FieldStamp], groups: Iterable[Group]
) -> None:
    """Record what was written to `key` and link the groups' identities to it."""
    await context.store.record(key, stamps)
    await context.store.link(links(context.lookup, key, groups, None))


async def created(context: Context, need: NeedsCreate, prospect: Prospect) -> Target:
    """Remember what a create wrote, and check it kept the lookup value it was given."""
    group, lookup = need.group, context.lookup.field
    held = context.lookup.text_of(prospect)
    if need.expect is not None and lookup is not None and held != need.expect:
        message = (
            f"prospect {prospect.id} was created with {lookup}={need.expect} but Pardot "
            f"stored {held!r}: check the type of the field {lookup}; deliveries wait "
            "rather than create one prospect per event"
        )
        context.note_broken(message)
        raise ConfigurationError(message)
    key = str(prospect.id)
    stamps = {name: FieldStamp(s.value, s.at) for name, s in group.stamps.items()}
    if group.email is not None:
        stamps["email"] = FieldStamp(group.email.value, group.email.at)
    await context.store.record(key, stamps)
    await context.store.link(links(context.lookup, key, [group], prospect))
    return Target(key, f"created prospect {prospect.id}: {need.why}", prospect.id, created=True)


async def learn_upserted(keeper: IndexKeeper) -> None:
    """v3 upserts may have created prospects and batches return no ids: learn what was
    created by now (one learn serves later batches too)."""
    with contextlib.suppress(PardotError, BudgetShort):
        await keeper.learn_created(None)


def as_written(prospect: Prospect, fields: Fields, field_type: FieldType) -> Prospect:
    """The index's copy of a prospect after a write, values as Pardot would return them."""
    values = dict(prospect.fields)
    email = prospect.email
    for name, value in fields.items():
        if name == "email":
            email = value if isinstance(value, str) and value else email
            continue
        value_read = normal(name, value, field_type)
        if value_read in ("", ()):
            values.pop(name, None)
        else:
            values[name] = value_read
    return replace(prospect, email=email, fields=values)
