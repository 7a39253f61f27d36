"""The door's suppression check: a forgotten person's events are answered 200, never stored.

Kept apart from the handlers so that it stays one line in `app._store`: the events of a
request whose person is on the suppression list (entrypoints/suppression.py) are dropped
before the put and counted as `pardot_destination_requests_refused_total{reason="suppressed"}`;
the sender hears success, so it does not send them again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import Counter

from entrypoints.suppression import SuppressionGate

SUPPRESSION = web.AppKey("suppression_gate", SuppressionGate)


async def without_suppressed(
    app: web.Application, events: list[dict[str, Any]], refused: Counter
) -> list[dict[str, Any]]:
    gate = app.get(SUPPRESSION)
    if gate is None or not events:
        return events
    suppressed = await gate.refused(events)
    if not suppressed:
        return events
    refused.labels("suppressed").inc(len(suppressed))
    return [event for position, event in enumerate(events) if position not in suppressed]
