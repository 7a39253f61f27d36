"""The import lane: pending rows in, the rows an import wrote (or refused) settled, the rest out.

In: the rows the write stage would send by batches of 50, with the prospects' locks held.
Out: `ImportLane.write` runs every import the plan (`imports.plan_imports`) asks for: create,
upload its files, submit, read its state backing off from 5 s to 60 s, read the rows it
refused; then settles them as a batch call's answer is settled (`write.applied`), and returns
the rows left for batch calls. The locks stay held and the events' leases renewed (the
worker's heartbeat) until an import has finished, so no later event for one of its prospects
is written before it, nor overtaken by an older value still inside it.

Pardot offers no way to cancel a submitted import: a submitted one is followed to its end,
however long (a warning past `timeout`). One not yet submitted is abandoned on a failure and
its rows go back to batches. An account that refuses imports (the feature is off, or the API
user may not import) gets one warning and batches from then on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from domain.errors import ConfigurationError, ImportUnavailable, PardotError
from domain.ports import BulkPardot, ImportRowError, ImportStatus, ProspectWrite
from domain.sync.imports import MIN_IMPORT_ROWS, Plan, PlannedImport, plan_imports

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ImportPolling:
    """How an import's state is read: first after `first` seconds, then doubling to `most`."""

    first: float = 5.0
    most: float = 60.0

    def waits(self) -> Iterator[float]:
        wait = self.first
        while True:
            yield wait
            wait = min(wait * 2, self.most)


@dataclass
class ImportInProgress:
    """An import this process follows, for `status`, `/status` and `/metrics`."""

    id: int
    rows: int
    state: str
    started: float  # time.monotonic()


@dataclass(frozen=True)
class Imported:
    """A finished import: its id, and per row position Pardot's refusal (None: written)."""

    id: int
    refusals: dict[int, str | None]


@dataclass
class ImportLane:
    pardot: BulkPardot
    version: int
    min_rows: int = MIN_IMPORT_ROWS
    polling: ImportPolling = field(default_factory=ImportPolling)
    timeout: float = 1800.0  # DESTINATION_IMPORT_TIMEOUT_SECONDS: warn, never abandon
    sleep: Sleep = asyncio.sleep
    unavailable: bool = False  # the account refused an import: batches from then on
    running: dict[int, ImportInProgress] = field(default_factory=dict)
    done: int = 0  # imports finished, for /metrics
    rows_imported: int = 0

    def plan(self, rows: Sequence[ProspectWrite]) -> Plan:
        if self.unavailable:
            return Plan(by_batches=list(range(len(rows))))
        return plan_imports(rows, version=self.version, min_rows=self.min_rows)

    async def send(self, keys: Sequence[str], planned: PlannedImport) -> Imported | None:
        """Run one planned import (`keys`: every planned row's match value by position);
        None when it never got submitted (its rows go back to batches)."""
        try:
            status = await self.pardot.create_import(planned.columns)
        except ImportUnavailable as refused:
            if not self.unavailable:
                log.warning("imports unavailable, writing by batches instead: %s", refused)
            self.unavailable = True
            return None
        except ConfigurationError:
            raise
        except PardotError as error:
            log.warning("no import made, writing by batches instead: %s", error)
            return None
        try:
            for data in planned.files:
                await self.pardot.add_import_batch(status.id, data)
            await self.pardot.submit_import(status.id)
        except ConfigurationError:
            raise
        except PardotError as error:
            # Not submitted: Pardot lets an Open import expire, and the rows go by batches.
            log.warning("import %s abandoned before it was submitted: %s", status.id, error)
            return None
        final = await self._follow(status, len(planned.rows))
        refusals: list[ImportRowError] = (
            await self.pardot.import_errors(final.id) if final.failed else []
        )
        self.done += 1
        self.rows_imported += len(planned.rows) - len(refusals)
        return Imported(final.id, self._match(planned, keys, refusals, final))

    async def _follow(self, status: ImportStatus, rows: int) -> ImportStatus:
        begun = time.monotonic()
        progress = ImportInProgress(status.id, rows, "Waiting", begun)
        self.running[status.id] = progress
        warned = False
        try:
            for wait in self.polling.waits():
                await self.sleep(wait)
                try:
                    status = await self.pardot.read_import(status.id)
                except ConfigurationError:
                    raise
                except PardotError as error:
                    # Submitted: it runs on in Pardot whatever we do; read again later.
                    log.warning("import %s: state unreadable now: %s", status.id, error)
                    continue
                progress.state = status.state
                if status.state == "Complete":
                    log.info("import finished", extra={"import_id": status.id})
                    return status
                if not warned and time.monotonic() - begun > self.timeout:
                    warned = True
                    log.warning("import %s has run longer than %.0f s", status.id, self.timeout)
        finally:
            del self.running[status.id]
        raise AssertionError("unreachable: the waits never end")

    def _match(
        self,
        planned: PlannedImport,
        keys: Sequence[str],
        refusals: list[ImportRowError],
        final: ImportStatus,
    ) -> dict[int, str | None]:
        """Each carried row's refusal reason, found by its match value."""
        by_key = {_normal(planned.match, keys[p]): p for p in planned.rows}
        result: dict[int, str | None] = dict.fromkeys(planned.rows)
        unmatched = 0
        for refusal in refusals:
            position = by_key.get(_normal(planned.match, refusal.row.get(planned.match, "")))
            if position is None:
                unmatched += 1
            else:
                result[position] = refusal.reason or "refused by the import"
        if unmatched or final.failed > len(refusals):
            log.warning(
                "import %s refused %s rows it did not name; they count as written",
                final.id,
                max(unmatched, final.failed - len(refusals)),
            )
        return result


def _normal(match: str, value: str) -> str:
    return value.strip().lower() if match == "email" else value.strip()
