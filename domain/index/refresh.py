"""Keeping the index fresh by Pardot's own times, never our clock (they are in the account's
zone), and learning the ids of prospects that batches created (batches return none).

In: an IndexFeed and the latest `updated_at` or `created_at` Pardot returned. Out: the
prospects changed or created since then, stored in the index, and the new high-water mark.
Bounds overlap the last second, since Pardot's times have whole seconds.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from domain.budget import Priority
from domain.index.feed import IndexFeed
from domain.ports import QUERY_LIMIT, ProspectQuery
from domain.prospect import Prospect

_TIME = "%Y-%m-%d %H:%M:%S"


def earlier(pardot_time: str, seconds: int = 1) -> str:
    """A Pardot time moved back: bounds overlap the last second (times have whole seconds)."""
    moment = datetime.strptime(pardot_time, _TIME) - timedelta(seconds=seconds)
    return moment.strftime(_TIME)


async def pull_changes(feed: IndexFeed, mark: str | None, priority: Priority) -> str | None:
    """Every prospect updated since `mark` into the index; returns the new mark."""
    bound = earlier(mark) if mark else None
    while True:
        await feed.spend(priority)
        page = await feed.query(
            ProspectQuery(
                updated_after=bound,
                sort_by="updated_at",
                fields=feed.fields or (),
            )
        )
        await feed.put(page.prospects)
        if page.prospects:
            mark = max(mark or "", page.prospects[-1].updated_at) or mark
        if len(page.prospects) < QUERY_LIMIT or mark is None:
            return mark
        following = earlier(mark)
        if bound is not None and following <= bound:
            # A whole page within one second: page that second by id, then move on.
            await _pull_second(feed, bound, mark, priority)
            following = mark
        bound = following


async def _pull_second(feed: IndexFeed, bound: str, second: str, priority: Priority) -> None:
    cursor = 0
    after = earlier(second, 0)
    before = (datetime.strptime(after, _TIME) + timedelta(seconds=1)).strftime(_TIME)
    while True:
        await feed.spend(priority)
        page = await feed.query(
            ProspectQuery(
                id_greater_than=cursor,
                updated_after=bound,
                updated_before=before,
                fields=feed.fields or (),
            )
        )
        await feed.put(page.prospects)
        if len(page.prospects) < QUERY_LIMIT:
            return
        cursor = page.prospects[-1].id


async def learn_created(feed: IndexFeed) -> list[Prospect]:
    """The prospects created since the last one seen (batch creates return no ids)."""
    state = await feed.index.state()
    mark = state.created_high_water
    bound = earlier(mark) if mark else None
    learned: list[Prospect] = []
    while True:
        await feed.spend("read")
        fields = await feed.fields_to_pull()
        page = await feed.query(
            ProspectQuery(created_after=bound, sort_by="created_at", fields=fields)
        )
        await feed.put(page.prospects)
        learned.extend(page.prospects)
        if page.prospects:
            mark = max(mark or "", page.prospects[-1].created_at) or mark
        if len(page.prospects) < QUERY_LIMIT or mark is None:
            break
        following = earlier(mark)
        if bound is not None and following <= bound:
            break  # more than a page created within one second: the refresh finds them
        bound = following
    state = await feed.index.state()
    await feed.index.save_state(replace(state, created_high_water=mark))
    return learned
