"""What the stages of one `sync` call share, and what resolving a group yields.

In: the service's ports and state, fixed for the call once the setup is checked. Out:
`Context` (the ports, the index when decisions come from it and whether it is fresh for the
call's events, the lookup field's form) passed to every stage that talks to a port; `Target`,
`NeedsCreate` or `Stale`, the answers of `resolve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from domain.index import IndexKeeper
from domain.ports import PardotRepository, ProspectStore
from domain.prospect import CustomField, Prospect, stored_form
from domain.sync.grouping import Group
from domain.sync.import_lane import ImportLane


@dataclass(frozen=True)
class LookupValues:
    """Lookup values in the form Pardot stores them for the field's type."""

    field: str | None  # the setting's lookup field, if the account matches on one
    definition: CustomField | None  # the account's definition of it, as `prepare` found it

    def stored(self, value: str) -> str:
        kind = self.definition.type if self.definition is not None else "Text"
        return stored_form(value, kind)

    def text_of(self, prospect: Prospect) -> str | None:
        text = prospect.field_text(self.field) if self.field is not None else None
        return None if text is None else self.stored(text)

    def holds(self, prospect: Prospect, value: str) -> bool:
        return self.text_of(prospect) == value


@dataclass(frozen=True)
class Context:
    """How one call of `sync` decides: from the index, or by reading Pardot one by one."""

    repository: PardotRepository
    store: ProspectStore
    lookup: LookupValues
    # Called with the message when a created prospect did not keep its lookup value.
    note_broken: Callable[[str], None]
    index: IndexKeeper | None = None
    locked: bool = False  # phase two: the create locks of the emails are held
    # The latest arrival among the call's events, on the store's clock (None: unknown, so
    # only a refresh begun now will do). Decisions that depend on what Pardot holds come
    # from the index only while it is `fresh`: its watermark began after that arrival.
    arrived: datetime | None = None
    fresh: bool = False
    # Large sets of updates go by Pardot imports (the bulk lane); None: batches only.
    imports: ImportLane | None = None
    # The queue id of each of the call's events by position, for the imports' ledger.
    event_ids: Sequence[int] | None = None
    # Events (by position) whose row an import found again after a restart refused, with
    # the import and Pardot's reason: they go by batch calls.
    refused: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where a group's events go: a prospect key, and how it was found."""

    key: str
    reason: str
    prospect_id: int | None = None
    created: bool = False
    # Links that led here; dropped if Pardot says the prospect does not exist.
    via_links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stale:
    """A decision that depends on what Pardot holds, asked of an index older than the events:
    refresh, then resolve again."""

    why: str


@dataclass(frozen=True)
class NeedsCreate:
    """The index says no prospect fits: create one, once the index is fresh and locked."""

    group: Group
    email: str
    why: str
    expect: str | None = None


def updated(prospect_id: int, why: str, *, via_links: tuple[str, ...] = ()) -> Target:
    """Where events go when they update an existing prospect, and the reason they say so."""
    return Target(
        str(prospect_id), f"updated prospect {prospect_id}: {why}", prospect_id, via_links=via_links
    )
