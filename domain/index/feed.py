"""The one way pages of Pardot's prospect query reach the index: budgeted, counted, stored.

In: a PardotRepository, the ProspectIndex, the lookup field and the daily budget. Out:
`IndexFeed`, whose `query` asks Pardot one page (after `spend` checked the budget, or
BudgetShort) and whose `put` stores prospects with their lookup value as Pardot stores it.
The scan, the refresh and the keeper all pull through one feed, so `calls` counts them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

from domain.budget import DailyBudget, Priority
from domain.ports import PardotRepository, ProspectIndex, ProspectPage, ProspectQuery
from domain.prospect import STANDARD_FIELDS, CustomField, Prospect, stored_form

# What a prospect row must carry besides the fields we write: keys and times.
KEY_FIELDS = ("email", "created_at", "updated_at", "salesforce_fid", "crm_lead_fid",
              "crm_contact_fid")  # fmt: skip

T = TypeVar("T")


class BudgetShort(Exception):
    """The daily budget does not allow this call now (its priority's share is spent)."""

    def __init__(self, priority: Priority, seconds_to_reset: float) -> None:
        super().__init__(f"the daily Pardot API budget left for {priority} calls is spent")
        self.priority = priority
        self.seconds_to_reset = seconds_to_reset


class IndexFeed:
    """Pardot's prospect query into a ProspectIndex, call by call."""

    def __init__(
        self,
        repository: PardotRepository,
        index: ProspectIndex,
        *,
        lookup_field: str | None,
        budget: DailyBudget | None,
    ) -> None:
        self._repository = repository
        self.index = index
        self._lookup = lookup_field
        self._budget = budget
        self.fields: tuple[str, ...] | None = None  # what every page asks for, once known
        self._types: dict[str, str] = {}
        self._reserved = 0  # queries allowed by the budget and not yet answered
        self.calls = 0  # Pardot calls made through this feed

    def lookup_value(self, prospect: Prospect) -> str | None:
        """The prospect's lookup value as Pardot stores it, as the index keeps it."""
        if self._lookup is None:
            return None
        text = prospect.field_text(self._lookup)
        if text is None:
            return None
        return stored_form(text, self._types.get(self._lookup, "Text"))

    @property
    def lookup_column(self) -> tuple[str | None, str | None]:
        """The lookup field and its type the rows' lookup values are computed for now (the
        type is known once `fields_to_pull` asked the account)."""
        if self._lookup is None:
            return (None, None)
        return (self._lookup, self._types.get(self._lookup, "Text"))

    def field_type(self, name: str) -> str:
        """A custom field's type (Text, Number, Date...), as the account lists it."""
        return self._types.get(name, "Text")

    async def put(self, prospects: Sequence[Prospect]) -> None:
        if prospects:
            await self.index.put([(p, self.lookup_value(p)) for p in prospects])

    async def fields_to_pull(self) -> tuple[str, ...]:
        """Keys and times, every writable standard field and every custom field."""
        if self.fields is None:
            await self.spend("read")
            try:
                custom: list[CustomField] = await self._counted(self._repository.custom_fields())
            finally:
                self._reserved = max(0, self._reserved - 1)
            self.note_custom_fields(custom)
        assert self.fields is not None
        return self.fields

    def note_custom_fields(self, custom: Sequence[CustomField]) -> None:
        """The account's custom fields as this process just read them for another purpose
        (the lookup field's check): the feed needs no call of its own then."""
        if self.fields is not None:
            return
        self._types = {f.field_id: f.type for f in custom}
        standard = sorted(STANDARD_FIELDS - {"email", "password"})
        self.fields = (*KEY_FIELDS, *standard, *sorted(self._types))

    async def query(self, query: ProspectQuery) -> ProspectPage:
        """One page; `spend` comes first, as for every call."""
        try:
            return await self._counted(self._repository.query_page(query))
        finally:
            self._reserved = max(0, self._reserved - 1)

    async def call(self, call: Awaitable[T]) -> T:
        """Any other call for the index (an export's create, status read or download);
        `spend` comes first, as for every call."""
        try:
            return await self._counted(call)
        finally:
            self._reserved = max(0, self._reserved - 1)

    async def _counted(self, call: Awaitable[T]) -> T:
        self.calls += 1
        return await call

    async def spend(self, priority: Priority) -> None:
        """Check the budget before a query; calls checked but not yet sent count as spent,
        so parallel ranges cannot together overrun a priority's share."""
        if self._budget is not None:
            if not await self._budget.allows(priority, 1 + self._reserved):
                raise BudgetShort(priority, self._budget.seconds_to_reset())
            self._reserved += 1
