"""Events that keep flowing through a fault, sent as Segment sends them, and what must hold after.

Each sender lane posts one person's events in order and, like Segment's libraries, sends an
event again after a 503 (honouring `Retry-After`, compressed) until it is acknowledged: so
every event ends acknowledged, and the last one of each person is the value Pardot must hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.service.conftest import WRITE_KEY

AUTH = (WRITE_KEY, "")
# Every settlement the nodes apply, stamped: accepted = settled once is counted from it.
SETTLE_LOG = (
    "CREATE TABLE settle_log (id bigint, state text, at timestamptz DEFAULT clock_timestamp())",
    """CREATE FUNCTION log_settlement() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO settle_log (id, state) VALUES (NEW.id, NEW.state);
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER settled AFTER UPDATE ON events FOR EACH ROW"
    " WHEN (OLD.state = 'leased' AND NEW.state IN ('delivered', 'dead', 'rejected'))"
    " EXECUTE FUNCTION log_settlement()",
)


def identify(person: int, round_: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{person}-{round_}",
        "userId": f"u{person}",
        "timestamp": f"2026-11-27T09:{round_ // 60:02d}:{round_ % 60:02d}Z",
        "traits": {
            "email": f"person{person}@x.io",
            "first_name": f"P{person}",
            "plan": f"r{round_}",
        },
    }


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def log_settlements(url: str, *, every_settlement: bool = False) -> None:
    """From now on `settle_log` records each final settlement (or each one, retries too)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SETTLE_LOG:
            if every_settlement:
                statement = statement.replace(
                    "NEW.state IN ('delivered', 'dead', 'rejected')", "NEW.state <> 'leased'"
                )
            conn.execute(statement)  # type: ignore[arg-type]


@dataclass
class Flow:
    """`people` lanes posting rounds of events to `urls()` (a lane's node turns each round)."""

    urls: Callable[[], list[str]]
    people: int
    retry_after_scale: float = 0.1  # Retry-After, compressed: the test waits this share of it
    accepted: int = 0
    # (sent, answered) of each 503, and the sending times of acknowledged events.
    refusals: list[tuple[float, float]] = field(default_factory=list)
    acknowledged: list[float] = field(default_factory=list)
    last_round: dict[int, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def lane(self, client: httpx.AsyncClient, person: int, rounds: int, gap: float) -> None:
        for round_ in range(rounds):
            if self.stop.is_set():
                return
            event = identify(person, round_)
            while True:
                urls = self.urls()
                url = urls[(person + round_) % len(urls)]
                sent = time.monotonic()
                try:
                    answer = await client.post(f"{url}/v1/identify", json=event, auth=AUTH)
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
                    continue
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.text
                after = answer.headers.get("Retry-After")
                self.refusals.append((sent, time.monotonic()))
                assert after is not None and after.isdigit(), answer.headers
                await asyncio.sleep(int(after) * self.retry_after_scale)
            self.accepted += 1
            self.acknowledged.append(sent)
            self.last_round[person] = round_
            await asyncio.sleep(gap)

    async def run(self, rounds: int, gap: float) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(self.lane(client, p, rounds, gap) for p in range(self.people)))
