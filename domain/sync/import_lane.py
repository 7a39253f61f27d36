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
user may not import) gets one warning and batches from then on. So does an import whose files
would overrun the account's files of the day (`domain.import_files`), until its midnight.

With a `ledger`, an import is recorded (its id, its rows' events and prospects as digests)
once created and before anything is uploaded, and finished once its outcome is known, so a
process that leases its events after a restart finds it and `resume`s it instead of writing
them again (domain/sync/recovery.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from domain.errors import (
    ConfigurationError,
    ImportUnavailable,
    PardotError,
    PermanentPardotError,
)
from domain.import_files import ImportFileBudget
from domain.ports import (
    BulkPardot,
    ImportLedger,
    ImportRowError,
    ImportStatus,
    ProspectWrite,
    RecordedImport,
    RecordedRow,
    ledger_digest,
)
from domain.sync.imports import MIN_IMPORT_ROWS, Plan, PlannedImport, plan_imports

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


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


@dataclass(frozen=True)
class Resumed:
    """A recorded import followed again after a restart: `abandoned` when it had never been
    submitted (its events go by batches), else the rows it refused by match digest."""

    id: int
    abandoned: bool = False
    refused: dict[str, str] = field(default_factory=dict)


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
    ledger: ImportLedger | None = None  # the imports in flight, kept in the store
    # The account's import files a day (DESTINATION_IMPORT_FILES_PER_DAY), shared by every
    # process on the store; None: not budgeted.
    file_budget: ImportFileBudget | None = None
    _files_short_on: str | None = None  # the account day the file budget ran out (warned)
    # Events of recorded imports this process worked: their rows leave the ledger once the
    # queue settled them (`settled`).
    _recorded: set[int] = field(default_factory=set)
    _resuming: dict[int, asyncio.Task[Resumed]] = field(default_factory=dict)

    def plan(self, rows: Sequence[ProspectWrite]) -> Plan:
        if self.unavailable:
            return Plan(by_batches=list(range(len(rows))))
        return plan_imports(rows, version=self.version, min_rows=self.min_rows)

    async def send(
        self,
        keys: Sequence[str],
        planned: PlannedImport,
        recorded: Sequence[RecordedRow] | None = None,
    ) -> Imported | None:
        """Run one planned import (`keys`: every planned row's match value by position);
        None when it never got submitted (its rows go back to batches). `recorded` (the
        planned rows' events and prospects) goes into the ledger before the upload."""
        if not await self._files_left(len(planned.files)):
            return None
        try:
            status = await self.pardot.create_import(planned.columns)
        except ImportUnavailable as refused:
            if not self.unavailable:
                log.warning("imports unavailable, writing by batches instead: %s", refused)
            self.unavailable = True
            await self._give_back(len(planned.files))
            return None
        except ConfigurationError:
            await self._give_back(len(planned.files))
            raise
        except PardotError as error:
            log.warning("no import made, writing by batches instead: %s", error)
            await self._give_back(len(planned.files))
            return None
        if self.ledger is not None and recorded is not None:
            fields = tuple(column.field for column in planned.columns)
            entry = RecordedImport(status.id, planned.match, fields, tuple(recorded))
            await self.ledger.record(entry)  # a store error: never submitted, it expires
            self._recorded.update(e for row in recorded for e in row.events)
        try:
            for data in planned.files:
                await self.pardot.add_import_batch(status.id, data)
            await self.pardot.submit_import(status.id)
        except ConfigurationError:
            raise
        except PardotError as error:
            if not await self._submitted_after_all(status.id, error):
                await self._finish(status.id)
                return None
        final = await self._follow(status, len(planned.rows))
        refusals: list[ImportRowError] = (
            await self.pardot.import_errors(final.id) if final.failed else []
        )
        self.done += 1
        self.rows_imported += len(planned.rows) - len(refusals)
        await self._finish(final.id)
        return Imported(final.id, self._match(planned, keys, refusals, final))

    async def _finish(self, import_id: int) -> None:
        if self.ledger is not None:
            await self.ledger.finish(import_id)

    async def resume(self, entry: RecordedImport) -> Resumed:
        """Follow a recorded import again, once per process however many batches hold its
        events: abandoned if never submitted, else read to Complete with its refusals."""
        future = self._resuming.get(entry.id)
        if future is None or (
            future.done() and (future.cancelled() or future.exception() is not None)
        ):
            # In a context of its own: it reads only, for every batch holding its events,
            # so it must not stop with the lease of the batch that happened to start it.
            loop = asyncio.get_running_loop()
            future = loop.create_task(self._resume(entry), context=contextvars.Context())
            self._resuming[entry.id] = future
        # Shielded: a batch cancelled at shutdown leaves the follow to the others waiting.
        return await asyncio.shield(future)

    def recovered(self, event_ids: Collection[int]) -> None:
        """These events' recorded rows leave the ledger once the queue settled them."""
        self._recorded.update(event_ids)

    async def settled(self, event_ids: Collection[int]) -> None:
        """The queue settled these events: rows of finished imports holding them go."""
        mine = self._recorded.intersection(event_ids)
        if self.ledger is None or not mine:
            return
        await self.ledger.forget(sorted(mine))
        self._recorded -= mine

    async def _resume(self, entry: RecordedImport) -> Resumed:
        try:
            status = await self._patiently(lambda: self.pardot.read_import(entry.id))
        except PermanentPardotError as error:
            # Pardot no longer knows it (long expired): it writes nothing any more.
            log.warning("recorded import %s unknown to Pardot, abandoned: %s", entry.id, error)
            await self._finish(entry.id)
            return Resumed(entry.id, abandoned=True)
        if status.state == "Open":
            # Created, never submitted: Pardot lets it expire. Never submitted after a
            # restart, since its rows may be written by batches meanwhile.
            log.warning("import %s was never submitted: abandoned, batches instead", entry.id)
            await self._finish(entry.id)
            return Resumed(entry.id, abandoned=True)
        log.info("following an import found again after a restart", extra={"import_id": entry.id})
        if status.state != "Complete":
            status = await self._follow(status, len(entry.rows))
        final = status
        refusals = (
            await self._patiently(lambda: self.pardot.import_errors(final.id))
            if final.failed
            else []
        )
        refused = {
            match_digest(entry.match, r.row.get(entry.match, "")): (
                r.reason or "refused by the import"
            )
            for r in refusals
        }
        self.done += 1  # its rows count as `recovery` settles them
        await self._finish(entry.id)
        return Resumed(entry.id, refused=refused)

    async def _submitted_after_all(self, import_id: int, error: PardotError) -> bool:
        """Whether an import whose upload or submit failed runs in Pardot all the same (the
        submit's answer lost after Pardot took it): then it is followed, since its rows
        written by batches meanwhile could be overwritten by it after a newer event. Read
        patiently: until Pardot answers, no one can tell. Open or unknown: abandoned (Pardot
        lets it expire), its rows go by batches."""
        try:
            status = await self._patiently(lambda: self.pardot.read_import(import_id))
        except PermanentPardotError:
            status = None
        if status is None or status.state == "Open" or status.expired:
            # Not submitted: Pardot lets an Open import expire, and the rows go by batches.
            log.warning("import %s abandoned before it was submitted: %s", import_id, error)
            return False
        log.warning(
            "import %s: its submit failed (%s) but Pardot runs it: followed to its end",
            import_id, error,
        )  # fmt: skip
        return True

    async def _patiently(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read about a recorded import, tried again (backing off) while Pardot fails it
        for now: the events holding it cannot be decided without the answer."""
        waits = self.polling.waits()
        while True:
            try:
                return await read()
            except (ConfigurationError, PermanentPardotError):
                raise
            except PardotError as error:
                log.warning("a recorded import cannot be read now: %s", error)
                await self.sleep(next(waits))

    async def _files_left(self, files: int) -> bool:
        """Whether the day's import files (`file_budget`) take this import's: else its rows
        go by batches, with one warning a day."""
        if self.file_budget is None or await self.file_budget.take(files):
            return True
        day = self.file_budget.today()
        if self._files_short_on != day:
            self._files_short_on = day
            log.warning(
                "the account's %d import files of the day are spent: writing by batches "
                "until its midnight", self.file_budget.limit,
            )  # fmt: skip
        return False

    async def _give_back(self, files: int) -> None:
        if self.file_budget is not None:
            await self.file_budget.give_back(files)

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


def match_digest(match: str, value: str) -> str:
    """How the ledger names a row's match value (refusals name rows by it)."""
    return ledger_digest(_normal(match, value))


def _normal(match: str, value: str) -> str:
    return value.strip().lower() if match == "email" else value.strip()
