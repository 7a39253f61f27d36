"""Keeping the index fresh by Pardot's own times, never our clock (they are in the account's
zone): every prospect changed since the last change seen, and every one deleted or merged
away since then (the recycle bin, which a plain `updated_after` query never shows).

In: an IndexFeed, the latest `updated_at` Pardot returned and the index lag. Out: the changed
prospects stored in the index, the deleted ones dropped from it, and the new high-water mark.
Bounds overlap the last second (Pardot's times have whole seconds) plus the lag; more than a
page within one second is paged by id.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from domain.budget import Priority
from domain.index.export_refresh import ChangesByExport
from domain.index.feed import IndexFeed
from domain.ports import QUERY_LIMIT, ProspectPage, ProspectQuery
from domain.prospect import Prospect

_TIME = "%Y-%m-%d %H:%M:%S"
_DELETED_FIELDS = ("updated_at",)
By = Literal["updated", "created"]  # which of Pardot's times pages a pull
# Exports one refresh may chain (each reading back what changed while the one before ran):
# a stream that outruns them is read by pages after that.
MOST_EXPORTS = 4


def earlier(pardot_time: str, seconds: float = 1) -> str:
    """A Pardot time moved back: bounds overlap the last second (times have whole seconds)."""
    moment = datetime.strptime(pardot_time, _TIME) - timedelta(seconds=seconds)
    return moment.strftime(_TIME)


async def pull_changes(
    feed: IndexFeed,
    mark: str | None,
    priority: Priority,
    *,
    lag: float = 0,
    exports: ChangesByExport | None = None,
    deleted_after: str | None = None,
) -> str | None:
    """Every prospect updated since `mark` into the index, then every prospect deleted since
    then (or since `deleted_after`, when earlier) out of it; returns the new mark (from live
    rows only: a deletion's time says nothing of changes a query answered just before it
    missed).

    The two pulls are independent queries and go out together (a create waits on this
    refresh); the deletions are applied once the live rows read after them are in
    (`_with_deletions`), and never to a row the index holds as changed after its deletion
    (restored meanwhile). With `exports`, when the first page says more changes are due
    than one export costs, the export reads them back and the pages go on from the mark
    taken before it (`domain.index.export_refresh`).
    """
    bound = changes_bound(mark, lag)
    if bound is None:  # a first refresh follows a scan, which saw no deleted prospect
        return await _pull(feed, bound, mark, priority, deleted=False)
    binned = min(bound, deleted_after) if deleted_after else bound
    return await _with_deletions(feed, bound, mark, priority, lag, "updated", exports, binned)


def changes_bound(mark: str | None, lag: float = 0) -> str | None:
    """Where a refresh from `mark` reads changes from."""
    return earlier(mark, 1 + lag) if mark else None


async def _with_deletions(
    feed: IndexFeed,
    bound: str,
    mark: str | None,
    priority: Priority,
    lag: float,
    by: By,
    exports: ChangesByExport | None = None,
    binned: str | None = None,
) -> str | None:
    """Live rows since `bound` and the recycle bin since `binned` (default `bound`), asked
    together; the new mark.

    A prospect merged away after the live query was answered and before the recycle bin was
    shows in the bin while its survivor (changed, or created, before it went) is in no live
    page read: dropping it alone leaves the index with neither, a view Pardot never had, in
    which the person looks new and their next event creates a duplicate. So a row the bin
    takes out of the index goes only once the live rows were read again, after the bin
    answered; and the bin is read again after that, since a merge made meanwhile would leave
    both (two holders of one value, where Pardot has one). It ends with a bin that takes
    nothing out, so no merge made before it is seen by halves.
    """
    deleted: list[Prospect] = []
    binned = binned or bound
    exported = exports.exports if exports is not None else 0
    new_mark, _ = await asyncio.gather(
        _pull(feed, bound, mark, priority, deleted=False, by=by, exports=exports, lag=lag),
        _pull(feed, binned, None, priority, deleted=True, into=deleted),
    )
    if exports is not None and exports.exports > exported:
        # The export put rows as they stood when it ran, after the recycle bin answered: one
        # deleted since is in the index, and the pages after the mark do not show it (not
        # live). The bin read now shows it, and the next refresh's, from a mark older than
        # this read, shows any deleted later.
        deleted = []
        await _pull(feed, binned, None, priority, deleted=True, into=deleted)
    while await _held(feed, deleted):
        again = earlier(new_mark, 1 + lag) if new_mark else bound
        new_mark = await _pull(feed, again, new_mark, priority, deleted=False, by=by)
        await feed.index.drop(await _held(feed, deleted))
        deleted = []
        await _pull(feed, binned, None, priority, deleted=True, into=deleted)
    return new_mark


async def _held(feed: IndexFeed, deleted: list[Prospect]) -> list[int]:
    """The deleted prospects the index holds, unless as changed after (restored meanwhile)."""
    held = await feed.index.by_ids([p.id for p in deleted])
    return [p.id for p in deleted if p.id in held and held[p.id].updated_at <= p.updated_at]


async def pull_created(
    feed: IndexFeed, mark: str | None, priority: Priority, *, lag: float = 0
) -> str | None:
    """Every prospect created since `mark` (a `created_at`, or any `updated_at` bound that no
    later create can precede) into the index; returns the latest `created_at` seen.

    How the ids of our own creates are learned (batch answers carry none) without reading back
    every update made since: a first sync writes tens of thousands of known prospects, and a
    refresh after each create batch paged through all of them again. Rows the index holds as
    changed later are kept. Deletions since the same bound are applied too, so a view with the
    creates is never one without the deletions that came with them (a merge into a prospect an
    import created: the survivor is new, the prospect merged away is in the recycle bin).
    """
    bound = earlier(mark, 1 + lag) if mark else None
    if bound is None:  # nothing known yet: nothing to delete either
        return await _pull(feed, bound, mark, priority, deleted=False, by="created")
    return await _with_deletions(feed, bound, mark, priority, lag, "created")


async def _pull(
    feed: IndexFeed,
    bound: str | None,
    mark: str | None,
    priority: Priority,
    *,
    deleted: bool,
    into: list[Prospect] | None = None,
    by: By = "updated",
    exports: ChangesByExport | None = None,
    lag: float = 0,
) -> str | None:
    """Pages of live rows into the index, or of deleted rows into `into`; `exports` may read
    back what the first page says is due instead (live changes only), and again what the
    first page after its mark says, MOST_EXPORTS times at most."""
    exported = 0
    while True:
        query = ProspectQuery(sort_by=f"{by}_at", **{f"{by}_after": bound})  # type: ignore[arg-type]
        page = await _page(feed, priority, deleted, query, into, by)
        if exports is not None and bound is not None and len(page.prospects) == QUERY_LIMIT:
            due = (page.total or 0) - len(page.prospects)
            caught = await exports.catch_up(bound, due, priority, await feed.index.clock())
            exported += 1
            if caught is None or exported == MOST_EXPORTS:
                exports = None
            if caught is not None:
                # What changed while it ran may again be more than an export costs (a sync
                # writing on): the first page after its mark says.
                mark = max(mark or "", caught)
                bound = earlier(caught, 1 + lag)
                continue
        if page.prospects:
            mark = max(mark or "", _time(page.prospects[-1], by)) or mark
        if len(page.prospects) < QUERY_LIMIT or not page.prospects:
            return mark
        last = _time(page.prospects[-1], by)
        following = earlier(last)
        if bound is not None and following <= bound:
            # A whole page within one second: page that second by id, then move on.
            await _pull_second(feed, bound, last, priority, deleted, into, by)
            following = last
        bound = following


def _time(prospect: Prospect, by: By) -> str:
    return prospect.updated_at if by == "updated" else prospect.created_at


async def _pull_second(
    feed: IndexFeed,
    bound: str,
    second: str,
    priority: Priority,
    deleted: bool,
    into: list[Prospect] | None,
    by: By,
) -> None:
    cursor = 0
    before = (datetime.strptime(second, _TIME) + timedelta(seconds=1)).strftime(_TIME)
    while True:
        window = {f"{by}_after": bound, f"{by}_before": before}
        query = ProspectQuery(id_greater_than=cursor, **window)  # type: ignore[arg-type]
        page = await _page(feed, priority, deleted, query, into, by)
        if len(page.prospects) < QUERY_LIMIT:
            return
        cursor = page.prospects[-1].id


async def _page(
    feed: IndexFeed,
    priority: Priority,
    deleted: bool,
    query: ProspectQuery,
    into: list[Prospect] | None,
    by: By = "updated",
) -> ProspectPage:
    """One page of live rows into the index, or of deleted rows into `into`."""
    await feed.spend(priority)
    fields = _DELETED_FIELDS if deleted else (feed.fields or ())
    page = await feed.query(replace(query, fields=fields, deleted=deleted))
    if deleted:
        assert into is not None
        into.extend(page.prospects)
    elif by == "created":
        held = await feed.index.by_ids([p.id for p in page.prospects])
        await feed.put(
            [p for p in page.prospects if p.id not in held or held[p.id].updated_at < p.updated_at]
        )
    else:
        await feed.put(page.prospects)
    return page
