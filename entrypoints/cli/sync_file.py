"""`sync FILE`: a backfill, in this process, through the service's own domain and store.

Events go through the same SyncService, Pardot repository and store as the running service
(field times, links, create locks, the daily budget), not through the queue: re-running a
file is not de-duplicated away. The file is streamed (see event_files), a batch at a time.

Exit statuses: 0 every event delivered, unchanged or skipped; 1 any rejected or given up on;
3 Pardot's daily limit stopped it (a re-run of the same file resumes where it stopped);
2 a usage or setup error; 130 interrupted (Ctrl-C), saying how far it got.

`--dry-run` makes no Pardot call: each event's plan (domain/matching.py) is resolved against
what the store knows (links, field values and times, the prospect index when there is one),
and an event that only Pardot could resolve says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.errors import ConfigurationError, InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.matching import (
    MatchByLookup,
    MatchPerson,
    Reject,
    Skip,
    UpsertByEmail,
    UpsertByFid,
    UpsertById,
    Write,
    plan,
)
from domain.ports import DeliveryHistory, FieldStamp, HistoryEntry, ProspectStore, Settlement
from domain.prospect import FieldValue, stored_form
from domain.settings import DestinationSettings
from domain.settlement import RetryPolicy, settle
from domain.sync import Delivered, Outcome, Rejected, RetryLater, Skipped, SyncService
from entrypoints.cli.event_files import EventReader, Item
from entrypoints.cli.fields import ACCOUNT_FIELDS_NOTE
from entrypoints.cli.support import EXIT_USAGE, console, container
from entrypoints.container import Container, opened
from entrypoints.history import entry

BATCH = 200
TRIES = 3  # in-process tries of a retryable failure before the event is given up on
MAX_WAIT = 30.0
MAX_REASONS = 1000  # distinct reasons kept for the summary: memory stays bounded
EXIT_OK, EXIT_REJECTED, EXIT_DAILY_LIMIT, EXIT_INTERRUPTED = 0, 1, 3, 130
progress_console = Console(stderr=True)


@dataclass
class Tally:
    read: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    calls: int | None = None
    skipped_before: int = 0  # events a resumed run did not send again
    stopped: str = ""  # why it stopped early
    resume_at: datetime | None = None
    last: Item | None = None  # the last event handled

    def count(self, kind: str, reason: str = "") -> None:
        self.counts[kind] += 1
        if reason and kind in ("rejected", "given up"):
            key = reason if len(self.reasons) < MAX_REASONS or reason in self.reasons else "other"
            self.reasons[key if key.startswith(kind) else f"{kind}: {key}"] += 1


def _checkpoint_key(path: Path) -> str:
    """The same file (by where it is and how it starts) resumes; a new one does not."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    with path.open("rb") as head:
        digest.update(head.read(65536))
    return "sync_progress:" + digest.hexdigest()[:32]


@contextlib.contextmanager
def _source(name: str) -> Iterator[tuple[IO[bytes], int | None, str | None]]:
    """The stream, its size (for the progress bar) and its checkpoint key (files only)."""
    if name == "-":
        yield sys.stdin.buffer, None, None
        return
    path = Path(name)
    try:
        stream = path.open("rb")
    except OSError as error:
        raise click.UsageError(f"cannot read {name}: {error.strerror}") from None
    with stream:
        yield stream, os.fstat(stream.fileno()).st_size, _checkpoint_key(path)


def _arrived(value: Any, now: str) -> Any:
    """A backfilled event keeps the receivedAt Segment stored it with; else it arrives now."""
    if isinstance(value, dict) and not value.get("receivedAt"):
        return {**value, "receivedAt": now}
    return value


