"""`dead-letters [list] | show ID | replay [ID…|--all] | purge --older-than DAYS`.

Each dead letter with its event, Pardot's code and message, how often it was tried and when
last. A replayed event keeps its arrival, so its event time is what it was: a value newer
events have written since is reported unchanged, not written back.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from entrypoints.cli.support import EXIT_USAGE, console, run_with_container

_PARDOT_ERROR = re.compile(r"Pardot error (\d+): (.*)$", re.DOTALL)


def pardot_error(reason: str | None) -> tuple[str, str]:
    """Pardot's code and message in a settlement's reason, else ("-", the reason)."""
    match = _PARDOT_ERROR.search(reason or "")
    if match is None:
        return "-", reason or ""
    return match.group(1), match.group(2)


def describe_event(payload: dict[str, Any]) -> str:
    """One line saying what the event was, without dumping its traits."""
    traits = payload.get("traits")
    email = traits.get("email") if isinstance(traits, dict) else None
    who = payload.get("userId") or payload.get("anonymousId") or "-"
    return " ".join(str(p) for p in (payload.get("type", "?"), who, email or "") if p).strip()


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


@click.group("dead-letters", invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, help="how many to list")
@click.pass_context
def dead_letters(ctx: click.Context, limit: int) -> None:
    """The events given up on: list (the default), show, replay, purge."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_dead, limit=limit)


@dead_letters.command("list")
@click.option("--limit", default=20, show_default=True, help="how many to list")
def list_dead(limit: int) -> None:
    """The newest dead letters first, with Pardot's code and message."""

    async def run(container: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await (await container.queue.async_()).recent("dead", limit)
        return rows

    rows = run_with_container(run)
    table = Table("id", "messageId", "event", "tries", "last try", "code", "message")
    for row in rows:
        code, message = pardot_error(row["reason"])
        table.add_row(
            str(row["id"]),
            str(row["messageId"] or "-"),
            describe_event(row["payload"]),
            str(row["attempts"]),
            _when(row["settled_at"]),
            code,
            message,
        )
    console.print(table)
    if not rows:
        click.echo("no dead letters")


@dead_letters.command("show")
@click.argument("event_id", type=int)
def show_dead(event_id: int) -> None:
    """One dead letter in full: the event as received, and why it was given up on."""

    async def run(container: Any) -> dict[str, Any] | None:
        row: dict[str, Any] | None = await (await container.queue.async_()).dead_letter(event_id)
        return row

    row = run_with_container(run)
    if row is None:
        click.echo(f"no dead letter has id {event_id}", err=True)
        sys.exit(1)
    code, message = pardot_error(row["reason"])
    click.echo(f"id:           {row['id']}")
    click.echo(f"messageId:    {row['messageId'] or '-'}")
    click.echo(f"received:     {_when(row['received_at'])}")
    click.echo(f"tries:        {row['attempts']}")
    click.echo(f"last try:     {_when(row['settled_at'])}")
    click.echo(f"Pardot code:  {code}")
    click.echo(f"message:      {message}")
    click.echo(f"reason:       {row['reason']}")
    click.echo("event:")
    click.echo(json.dumps(row["payload"], indent=2, ensure_ascii=False))


@dead_letters.command("replay")
@click.argument("event_ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="replay every dead letter")
def replay_dead(event_ids: tuple[int, ...], replay_all: bool) -> None:
    """Send dead letters round again, after fixing what killed them (their time is kept)."""
    if bool(event_ids) == replay_all:
        click.echo("name dead letters by id, or pass --all (not both)", err=True)
        sys.exit(EXIT_USAGE)
    replay(list(event_ids), replay_all=replay_all)


def replay(event_ids: list[int], *, replay_all: bool) -> None:
    async def run(container: Any) -> tuple[int, list[int]]:
        queue = await container.queue.async_()
        if replay_all:
            return await queue.requeue_dead(), []
        done = await queue.replay(event_ids)
        return len(done), done

    count, done = run_with_container(run)
    click.echo(f"{count} event(s) requeued" + (": " + ", ".join(map(str, done)) if done else ""))
    missing = sorted(set(event_ids) - set(done))
    if missing:
        click.echo("not dead letters (no such id, or not dead): " + ", ".join(map(str, missing)))
        sys.exit(1)


@dead_letters.command("purge")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    required=True,
    help="forget dead letters last tried more than this many days ago",
)
def purge_dead(days: float) -> None:
    """Forget old dead letters for good (their messageIds may then be accepted again)."""

    async def run(container: Any) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=days)
        return int(await (await container.queue.async_()).purge_dead(cutoff))

    count = run_with_container(run)
    click.echo(f"{count} dead letter(s) last tried over {days:g} day(s) ago forgotten")


@click.command("requeue-dead")
def requeue_dead() -> None:
    """Send every dead-lettered event round again: `dead-letters replay --all`."""
    replay([], replay_all=True)
