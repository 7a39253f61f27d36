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

from domain.budget import Priority
from domain.index.feed import IndexFeed
from domain.ports import QUERY_LIMIT, ProspectPage, ProspectQuery
from domain.prospect import Prospect

_TIME = "%Y-%m-%d %H:%M:%S"
_DELETED_FIELDS = ("updated_at",)


def earlier(pardot_time: str, seconds: float = 1) -> str:
    """A Pardot time moved back: bounds overlap the last second (times have whole seconds)."""
    moment = datetime.strptime(pardot_time, _TIME) - timedelta(seconds=seconds)
    return moment.strftime(_TIME)


async def pull_changes(
    feed: IndexFeed, mark: str | None, priority: Priority, *, lag: float = 0
) -> str | None:
    """Every prospect updated since `mark` into the index, then every prospect deleted since
    then out of it; returns the new mark (from live rows only: a deletion's time says nothing
    of changes a query answered just before it missed).

    The two pulls are independent queries and go out together (a create waits on this
    refresh); the deletions are applied once every live row is in, and never to a row the
    index holds as changed after its deletion (restored meanwhile).
    """
    bound = earlier(mark, 1 + lag) if mark else None
    if bound is None:  # a first refresh follows a scan, which saw no deleted prospect
        return await _pull(feed, bound, mark, priority, deleted=False)
    deleted: list[Prospect] = []
    new_mark, _ = await asyncio.gather(
        _pull(feed, bound, mark, priority, deleted=False),
        _pull(feed, bound, None, priority, deleted=True, into=deleted),
    )
    held = await feed.index.by_ids([p.id for p in deleted])
    await feed.index.drop(
        [p.id for p in deleted if p.id not in held or held[p.id].updated_at <= p.updated_at]
    )
    return new_mark


async def _pull(
    feed: IndexFeed,
    bound: str | None,
    mark: str | None,
    priority: Priority,
    *,
    deleted: bool,
    into: list[Prospect] | None = None,
) -> str | None:
    """Pages of live rows into the index, or of deleted rows into `into`."""
    while True:
        query = ProspectQuery(updated_after=bound, sort_by="updated_at")
        page = await _page(feed, priority, deleted, query, into)
        if page.prospects:
            mark = max(mark or "", page.prospects[-1].updated_at) or mark
        if len(page.prospects) < QUERY_LIMIT or not page.prospects:
            return mark
        last = page.prospects[-1].updated_at
        following = earlier(last)
        if bound is not None and following <= bound:
            # A whole page within one second: page that second by id, then move on.
            await _pull_second(feed, bound, last, priority, deleted, into)
            following = last
        bound = following


async def _pull_second(
    feed: IndexFeed,
    bound: str,
    second: str,
    priority: Priority,
    deleted: bool,
    into: list[Prospect] | None,
) -> None:
    cursor = 0
    before = (datetime.strptime(second, _TIME) + timedelta(seconds=1)).strftime(_TIME)
    while True:
        query = ProspectQuery(id_greater_than=cursor, updated_after=bound, updated_before=before)
        page = await _page(feed, priority, deleted, query, into)
        if len(page.prospects) < QUERY_LIMIT:
            return
        cursor = page.prospects[-1].id


async def _page(
    feed: IndexFeed,
    priority: Priority,
    deleted: bool,
    query: ProspectQuery,
    into: list[Prospect] | None,
) -> ProspectPage:
    """One page of live rows into the index, or of deleted rows into `into`."""
    await feed.spend(priority)
    fields = _DELETED_FIELDS if deleted else (feed.fields or ())
    page = await feed.query(replace(query, fields=fields, deleted=deleted))
    if deleted:
        assert into is not None
        into.extend(page.prospects)
    else:
        await feed.put(page.prospects)
    return page