class Backfill:
    """Runs one file's events through the sync service and counts what became of them."""

    def __init__(self, built: Container, tally: Tally, checkpoint: str | None) -> None:
        self._container = built
        self._tally = tally
        self._checkpoint = checkpoint
        self._service: SyncService | None = None
        self._history: DeliveryHistory | None = None
        self._policy = RetryPolicy(max_attempts=TRIES)
        self._wait = built.config().retry_initial_seconds

    async def start(self) -> int:
        """Prepare; returns how many events an earlier run already did (0 when none)."""
        self._history = await self._container.history.async_()
        queue = await self._container.queue.async_()
        paused = await queue.paused_until()
        if paused is not None and paused > datetime.now(UTC):
            self._tally.stopped = "daily limit"
            self._tally.resume_at = paused
            return -1
        self._service = await self._container.sync_service.async_()
        await self._service.prepare()
        if self._checkpoint is None:
            return 0
        noted = await self._history.noted(self._checkpoint)
        return int(noted["done"]) if noted else 0

    async def run(self, batch: list[Item]) -> bool:
        """Deliver one batch; False when the daily limit stopped it."""
        assert self._service is not None and self._history is not None
        now = datetime.now(UTC)
        events: list[IdentifyEvent] = []
        items: list[Item] = []
        rows: list[HistoryEntry] = []
        for item in batch:
            if item.problem is not None:
                self._tally.count("rejected", f"line {item.line}: {item.problem}")
                continue
            try:
                events.append(parse_event(_arrived(item.value, now.isoformat())))
                items.append(item)
            except InvalidEvent as exc:
                reason = f"rejected: invalid event: {exc}"
                self._tally.count("rejected", reason)
                payload = item.value if isinstance(item.value, dict) else {}
                rows.append(entry(Settlement("rejected", reason), now, payload=payload,
                                  source="sync"))  # fmt: skip
        outcomes = await self._deliver(events)
        stopped_at: Item | None = None
        for item, event, outcome in zip(items, events, outcomes, strict=True):
            if isinstance(outcome, RetryLater) and outcome.resume_at is not None:
                stopped_at = stopped_at or item
                self._tally.resume_at = outcome.resume_at
                continue
            settlement = settle(outcome, TRIES, self._policy, now)
            if event.type == "identify":  # a track in an archive is nobody's history
                rows.append(entry(settlement, now, event=event, source="sync"))
            self._count(outcome)
        await self._history.record(rows)
        if stopped_at is not None:
            self._tally.stopped = "daily limit"
            await self._stop_for_the_day(stopped_at.number - 1)
            return False
        self._tally.last = batch[-1]
        return True

    def _count(self, outcome: Outcome) -> None:
        if isinstance(outcome, Delivered):
            self._tally.count("unchanged" if outcome.unchanged else "delivered")
        elif isinstance(outcome, Skipped):
            self._tally.count("skipped")
        elif isinstance(outcome, Rejected):
            self._tally.count("rejected", outcome.reason)
        else:
            self._tally.count("given up", outcome.reason)

    async def _deliver(self, events: list[IdentifyEvent]) -> list[Outcome]:
        """Sync, trying retryable failures again a few times; the daily limit ends the tries."""
        assert self._service is not None
        final: list[Outcome | None] = [None] * len(events)
        waiting = list(range(len(events)))
        for attempt in range(1, TRIES + 1):
            outcomes = await self._service.sync([events[i] for i in waiting])
            again: list[int] = []
            limited = False
            delays: list[float] = []
            for index, outcome in zip(waiting, outcomes, strict=True):
                final[index] = outcome
                if isinstance(outcome, RetryLater):
                    limited = limited or outcome.resume_at is not None
                    again.append(index)
                    delays.append(outcome.delay or 0.0)
            if limited or not again or attempt == TRIES:
                break
            backoff = self._policy.backoff_initial if self._wait is None else self._wait
            await asyncio.sleep(min(MAX_WAIT, max([*delays, backoff * 2 ** (attempt - 1)])))
            waiting = again
        return [o if o is not None else RetryLater("not tried") for o in final]

    async def _stop_for_the_day(self, done: int) -> None:
        assert self._history is not None
        if self._checkpoint is not None:
            await self._history.note(
                self._checkpoint, {"done": done, "at": datetime.now(UTC).isoformat()}
            )
        if self._tally.resume_at is not None:
            # The same account's budget: the service's worker waits too.
            queue = await self._container.queue.async_()
            await queue.pause_until(self._tally.resume_at)

    async def finish(self) -> None:
        if self._checkpoint is not None and self._history is not None and not self._tally.stopped:
            await self._history.note(self._checkpoint, None)


