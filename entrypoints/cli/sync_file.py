"""`sync FILE`: a backfill, in this process, through the service's own domain and store.

Events go through the same SyncService, Pardot repository and store as the running service
(field times, links, create locks, the daily budget), not through the queue: re-running a
file is not de-duplicated away. The file is streamed (see event_files), a batch at a time.

Exit statuses: 0 every event delivered, unchanged or skipped; 1 any rejected or given up on;
3 Pardot's daily limit stopped it (a re-run of the same file resumes where it stopped);
2 a usage or setup error; 130 interrupted (Ctrl-C), saying how far it got.

`--dry-run` makes no Pardot call: the same sync service decides, over a Pardot that answers
from the prospect index as last refreshed and a store that keeps its writes in memory
(entrypoints/operator/dry_run.py); an event that only Pardot could resolve says so. This
module only reads the file and renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.errors import ConfigurationError
from entrypoints.cli.event_files import EventReader, Item
from entrypoints.cli.support import EXIT_USAGE, console, container
from entrypoints.container import Container, opened
from entrypoints.operator.backfill import Backfill, BackfillSources, Tally
from entrypoints.operator.dry_run import AsOf, DryRun

BATCH = 200  # events per call of the sync service, in a real run and a dry run alike
EXIT_OK, EXIT_REJECTED, EXIT_DAILY_LIMIT, EXIT_INTERRUPTED = 0, 1, 3, 130
progress_console = Console(stderr=True)


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


def _as_of(as_of: AsOf) -> str:
    if as_of.indexed:
        return (
            f"dry run as of the prospect index's last refresh ({as_of.prospects:,} prospects, "
            f"Pardot's changes up to {as_of.fresh_to or '-'} account time): changes made in "
            "Pardot since then are not seen"
        )
    return (
        "dry run without a complete prospect index: decided from what this service wrote; "
        "what only Pardot can tell is unknown (`pardot-destination index rebuild` fills it)"
    )


async def _dry_run(built: Container, reader: EventReader, tally: Tally, progress: Any) -> None:
    if built.config().fixed_api_version is None:
        raise click.UsageError(
            "set PARDOT_API_VERSION to 3 or 4 for a dry run (under `auto` only Pardot can tell)"
        )
    dry: DryRun = await built.dry_run.async_()
    click.echo(_as_of(await dry.start()))

    async def show(batch: list[Item]) -> None:
        for line in await dry.lines(batch):
            tally.count(line.kind, line.text)
            click.echo(f"{line.number}\t{line.message_id}\t{line.kind}\t{line.text}")
        tally.last = batch[-1]
        progress(reader)

    batch: list[Item] = []
    for item in reader:
        tally.read += 1
        batch.append(item)
        if len(batch) >= BATCH:
            await show(batch)
            batch = []
    if batch:
        await show(batch)
    tally.calls = 0


async def _maybe(provider: Any) -> Any:
    value = provider()
    return await value if asyncio.iscoroutine(value) or asyncio.isfuture(value) else value


async def _run(
    built: Container, reader: EventReader, tally: Tally, checkpoint: str | None, progress: Any
) -> None:
    sources = BackfillSources(
        history=await built.history.async_(),
        queue=await built.queue.async_(),
        service=built.sync_service.async_,
        retry_initial_seconds=built.config().retry_initial_seconds,
    )
    backfill = Backfill(sources, tally, checkpoint)
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
    # Its Pardot slots' busy time goes to the store, as a deliverer's does, for `status`.
    recorder = await built.slot_use_recorder.async_()
    async with recorder.running():
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
