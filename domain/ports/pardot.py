"""The ports towards Pardot: the prospect repository, its request slots and the tokens.

Implemented by `adapters.pardot` and `adapters.salesforce` (and the stores, for the slots);
the sync service, the index keeper and the operator commands call Pardot only through these.
Also Pardot's row limits per call (`BATCH_LIMIT`, `QUERY_LIMIT`) and the shapes of a batch
row (`ProspectWrite`) and of a query page (`ProspectQuery` in, `ProspectPage` out).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from domain.errors import PardotError
from domain.prospect import CustomField, Fields, Prospect

BATCH_LIMIT = 50  # Pardot answers error 70 past 50 prospects in one batch call
QUERY_LIMIT = 200  # rows per query call (PARDOT_API.md, "Pulling many prospects")


@dataclass(frozen=True)
class ProspectWrite:
    """One row of a batch write, keyed the way Pardot's URL or batch row names a prospect.

    `mode="update"` never creates; `mode="upsert"` follows Pardot's upsert for that key
    (v4 upsert by email alone always creates, which is why the domain never asks for it).
    """

    by: Literal["email", "id", "fid"]
    key: str
    fields: Fields = field(default_factory=dict)
    create_fields: Fields = field(default_factory=dict)
    mode: Literal["upsert", "update", "create"] = "upsert"


@dataclass(frozen=True)
class ProspectQuery:
    """One page of Pardot's prospect `query`, with a high-water mark rather than an offset.

    Times are Pardot's own `YYYY-MM-DD HH:MM:SS` in the account's zone, taken from values
    Pardot returned (PARDOT_API.md). `fields` asks for only `id` and those fields.
    """

    id_greater_than: int | None = None
    id_less_than: int | None = None
    created_after: str | None = None
    created_before: str | None = None
    updated_after: str | None = None
    updated_before: str | None = None
    sort_by: Literal["id", "created_at", "updated_at"] = "id"
    sort_order: Literal["ascending", "descending"] = "ascending"
    fields: tuple[str, ...] = ()
    output: Literal["simple", "full", "bulk", "mobile"] = "simple"
    limit: int = QUERY_LIMIT
    deleted: bool = False  # the recycle bin (deleted or merged away) instead of live prospects


@dataclass(frozen=True)
class ProspectPage:
    prospects: list[Prospect]
    total: int | None  # Pardot's total_results: every row the query matches, not the page


class PardotRepository(Protocol):
    """Pardot's prospects, as the matching plans need them."""

    @property
    def api_version(self) -> int: ...

    async def detect_version(self) -> int:
        """The API version the account speaks, asking Pardot once when not configured."""
        ...

    async def read_by_email(self, email: str) -> list[Prospect]:
        """Every prospect with this email (one at most in v3); empty when none."""
        ...

    async def read_by_id(self, prospect_id: int) -> Prospect | None: ...

    async def read_by_fid(self, fid: str) -> Prospect | None: ...

    async def create(self, email: str, fields: Fields) -> Prospect:
        """Create one prospect and return it with its new id (batches do not return ids)."""
        ...

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        """Apply up to BATCH_LIMIT writes; one entry per row, None where the row succeeded.

        An error that concerns the whole call (auth, limits, a dropped connection) is raised
        instead of being repeated in every row.
        """
        ...

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        """A page of prospects by ascending id, custom fields included."""
        ...

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        """One call of Pardot's prospect query: a page of rows and the total they belong to."""
        ...

    async def custom_fields(self) -> list[CustomField]:
        """Every custom field of the account (one call)."""
        ...

    async def delete_prospect(self, prospect_id: int) -> bool:
        """Move the prospect to Pardot's recycle bin (`do/delete/id/N`, one call); False when
        Pardot has no live prospect with that id (already deleted, merged, never there)."""
        ...


class PardotSlots(Protocol):
    """Pardot's limit of requests in flight per business unit (5; the sixth gets error 66).

    The limit is the account's, so every process that talks to the business unit shares it:
    an implementation counts across every process on the same store.
    """

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Held while one request is in flight; waits while every slot is taken."""
        ...


class TokenProvider(Protocol):
    """Salesforce access tokens for Pardot calls, cached until Pardot refuses one."""

    async def token(self) -> str: ...

    async def invalidate(self, stale: str | None = None) -> None:
        """Forget `stale` (or the current token); the next `token()` fetches a fresh one.

        Passing the token a caller saw refused lets many callers report the same 184 while
        only the first causes a refresh.
        """
        ...
