"""The figures an operator looks at: `status`, `status --json`, `/status` and `/status.json`.

One builder for all of them, so the command and the page never disagree. Everything comes
from the store the service shares (queue, delivery history), plus what only the running
service knows (readiness, its token's state) or what another part keeps (the daily API
budget and the prospect index, issue 11: optional sources until they exist).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import click
from rich.table import Table

from domain.ports import DeliveryHistory, EventQueue
from entrypoints.cli.fields import FRESH_ENOUGH, RepositoryProvider, check
from entrypoints.readiness import Readiness

CHART_MINUTES = 60
RATE_MINUTES = 10  # "deliveries per minute" is the mean over this many recent minutes
LATEST_DEAD = 10
# Outcomes as the chart groups them.
SERIES = {
    "delivered": ("delivered", "unchanged"),
    "rejected": ("rejected", "dead"),
    "retries": ("retry",),
}


class BudgetUsage(Protocol):
    used: int
    limit: int


class Budget(Protocol):
    """The daily API budget (issue 11's DailyBudget has this shape)."""

    async def usage(self) -> BudgetUsage: ...

    def seconds_to_reset(self) -> float: ...


class IndexState(Protocol):
    complete: bool
    high_water: str | None


class Index(Protocol):
    """The prospect index (issue 11's ProspectIndex has this shape)."""

    async def state(self) -> IndexState: ...

    async def count(self) -> int: ...


@dataclass
class StatusSources:
    queue: EventQueue
    history: DeliveryHistory
    readiness: Readiness | None = None  # only the running service knows
    token_state: Callable[[], Awaitable[dict[str, Any]]] | None = None
    budget: Budget | None = None
    index: Index | None = None
    # Asked for the account's fields when the stored list is too old; None: never ask.
    repository: RepositoryProvider | None = None
    fields_max_age: timedelta = FRESH_ENOUGH
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


async def build_report(sources: StatusSources) -> dict[str, Any]:
    now = sources.clock()
    counts = await sources.queue.counts()
    oldest = await sources.queue.oldest_pending()
    paused = await sources.queue.paused_until()
    start = (now - timedelta(minutes=CHART_MINUTES - 1)).replace(second=0, microsecond=0)
    minutes = await sources.history.per_minute(start)
    chart = _chart(minutes, start)
    recent = chart["delivered"][-RATE_MINUTES:]
    fields = await check(
        sources.history, sources.repository, now=now, max_age=sources.fields_max_age
    )
    dead = await sources.queue.recent("dead", LATEST_DEAD)
    report: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "ready": None if sources.readiness is None else sources.readiness.ready,
        "unready_reason": "" if sources.readiness is None else sources.readiness.reason,
        "queue": counts,
        "depth": sum(counts.get(s, 0) for s in ("pending", "retry", "leased")),
        "oldest_pending_seconds": None if oldest is None else (now - oldest).total_seconds(),
        "paused_until": None if paused is None or paused <= now else paused.isoformat(),
        "deliveries_per_minute": round(sum(recent) / RATE_MINUTES, 1),
        "chart": chart,
        "dead_letters": {"count": counts.get("dead", 0), "latest": [_dead(d) for d in dead]},
        "api_budget": await _budget(sources.budget, now),
        "token": await sources.token_state() if sources.token_state else {"state": "unknown"},
        "index": await _index(sources.index),
        "fields": fields.as_dict() | {"warning": fields.warning},
    }
    return report


def _chart(minutes: dict[datetime, dict[str, int]], start: datetime) -> dict[str, list[int]]:
    """Per minute of the last hour (oldest first, gaps as zero), seconds since the epoch."""
    stamps = [start + timedelta(minutes=i) for i in range(CHART_MINUTES)]
    chart: dict[str, list[int]] = {"minutes": [int(s.timestamp()) for s in stamps]}
    for series, outcomes in SERIES.items():
        chart[series] = [sum(minutes.get(s, {}).get(o, 0) for o in outcomes) for s in stamps]
    return chart


def _dead(row: dict[str, Any]) -> dict[str, Any]:
    settled = row.get("settled_at")
    return {
        "id": row["id"],
        "messageId": row["messageId"],
        "attempts": row["attempts"],
        "reason": row["reason"],
        "last_try": settled.isoformat() if isinstance(settled, datetime) else None,
    }


async def _budget(budget: Budget | None, now: datetime) -> dict[str, Any] | None:
    if budget is None:
        return None
    usage = await budget.usage()
    resets = now + timedelta(seconds=budget.seconds_to_reset())
    return {"used": usage.used, "limit": usage.limit, "resets_at": resets.isoformat()}


async def _index(index: Index | None) -> dict[str, Any] | None:
    if index is None:
        return None
    state = await index.state()
    return {
        "prospects": await index.count(),
        "complete": state.complete,
        "fresh_to": state.high_water,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(report: dict[str, Any]) -> Table:
    """The report as the `status` command prints it."""
    table = Table("figure", "value", title="pardot-destination status", title_justify="left")
    counts = report["queue"]
    table.add_row("waiting (pending, retry, leased)", str(report["depth"]))
    table.add_row("oldest waiting", _age(report["oldest_pending_seconds"]))
    if report["paused_until"]:
        table.add_row("deliveries paused until", report["paused_until"])
    table.add_row("deliveries per minute", f"{report['deliveries_per_minute']:g}")
    for state in ("delivered", "skipped", "rejected", "dead"):
        table.add_row(f"{state} (kept)", str(counts.get(state, 0)))
    budget = report["api_budget"]
    table.add_row(
        "Pardot API calls today",
        f"{budget['used']:,} of {budget['limit']:,}" if budget else "not counted",
    )
    token = report["token"]
    detail = f": {token['detail']}" if token.get("detail") else ""
    table.add_row("Salesforce token", token["state"] + detail)
    index = report["index"]
    table.add_row(
        "prospect index",
        f"{index['prospects']:,} prospects, fresh to {index['fresh_to'] or '-'}"
        + ("" if index["complete"] else " (still filling)")
        if index
        else "not kept",
    )
    if report["ready"] is not None:
        table.add_row("ready", "yes" if report["ready"] else f"no: {report['unready_reason']}")
    fields = report["fields"]
    if fields["warning"]:
        table.add_row("[bold yellow]fields[/]", fields["warning"])
    elif fields["checked_at"] is None:
        table.add_row("fields", "not checked: " + (fields["problem"] or "-"))
    else:
        table.add_row("fields", f"all {fields['seen']} field(s) events carry exist in Pardot")
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def status(as_json: bool) -> None:
    """Queue depth and age, deliveries per minute, dead letters, API budget, token, index."""
    from entrypoints.cli.support import console, run_with_container

    async def run(container: Any) -> dict[str, Any]:
        sources = await container.status_sources.async_()
        return await build_report(sources)

    report = run_with_container(run)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console.print(render(report))
        dead = report["dead_letters"]
        if dead["count"]:
            console.print(
                f"{dead['count']} dead letter(s): `pardot-destination dead-letters` lists them"
            )
