"""The index's lookup column, computed again when the lookup field (or its type) changed.

In: the IndexFeed (the lookup field set now, and its type once the account was asked), the
index's state and the scan lock every process shares. Out: `match_lookup_column`, which
leaves the rows' lookup values computed for the field set now, or the index cleared to be
filled again when its rows cannot say (an export without custom fields filled them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from domain.index.feed import IndexFeed
from domain.ports import IndexState

log = logging.getLogger(__name__)

RELABEL_PAGE = 1000  # index rows per store read when the lookup column is recomputed


async def match_lookup_column(
    feed: IndexFeed,
    state: IndexState,
    scan_lock: Callable[[], AbstractAsyncContextManager[None]],
) -> None:
    """Recompute the rows' lookup values when the field set now is not the one they were
    computed for. Raises BudgetShort (the field's type is asked once per process)."""
    if feed.lookup_column == (None, None) and state.lookup_field is None:
        return
    await feed.fields_to_pull()  # the field's type: one call per process
    wanted = feed.lookup_column
    if (state.lookup_field, state.lookup_type) == wanted:
        return
    index = feed.index
    async with scan_lock():
        state = await index.state()
        if (state.lookup_field, state.lookup_type) == wanted:
            return  # another process recomputed it meanwhile
        # Every row holds every custom field's value: the column is computed again from
        # them, no call to Pardot. Rows an export without custom fields filled do not:
        # then the index is filled again (by exports only where they carry the field).
        cursor, rows = 0, 0
        while page := await index.rows_after(cursor, RELABEL_PAGE):
            if wanted[0] is not None and any(wanted[0] in p.unknown for p in page):
                await index.clear()
                log.warning(
                    "prospect index: the lookup field %s is not held by rows an export "
                    "filled; the index is filled again", wanted[0],
                )  # fmt: skip
                return
            await feed.put(page)
            cursor, rows = page[-1].id, rows + len(page)
        state = await index.state()
        await index.save_state(replace(state, lookup_field=wanted[0], lookup_type=wanted[1]))
        log.warning(
            "prospect index: lookup values of %d prospects recomputed for %s (%s); they "
            "were for %s (%s)",
            rows, wanted[0], wanted[1], state.lookup_field, state.lookup_type,
        )  # fmt: skip
