"""`plan`: what the matching rules alone make of each event (no store, no Pardot)."""

from __future__ import annotations

import json
from typing import Any

import click

from domain.matching import plan_payload
from entrypoints.cli.support import config as _config


@click.command("plan")
@click.argument("events", type=click.File("r"), default="-")
def plan_command(events: Any) -> None:
    """Dry run: what each event (JSON object, array, or one per line) would do to Pardot."""
    config = _config()
    version = config.fixed_api_version
    if version is None:
        raise click.UsageError("set PARDOT_API_VERSION to 3 or 4 for a dry run")
    settings = config.destination(version)
    text = events.read()
    try:
        payloads = json.loads(text)
    except json.JSONDecodeError:
        payloads = [json.loads(line) for line in text.splitlines() if line.strip()]
    for payload in payloads if isinstance(payloads, list) else [payloads]:
        decision = plan_payload(payload, settings, destination_keys=config.destination_keys)
        message_id = payload.get("messageId") if isinstance(payload, dict) else None
        click.echo(f"{message_id or '-'}\t{type(decision).__name__}\t{decision.reason}")
