"""Issue 22's floor: a scripted client that knows a first sync's recipe in advance.

In: the fake's URL, API version, token, the events of a first sync (identify, traits holding
`email`, maybe a lookup field). Out: `FloorRun` (seconds, calls by kind, rows refused).

What no general service can beat on the batch endpoints, so our time and calls are judged as
ratios of it: scan the whole account once in id ranges (`id_greater_than`/`id_less_than`,
200 rows a call, several ranges at once), then write 50 prospects a call, `batchUpdate` by id
for those found and `batchCreate` for the rest, never more than Pardot's 5 calls in flight.
It reads nothing back and keeps no state between runs, which is why it is a floor and not a
service: it cannot be told about changes, retries nothing and guards no order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

SCAN_RANGES = 20  # more ranges than slots, so a short last range never leaves slots idle
PAGE = 200
BATCH = 50


@dataclass
class FloorRun:
    seconds: float = 0.0
    scan_seconds: float = 0.0  # of which the scan
    busy_seconds: float = 0.0  # slot-seconds its calls held
    calls: Counter[str] = field(default_factory=Counter)
    refused_rows: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


async def floor_first_sync(
    base_url: str,
    version: int,
    token: str,
    business_unit: str,
    events: Sequence[dict[str, Any]],
    *,
    lookup: str | None = None,
    in_flight: int = 5,
) -> FloorRun:
    """Deliver `events` (one per member) as the floor does; `lookup` matches by that field."""
    run = FloorRun()
    slots = asyncio.Semaphore(in_flight)
    headers = {"Authorization": f"Bearer {token}", "Pardot-Business-Unit-Id": business_unit}
    base = f"{base_url}/api/prospect/version/{version}/do"
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=in_flight)
    ) as client:

        async def call(operation: str, form: dict[str, str]) -> dict[str, Any]:
            async with slots:
                began = time.perf_counter()
                answer = await client.post(
                    f"{base}/{operation}", data={**form, "format": "json"}, headers=headers
                )
                run.busy_seconds += time.perf_counter() - began
            run.calls[operation] += 1
            body = dict(answer.json())
            if body.get("@attributes", {}).get("stat") != "ok":
                errors = body.get("errors")
                if not isinstance(errors, dict):
                    raise RuntimeError(f"floor: {operation} failed: {body}")
                run.refused_rows += len(errors)
            return body

        started = time.perf_counter()
        key = lookup or "email"
        known = await _scan(call, key)
        run.scan_seconds = time.perf_counter() - started
        updates, creates = [], []
        for event in events:
            traits = {k: _form_value(v) for k, v in event["traits"].items()}
            match = known.get(traits[key].lower() if key == "email" else traits[key])
            if match is None:
                creates.append(traits)
            else:
                updates.append({"id": match, **{k: v for k, v in traits.items() if k != "email"}})
        writes = [
            call("batchUpdate", {"prospects": _batch(version, updates[i : i + BATCH], "id")})
            for i in range(0, len(updates), BATCH)
        ] + [
            call("batchCreate", {"prospects": _batch(version, creates[i : i + BATCH], "email")})
            for i in range(0, len(creates), BATCH)
        ]
        await asyncio.gather(*writes)
        run.seconds = time.perf_counter() - started
    return run


async def _scan(call: Any, key: str) -> dict[str, int]:
    """Every live prospect's `key` value → its id (the newest id when several share it)."""
    wanted = "email" if key == "email" else f"email,{key}"
    ends = []
    for order in ("ascending", "descending"):  # the lowest and the highest id: 2 calls
        form = {"sort_by": "id", "sort_order": order, "limit": "1", "fields": wanted}
        ends.append(_rows(await call("query", form)))
    if not ends[0]:
        return {}
    lowest, highest = int(ends[0][0]["id"]), int(ends[1][0]["id"])
    width = (highest - lowest) // SCAN_RANGES + 1
    found: dict[str, int] = {}

    async def pull(low: int, high: int) -> None:
        after = low
        while True:
            form = {"id_greater_than": str(after), "id_less_than": str(high), "limit": str(PAGE)}
            rows = _rows(await call("query", {**form, "output": "simple", "fields": wanted}))
            for row in rows:
                value = row.get(key)
                if value is not None:
                    text = str(value).lower() if key == "email" else str(value)
                    found[text] = max(found.get(text, 0), int(row["id"]))
            if len(rows) < PAGE:
                return
            after = int(rows[-1]["id"])

    await asyncio.gather(
        *(pull(lowest + n * width - 1, lowest + (n + 1) * width) for n in range(SCAN_RANGES))
    )
    return found


def _rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    rows = body.get("result", {}).get("prospect")
    return [] if rows is None else rows if isinstance(rows, list) else [rows]


def _batch(version: int, rows: list[dict[str, str]], key: str) -> str:
    """v4: an array of flat rows holding `id`/`email`; v3: an object keyed by it."""
    if version == 4:
        return json.dumps({"prospects": rows})
    return json.dumps(
        {"prospects": {str(row[key]): {k: v for k, v in row.items() if k != key} for row in rows}}
    )


def _form_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def computed_floor(
    prospects: int, known: int, new: int, *, latency: float, in_flight: int
) -> FloorRun:
    """The floor's calls and time worked out rather than run, for accounts whose scan on the
    fake would take hours (its queries filter every record; Pardot's are indexed): ids taken
    as contiguous, every call answered after `latency`, `in_flight` at once, the scan's two
    end calls first. On Pardot this is what the recipe costs, at the least."""
    run = FloorRun()
    run.calls["query"] = 2 if prospects else 1
    width = prospects // SCAN_RANGES + 1 if prospects else 0
    for n in range(SCAN_RANGES if prospects else 0):
        rows = max(0, min(prospects, (n + 1) * width) - n * width)
        run.calls["query"] += rows // PAGE + 1
    run.calls["batchUpdate"] = -(-known // BATCH)
    run.calls["batchCreate"] = -(-new // BATCH)
    rounds = -(-(run.calls["query"] - 2) // in_flight) + 1
    rounds += -(-(run.calls["batchUpdate"] + run.calls["batchCreate"]) // in_flight)
    run.scan_seconds = (-(-(run.calls["query"] - 2) // in_flight) + 1) * latency
    run.seconds = rounds * latency
    run.busy_seconds = run.total_calls * latency
    return run
