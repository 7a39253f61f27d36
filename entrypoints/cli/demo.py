"""`pardot-destination demo`: the real service against the embedded fake Pardot.

The fake runs in this process; the service runs as a child process (`serve`), exactly as a
user would run it; the seed's example identify calls go through its real HTTP endpoints. The
outcome table is read from the service's queue, which this process asks the container for,
configured with the very settings the child was given.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from entrypoints.config import load_config
from entrypoints.container import Container, opened

WRITE_KEY = "demo-write-key"
SALESFORCE_LEAD = "00Q5e00000AbCdEfGH"
LISTENING = re.compile(rb"listening on (http://\S+)")
FINISHED = ("delivered", "skipped", "rejected", "dead")


def seed_examples() -> list[dict[str, Any]]:
    """The seed's examples: Tom (twice), a Salesforce-linked lead, an audience, opt-outs."""
    tom = {
        "email": "tom@initech.example",
        "first_name": "Tom",
        "last_name": "Smykowski",
        "company": "Initech",
        "department": "Products",
        "years_in_business": 10,
        "notes": "Takes the specifications to the engineers",
        "description": "A people person",
        "title": "Product Manager",
        "org_id": "initech",
    }

    def identify(n: int, minute: int, traits: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "type": "identify",
            "messageId": f"demo-{n}",
            "userId": extra.pop("user_id", "f4ca124298"),
            "timestamp": f"2026-11-27T10:{minute:02d}:00Z",
            "traits": traits,
            **extra,
        }

    return [
        identify(1, 0, tom),
        identify(2, 1, {"email": "tom@initech.example", "org_id": "initech", "title": "Liaison"}),
        identify(
            3,
            2,
            {"email": "bill@initech.example", "firstName": "Bill", "lastName": "Lumbergh"},
            user_id="bill",
            integrations={"Pardot": {"fid": SALESFORCE_LEAD}},
        ),
        # Engage: entered, then left; sent in the wrong order, timestamps decide.
        identify(5, 6, {"email": "peter@initech.example", "premium_users": False}, user_id="p"),
        identify(4, 5, {"email": "peter@initech.example", "premium_users": True}, user_id="p"),
        identify(6, 7, {"email": "milton@initech.example"}, integrations={"Pardot": False}),
        identify(7, 8, {"firstName": "Nobody"}, user_id="anon"),
        {"type": "track", "messageId": "demo-8", "userId": "p", "event": "Stapler Found"},
    ]


async def run_demo(console: Console, *, wait_seconds: float = 60.0) -> int:
    fake = FakePardot(version=4, custom_fields={"org_id", "premium_users", "department"})
    lead = fake.seed_prospect(
        email="bill@initech.example", first_name="William", salesforce_fid=SALESFORCE_LEAD
    )
    console.print(f"[bold]Seeded[/] Salesforce lead {SALESFORCE_LEAD} as Pardot prospect {lead}")
    with tempfile.TemporaryDirectory(prefix="pardot-demo-") as workdir:
        queue_file = Path(workdir) / "demo.db"
        async with running_fake_pardot(fake) as pardot:
            console.print(f"[bold]Fake Pardot[/] on {pardot.url}")
            settings = _service_settings(pardot.url, queue_file)
            service = await _start_service(settings)
            try:
                url = await _wait_for_address(service)
                # Keep reading the child's log so a full pipe never blocks it.
                drain = asyncio.create_task(_drain(service))
                console.print(f"[bold]Service[/] on {url} (pardot-destination serve)")
                await _send_and_wait(console, url, wait_seconds)
            finally:
                await _stop(service)
            await drain
        _print_prospects(console, fake)
        await _print_outcomes(console, settings)
    return 0


async def _send_and_wait(console: Console, url: str, wait_seconds: float) -> None:
    events = seed_examples()
    identifies = sum(1 for event in events if event["type"] == "identify")
    async with httpx.AsyncClient(auth=(WRITE_KEY, "")) as client:
        answer = await client.post(f"{url}/v1/batch", json={"batch": events})
        console.print(f"POST /v1/batch with {len(events)} events -> {answer.text}")
        answer.raise_for_status()
        await _wait_for_delivery(client, url, expected=identifies, wait_seconds=wait_seconds)


