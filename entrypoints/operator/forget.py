"""Forgetting a person (a data-subject request): the use case behind `forget` and /admin/forget.

In: the identities a request names (`domain.forget`), the store's ports and, with `in_pardot`,
the Pardot repository. Out: a `ForgetReport`: what was removed per kind, each prospect of the
person and what became of it in Pardot and in the index, and whether the person is now
suppressed; `as_dict()` is its JSON.

The person is found as `explain` finds them (links of the userId or anonymousId, prospects
that carry the email, then every event and identity of those prospects), plus every prospect
the index holds with their email. The store then removes everything of theirs and suppresses
their identities in one transaction; only then are their prospects deleted in Pardot, so a
worker cannot re-create one from an event still waiting.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from domain.errors import PardotError
from domain.forget import ANONYMOUS, EMAIL, USER, digests, emails_of, users_of, value_of
from domain.ports import (
    DeliveryHistory,
    PardotRepository,
    Person,
    PersonalData,
    ProspectIndex,
    ProspectStore,
    Removed,
    SuppressionList,
)
from entrypoints.assembly import REFRESH_LOCK
from entrypoints.operator.fields import RepositoryProvider

# How far a forget follows ids from event to event: bounded, since an id several people share
# (a family's device, a shared inbox) would otherwise draw in each of them in turn.
EVENT_ROUNDS = 3
HISTORY_LIMIT = 10_000  # events of one person `explain`'s walk reads to find their prospects

Fate = Literal[
    "deleted in Pardot",  # --in-pardot: moved to Pardot's recycle bin, dropped from the index
    "not in Pardot",  # --in-pardot: Pardot had no live prospect with that id
    "kept in Pardot",  # without --in-pardot: Pardot still holds it, the index keeps its row
    "would be deleted in Pardot",  # a dry run with --in-pardot
    "not deleted",  # --in-pardot failed: `error` says why
    "id unknown",  # a v3 prospect whose id neither the index nor Pardot could tell
]


@dataclass(frozen=True)
class ProspectFate:
    prospect: str  # the store's key
    prospect_id: int | None
    fate: Fate
    error: str = ""


@dataclass(frozen=True)
class ForgetReport:
    asked: list[str]  # the identities the request named
    dry_run: bool
    in_pardot: bool
    removed: Removed = field(default_factory=Removed)
    prospects: list[ProspectFate] = field(default_factory=list)
    suppressed: int = 0  # identities on the suppression list now (digests, never the values)
    identities: int = 0  # identities of the person found
    # Whether the store's files hold no old copy of what went (PersonalData.scrub); None in a
    # dry run or when nothing matched.
    scrubbed: bool | None = None

    @property
    def nothing_matched(self) -> bool:
        return self.removed.total == 0 and not self.prospects

    @property
    def pardot_failed(self) -> bool:
        return any(p.fate == "not deleted" for p in self.prospects)

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "dryRun": self.dry_run,
            "inPardot": self.in_pardot,
            "nothingMatched": self.nothing_matched,
            "removed": self.removed.as_dict(),
            "prospects": [
                {"prospect": p.prospect, "prospectId": p.prospect_id, "fate": p.fate}
                | ({"error": p.error} if p.error else {})
                for p in self.prospects
            ],
            "identities": self.identities,
            "suppressed": self.suppressed,
            "scrubbed": self.scrubbed,
        }


@dataclass(frozen=True)
class ForgetSources:
    """What a forget reads and changes; `pardot` is asked for only with `in_pardot`."""

    personal_data: PersonalData
    suppression: SuppressionList
    store: ProspectStore
    history: DeliveryHistory
    index: ProspectIndex
    pardot: RepositoryProvider


async def forget(
    asked: Collection[str], sources: ForgetSources, *, in_pardot: bool, dry_run: bool
) -> ForgetReport:
    """Remove everything kept of the person `asked` names and suppress them (see the module)."""
    report = ForgetReport(sorted(asked), dry_run, in_pardot)
    person = await find_person(frozenset(asked), sources)
    ids = await _prospect_ids(person, sources.index)
    counted = await sources.personal_data.forget(person, suppress=(), dry_run=True)
    indexed = len(await sources.index.by_ids([i for i in ids.values() if i is not None]))
    found = replace(report, identities=len(person.identities), removed=counted)
    if counted.total == 0 and not ids:
        return found
    if dry_run:
        fate: Fate = "would be deleted in Pardot" if in_pardot else "kept in Pardot"
        removed = replace(counted, index=indexed if in_pardot else 0)
        return replace(found, removed=removed, prospects=_fates(ids, fate))
    # Pardot must answer before anything is removed: a forget whose Pardot half cannot even
    # start would leave the operator with the prospects and no record of which they were.
    repository = await sources.pardot() if in_pardot else None
    salt = await sources.suppression.salt()
    removed = await sources.personal_data.forget(
        person, suppress=digests(salt, person.identities), dry_run=False
    )
    suppressed = len(await sources.suppression.suppressed(digests(salt, person.identities)))
    done = replace(found, removed=removed, suppressed=suppressed)
    if repository is None:
        scrubbed = await sources.personal_data.scrub()
        return replace(done, prospects=_fates(ids, "kept in Pardot"), scrubbed=scrubbed)
    # Under the index's refresh lock: a refresh in flight (the periodic one runs beside the
    # batches) may have read the prospect before its delete and would put it back after the
    # drop, plain email and all, until the refresh after it.
    async with sources.store.create_lock(REFRESH_LOCK):
        fates = await _delete_in_pardot(ids, repository)
        gone = [p.prospect_id for p in fates if p.fate in ("deleted in Pardot", "not in Pardot")]
        dropped = len(await sources.index.by_ids([i for i in gone if i is not None]))
        await sources.index.drop([i for i in gone if i is not None])
    scrubbed = await sources.personal_data.scrub()
    return replace(
        done, removed=replace(removed, index=dropped), prospects=fates, scrubbed=scrubbed
    )


async def lift(asked: Collection[str], suppression: SuppressionList) -> int:
    """Take the identities `asked` names off the suppression list; returns how many were on it.

    Only what is named: the identities a forget found beside it stay suppressed until each is
    lifted too (the list cannot say which they were: it keeps digests)."""
    salt = await suppression.salt()
    return await suppression.lift(digests(salt, asked))


async def find_person(asked: frozenset[str], sources: ForgetSources) -> Person:
    """Every identity and prospect linked to `asked`, as `explain` walks them."""
    store, history = sources.store, sources.history
    people = [i for i in asked if i.startswith((USER, ANONYMOUS))]
    prospects = dict.fromkeys((await store.links(people)).values())
    emails = emails_of(asked)
    for email in emails:
        prospects.update(dict.fromkeys(await history.prospects_with_email(email)))
        for holder in (await sources.index.by_emails([email])).get(email, []):
            prospects[str(holder.id)] = None
    entries = await history.touching(
        prospects=list(prospects),
        user_ids=users_of(asked),
        emails=emails,
        limit=HISTORY_LIMIT,
    )
    identities = set(asked)
    for entry in entries:
        if entry.prospect is not None:
            prospects[entry.prospect] = None
        if entry.user_id:
            identities.add(USER + entry.user_id)
        if entry.email:
            identities.add(EMAIL + entry.email.lower())
    for key in list(prospects):
        if key.startswith(EMAIL):
            identities.add(key.lower())  # a v3 prospect is its email
        for linked in await history.identities_of(key):
            if linked.startswith((USER, ANONYMOUS)):
                identities.add(linked)
        written = (await store.stamps(key)).get("email")
        if written is not None and isinstance(written.value, str) and written.value.strip():
            identities.add(EMAIL + written.value.strip().lower())
    prospects.pop("pending", None)  # a create mark's placeholder, not a prospect
    # The ids and emails their stored events came with (the anonymousId of a userId's event,
    # say) are theirs too, and so are those events' companions in turn.
    for _ in range(EVENT_ROUNDS):
        more = await sources.personal_data.identities_in_events(identities) - identities
        if not more:
            break
        identities |= more
    return Person(frozenset(identities), frozenset(prospects))


async def _prospect_ids(person: Person, index: ProspectIndex) -> dict[str, int | None]:
    """Each prospect's Pardot id: the key itself, or (v3) what the index holds for the email."""
    ids: dict[str, int | None] = {}
    for key in sorted(person.prospects):
        if key.isdigit():
            ids[key] = int(key)
        elif key.startswith(EMAIL):
            holders = (await index.by_emails([value_of(key)])).get(value_of(key), [])
            ids[key] = max(holders, key=lambda p: p.updated).id if holders else None
    return ids


def _fates(ids: dict[str, int | None], fate: Fate) -> list[ProspectFate]:
    return [ProspectFate(key, prospect_id, fate) for key, prospect_id in ids.items()]


async def _delete_in_pardot(
    ids: dict[str, int | None], repository: PardotRepository
) -> list[ProspectFate]:
    """One `do/delete/id/N` per prospect; a v3 prospect the index never saw is read by email
    first. A failure stops nothing else: its prospect is reported `not deleted`."""
    fates: list[ProspectFate] = []
    for key, prospect_id in ids.items():
        try:
            targets = [prospect_id] if prospect_id is not None else []
            if prospect_id is None and key.startswith(EMAIL):
                targets = [p.id for p in await repository.read_by_email(value_of(key))]
            if not targets:
                fates.append(ProspectFate(key, None, "id unknown"))
            for target in targets:
                deleted = await repository.delete_prospect(target)
                fates.append(
                    ProspectFate(key, target, "deleted in Pardot" if deleted else "not in Pardot")
                )
        except PardotError as error:
            fates.append(ProspectFate(key, prospect_id, "not deleted", str(error)))
    return fates