class DryRun:
    """What each event would do, from the plan and what the store knows: no Pardot call."""

    def __init__(
        self,
        settings: DestinationSettings,
        store: ProspectStore,
        *,
        destination_keys: tuple[str, ...],
        create_campaign_id: str | None,
        lookup_type: str = "Text",
        index: Any = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keys = destination_keys
        self._campaign = create_campaign_id
        self._lookup_type = lookup_type
        self._index = index

    async def describe(self, event: IdentifyEvent) -> tuple[str, str]:
        decision = plan(
            event, self._settings, destination_keys=self._keys, create_campaign_id=self._campaign
        )
        if isinstance(decision, Skip):
            return "skipped", decision.reason
        if isinstance(decision, Reject):
            return "rejected", decision.reason
        fields: dict[str, FieldValue] = dict(decision.fields)
        email = getattr(decision, "email", None)
        if email and self._settings.api_version == 4:
            fields.setdefault("email", email)
        key, how = await self._resolve(decision)
        names = ", ".join(sorted(fields)) or "no fields"
        if key == "-":
            return "rejected", how
        if key is None:
            return "unknown", f"{how}; would write {names}"
        if key == "":
            return "create", f"create a prospect ({how}) with {names}"
        stamps = await self._store.stamps(key)
        when = event.effective_time
        changed = sorted(n for n, v in fields.items() if _would_write(v, when, stamps.get(n)))
        if not changed:
            return "unchanged", f"prospect {key} ({how}): holds these values already"
        return "update", f"update prospect {key} ({how}): {', '.join(changed)}"

    async def _resolve(self, write: Write) -> tuple[str | None, str]:
        """The prospect key, "" for a new prospect, or None with what only Pardot knows."""
        if isinstance(write, UpsertById):
            return str(write.prospect_id), "named by integrations.Pardot.id"
        if isinstance(write, UpsertByEmail):
            key = f"email:{write.email.lower()}"
            if await self._store.stamps(key):
                return key, f"upsert by email {write.email}"
            known = await self._by_email(write.email)
            if known is not None:
                return (key if known else ""), f"upsert by email {write.email}"
            return None, (
                f"needs Pardot: upsert by email {write.email} creates or updates, and this "
                "service never wrote to that email"
            )
        if isinstance(write, UpsertByFid):
            identity = f"fid:{write.fid}"
            linked = (await self._store.links([identity])).get(identity)
            if linked:
                return linked, f"linked to fid {write.fid}"
            return None, f"needs Pardot: no prospect is linked to fid {write.fid} yet"
        if isinstance(write, MatchByLookup):
            value = stored_form(write.value, self._lookup_type)
            identity = f"lookup:{write.lookup_field}={value}"
            linked = (await self._store.links([identity])).get(identity)
            if linked:
                return linked, f"linked to {write.lookup_field}={write.value}; Pardot confirms it"
            return None, (
                f"needs Pardot: no prospect is linked to {write.lookup_field}={write.value}"
                + (f"; Pardot would be asked for prospects with email {write.email}"
                   if write.email else "")
            )  # fmt: skip
        assert isinstance(write, MatchPerson)
        person = (
            f"user:{write.user_id}" if write.user_id is not None
            else f"anonymous:{write.anonymous_id}" if write.anonymous_id is not None else None
        )  # fmt: skip
        if person is not None:
            linked = (await self._store.links([person])).get(person)
            if linked:
                return linked, f"linked to {person.split(':', 1)[0]} id"
        if write.email is None:
            return "-", write.missing_email  # the service would reject it just the same
        known = await self._by_email(write.email)
        if known is not None:
            if known:
                return known, f"the latest prospect with email {write.email}"
            return "", f"no prospect has email {write.email}"
        return None, f"needs Pardot: find the prospects with email {write.email}"

    async def _by_email(self, email: str) -> str | None:
        """From the prospect index: the latest prospect's key, "" for none (once the index is
        complete), None when only Pardot can tell."""
        if self._index is None:
            return None
        found = (await self._index.by_emails([email])).get(email.lower(), [])
        if not found:
            # Absence means something only once the index holds the whole account.
            return "" if (await self._index.state()).complete else None
        latest = max(found, key=lambda p: (p.updated, p.id))
        return str(latest.id)


def _would_write(value: FieldValue, when: datetime | None, stamp: FieldStamp | None) -> bool:
    if stamp is None:
        return True
    if value == stamp.value:
        return False
    return when is None or stamp.at is None or when >= stamp.at


async def _dry_run(built: Container, reader: EventReader, tally: Tally, progress: Any) -> None:
    config = built.config()
    version = config.fixed_api_version
    if version is None:
        raise click.UsageError(
            "set PARDOT_API_VERSION to 3 or 4 for a dry run (under `auto` only Pardot can tell)"
        )
    settings = config.destination(version)
    history = await built.history.async_()
    lookup_type = "Text"
    noted = await history.noted(ACCOUNT_FIELDS_NOTE)
    if noted and settings.lookup_field:
        types = {f["field_id"]: f["type"] for f in noted["fields"]}
        lookup_type = types.get(settings.lookup_field, "Text")
    dry = DryRun(
        settings,
        await built.prospect_store.async_(),
        destination_keys=config.destination_keys,
        create_campaign_id=config.create_campaign_id,
        lookup_type=lookup_type,
        index=await _maybe(built.prospect_index),
    )
    now = datetime.now(UTC).isoformat()
    for item in reader:
        tally.read += 1
        if item.problem is not None:
            kind, text = "rejected", f"line {item.line}: {item.problem}"
            message_id = "-"
        else:
            value = item.value
            message_id = str(value.get("messageId") or "-") if isinstance(value, dict) else "-"
            try:
                kind, text = await dry.describe(parse_event(_arrived(value, now)))
            except InvalidEvent as exc:
                kind, text = "rejected", f"rejected: invalid event: {exc}"
        tally.count(kind, text)
        tally.last = item
        click.echo(f"{item.number}\t{message_id}\t{kind}\t{text}")
        progress(reader)
    tally.calls = 0


async def _maybe(provider: Any) -> Any:
    value = provider()
    return await value if asyncio.iscoroutine(value) or asyncio.isfuture(value) else value


async def _run(
    built: Container, reader: EventReader, tally: Tally, checkpoint: str | None, progress: Any
) -> None:
    backfill = Backfill(built, tally, checkpoint)
    done = await backfill.start()
    if done < 0:
        return
    repository = await _maybe(built.repository)
    calls_before = getattr(repository, "calls", None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def interrupted() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second Ctrl-C: stop now
        stop.set()
        progress_console.print("stopping after this batch (Ctrl-C again to stop at once)")

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        batch: list[Item] = []
        for item in reader:
            tally.read += 1
            if item.number <= done:
                tally.skipped_before += 1
                tally.last = item
                continue
            batch.append(item)
            if len(batch) >= BATCH:
                if not await backfill.run(batch):
                    return
                batch = []
                progress(reader)
                if stop.is_set():
                    tally.stopped = "interrupted"
                    return
        if batch and not await backfill.run(batch):
            return
        progress(reader)
        await backfill.finish()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        after = getattr(repository, "calls", None)
        if calls_before is not None and after is not None:
            tally.calls = after - calls_before


def _summary(tally: Tally, *, dry_run: bool) -> Table:
    table = Table("outcome" if not dry_run else "would be", "events")
    order = (
        ("create", "update", "unchanged", "unknown", "skipped", "rejected")
        if dry_run
        else ("delivered", "unchanged", "skipped", "rejected", "given up")
    )
    for kind in order:
        table.add_row(kind, f"{tally.counts.get(kind, 0):,}")
    if tally.skipped_before:
        table.add_row("done by an earlier run", f"{tally.skipped_before:,}")
    table.add_row("events read", f"{tally.read:,}")
    table.add_row("Pardot calls used", "-" if tally.calls is None else f"{tally.calls:,}")
    return table


def _reasons(tally: Tally) -> Table | None:
    if not tally.reasons:
        return None
    table = Table("events", "not delivered, by reason")
    for reason, count in tally.reasons.most_common(15):
        table.add_row(f"{count:,}", reason)
    if len(tally.reasons) > 15:
        table.add_row("…", f"{len(tally.reasons) - 15} more reasons")
    return table


def _how_far(tally: Tally) -> str:
    last = tally.last
    if last is None:
        return "before the first event"
    return f"after event {last.number:,} (line {last.line:,})"


@click.command("sync")
@click.argument("source", metavar="FILE")
@click.option("--dry-run", is_flag=True, help="say what each event would do; no Pardot call")
def sync_command(source: str, dry_run: bool) -> None:
    """Backfill FILE (NDJSON, a JSON array, or - for stdin) into Pardot, in this process."""
    built = container()
    tally = Tally()
    code = EXIT_OK
    with _source(source) as (stream, size, checkpoint):
        reader = EventReader(stream)
        bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if size is None else TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[events]:,} events"),
            TimeElapsedColumn(),
            console=progress_console,
            transient=False,
        )
        with bar:
            task = bar.add_task("dry run" if dry_run else "sync", total=size, events=0)

            def progress(r: EventReader) -> None:
                bar.update(task, completed=r.bytes_read, events=tally.read)

            async def main() -> None:
                async with opened(built):
                    if dry_run:
                        await _dry_run(built, reader, tally, progress)
                    else:
                        await _run(built, reader, tally, checkpoint, progress)

            try:
                asyncio.run(main())
            except ConfigurationError as error:
                progress_console.print(f"pardot-destination: setup error: {error}")
                code = EXIT_USAGE
            except (KeyboardInterrupt, asyncio.CancelledError):
                tally.stopped = "interrupted"
    console.print(_summary(tally, dry_run=dry_run))
    reasons = _reasons(tally)
    if reasons is not None:
        console.print(reasons)
    if tally.stopped == "daily limit":
        when = tally.resume_at.isoformat(timespec="minutes") if tally.resume_at else "midnight"
        again = (
            "run the same command again then: it resumes where it stopped"
            if checkpoint is not None
            else "input from stdin cannot resume: pass the rest again then"
        )
        click.echo(
            f"stopped by Pardot's daily API limit {_how_far(tally)}; the limit resets at "
            f"{when}: {again}",
            err=True,
        )
        sys.exit(EXIT_DAILY_LIMIT)
    if tally.stopped == "interrupted":
        click.echo(f"interrupted {_how_far(tally)}; nothing after it was sent", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if code:
        click.echo(f"stopped {_how_far(tally)}", err=True)
        sys.exit(code)
    if tally.counts.get("rejected") or tally.counts.get("given up"):
        sys.exit(EXIT_REJECTED)