def _service_settings(pardot_url: str, queue_file: Path) -> dict[str, str]:
    """The service's settings, as the environment variables a user would set."""
    return {
        "PARDOT_API_VERSION": "auto",
        "PARDOT_LOOKUP_FIELD_ID": "org_id",
        "PARDOT_ACCOUNT_ID": "507251",
        "PARDOT_CAMPAIGN_ID": "1",
        "PARDOT_CREATE_CAMPAIGN_ID": "1",
        "PARDOT_BUSINESS_UNIT_ID": DEFAULT_BUSINESS_UNIT_ID,
        "PARDOT_BASE_URL": pardot_url,
        "SALESFORCE_LOGIN_URL": pardot_url,
        "SALESFORCE_CLIENT_ID": DEFAULT_CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "SALESFORCE_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
        "DESTINATION_WRITE_KEY": WRITE_KEY,
        "DESTINATION_QUEUE_URL": f"sqlite:///{queue_file}",
    }


async def _start_service(settings: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "entrypoints.cli.main",
        "--log-level",
        "warning",
        "serve",
        "--port",
        "0",
        env={**os.environ, **settings},
        stderr=asyncio.subprocess.PIPE,
    )


async def _wait_for_address(service: asyncio.subprocess.Process) -> str:
    assert service.stderr is not None
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(service.stderr.readline(), 30)
        if not line:
            raise RuntimeError("the service exited: " + b"".join(lines).decode(errors="replace"))
        lines.append(line)
        found = LISTENING.search(line)
        if found:
            return found.group(1).decode()


async def _drain(service: asyncio.subprocess.Process) -> None:
    assert service.stderr is not None
    while await service.stderr.readline():
        pass


async def _wait_for_delivery(
    client: httpx.AsyncClient, url: str, *, expected: int, wait_seconds: float
) -> None:
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while asyncio.get_running_loop().time() < deadline:
        metrics = (await client.get(f"{url}/metrics")).text
        settled = sum(_gauge(metrics, state) for state in FINISHED)
        if settled >= expected:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"events were not delivered within {wait_seconds} s")


def _gauge(metrics: str, state: str) -> int:
    found = re.search(rf'pardot_destination_queue_events{{state="{state}"}} (\S+)', metrics)
    return int(float(found.group(1))) if found else 0


async def _stop(service: asyncio.subprocess.Process) -> None:
    if service.returncode is None:
        service.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(service.wait(), 30)
        except TimeoutError:
            service.kill()
            await service.wait()


def _print_prospects(console: Console, fake: FakePardot) -> None:
    table = Table(
        "id", "email", "name", "job_title", "org_id", "premium_users", "fid",
        title="Prospects in the fake Pardot",
    )  # fmt: skip
    for p in fake.all_prospects():
        name = " ".join(part for part in (p.get("first_name"), p.get("last_name")) if part)
        values = [p["id"], p["email"], name, p.get("job_title"), p.get("org_id"),
                  p.get("premium_users"), p.get("salesforce_fid")]  # fmt: skip
        table.add_row(*("" if value is None else str(value) for value in values))
    console.print(table)


async def _print_outcomes(console: Console, settings: dict[str, str]) -> None:
    table = Table("messageId", "outcome", "reason", title="What happened to each event")
    # The TOML spelling of each variable (its name in lower case) is a valid keyword.
    config = load_config(**{name.lower(): value for name, value in settings.items()})
    async with opened(Container(config=config)) as container:
        queue = await container.queue.async_()
        rows = [(row, state) for state in FINISHED for row in await queue.recent(state, limit=100)]
    for row, state in sorted(rows, key=lambda item: item[0]["id"]):
        table.add_row(str(row["messageId"]), state, row["reason"])
    console.print(table)
