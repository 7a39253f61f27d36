"""The dry run of `sync FILE`: what each event would do, decided by the real sync service.

In: numbered events (decoded JSON values, or why a line could not be read), a batch at a time,
and a SyncService the container built over a Pardot that answers from the prospect index and
over a store, index and budget that keep their writes in memory. Out: plain data, one line per
event (number, messageId, kind, what) and, first, as of when the index decides.

No matching rule lives here: every decision is the service's, and this module only names its
outcomes. A delivery is `create` when the service created the prospect, `update` when the
write changes a field Pardot holds otherwise, `unchanged` when it changes none; a "try later"
is `unknown` (the Pardot the service ran over could not answer without Pardot).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from domain.errors import InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.matching import Reject, Skip, plan
from domain.ports import ProspectIndex
from domain.sync import UNCHANGED, Delivered, Outcome, Rejected, RetryLater, Skipped, SyncService
from entrypoints.operator.backfill import Numbered, arrived

KINDS = ("create", "update", "unchanged", "unknown", "skipped", "rejected")
# "updated prospect 1234: linked to user id": the service's reason names how it found it.
_FOUND = re.compile(r"^(?:updated|created) prospect \S+: (.*)$", re.DOTALL)
_UNCHANGED_WHY = {UNCHANGED: "holds these values already"}


class BatchWrites(Protocol):
    """What one sync call asked the dry run's Pardot to write, by prospect key."""

    @property
    def created(self) -> Collection[str]: ...

    @property
    def changed(self) -> Mapping[str, Collection[str]]: ...  # fields whose value changes


class WriteLedger(Protocol):
    """The dry run's Pardot, as this use case reads it besides the port."""

    def take_batch(self) -> BatchWrites: ...

    def new_prospect(self, key: str) -> int | None: ...


@dataclass(frozen=True)
class AsOf:
    """What the dry run decides from: a complete index, fresh to a Pardot time, or not."""

    indexed: bool
    fresh_to: str | None  # the latest change in Pardot the index saw (account time)
    prospects: int


@dataclass(frozen=True)
class DryRunLine:
    number: int
    message_id: str
    kind: str  # one of KINDS
    text: str


class DryRun:
    def __init__(
        self,
        service: SyncService,
        ledger: WriteLedger,
        index: ProspectIndex,
        *,
        destination_keys: Sequence[str],
    ) -> None:
        self._service = service
        self._ledger = ledger
        self._index = index
        self._complete = False  # whether decisions come from a complete index, once started
        self._keys = tuple(destination_keys)

    async def start(self) -> AsOf:
        """As of when the run decides; then the setup is checked as the real run checks it."""
        state = await self._index.state()
        as_of = AsOf(state.complete, state.high_water, await self._index.count())
        self._complete = state.complete
        await self._service.prepare()
        return as_of

    async def lines(
        self, batch: Sequence[Numbered], *, now: datetime | None = None
    ) -> list[DryRunLine]:
        """One line per event of the batch, in order; the batch is one call of the service,
        as the real run's batch is."""
        received = (now or datetime.now(UTC)).isoformat()
        lines: list[DryRunLine | None] = [None] * len(batch)
        events: list[IdentifyEvent] = []
        places: list[int] = []
        for place, item in enumerate(batch):
            if item.problem is not None:
                text = f"line {item.line}: {item.problem}"
                lines[place] = DryRunLine(item.number, "-", "rejected", text)
                continue
            try:
                events.append(parse_event(arrived(item.value, received)))
                places.append(place)
            except InvalidEvent as exc:
                text = f"rejected: invalid event: {exc}"
                lines[place] = DryRunLine(item.number, _message_id(item.value), "rejected", text)
        outcomes = await self._service.sync(events) if events else []
        writes = self._ledger.take_batch()
        for place, event, outcome in zip(places, events, outcomes, strict=True):
            item = batch[place]
            kind, text = self._describe(event, outcome, writes)
            lines[place] = DryRunLine(item.number, _message_id(item.value), kind, text)
        return [line for line in lines if line is not None]

    def _describe(
        self, event: IdentifyEvent, outcome: Outcome, writes: BatchWrites
    ) -> tuple[str, str]:
        if isinstance(outcome, Skipped):
            return "skipped", outcome.reason
        if isinstance(outcome, Rejected):
            return "rejected", outcome.reason
        if isinstance(outcome, RetryLater):
            why = outcome.reason.removeprefix("retry: ")
            return "unknown", f"{why}; would write {self._names(event)}"
        return self._delivered(outcome, writes)

    def _delivered(self, outcome: Delivered, writes: BatchWrites) -> tuple[str, str]:
        key = outcome.prospect or "-"
        number = self._ledger.new_prospect(key)  # a prospect the dry run would create
        shown = key if number is None else f"new #{number}"
        found = _FOUND.match(outcome.reason)
        how = found.group(1) if found else outcome.reason
        names = sorted(outcome.fields)
        created = outcome.reason.startswith("created prospect ") or (
            key in writes.created and key not in writes.changed
        )
        if names and created:
            return "create", f"create a prospect ({how}) with {', '.join(names)}"
        changing = writes.changed.get(key)
        changed = [n for n in names if changing is None or n in changing]
        if changed:
            return "update", f"update prospect {shown} ({how}): {', '.join(changed)}"
        if names and outcome.reason != UNCHANGED and self._complete:
            # Written though the index says Pardot holds them: a stale index rides them in a
            # batch write rather than pay for a refresh (or change detection is off).
            return "update", (
                f"update prospect {shown} ({how}): {', '.join(names)} (rewritten; the index "
                "says Pardot holds them)"
            )
        if found or not _explains(outcome.reason):
            return "unchanged", f"prospect {shown} ({how}): holds these values already"
        return "unchanged", f"prospect {shown}: {_UNCHANGED_WHY.get(how, how)}"

    def _names(self, event: IdentifyEvent) -> str:
        """The fields an event whose prospect only Pardot knows would write."""
        settings = self._service.settings
        decision = plan(event, settings, destination_keys=self._keys)
        if isinstance(decision, Skip | Reject):
            return "no fields"
        names = set(decision.fields)
        if getattr(decision, "email", None) and settings.api_version == 4:
            names.add("email")
        return ", ".join(sorted(names)) or "no fields"


def _explains(reason: str) -> bool:
    """Whether a delivery's reason says why nothing was written rather than how the prospect
    was found (a v3 upsert's reason is how: "upsert by email …")."""
    return (
        reason in _UNCHANGED_WHY or reason.startswith("up to date") or reason == "nothing to write"
    )


def _message_id(value: Any) -> str:
    return str(value.get("messageId") or "-") if isinstance(value, dict) else "-"
