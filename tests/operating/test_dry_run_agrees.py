"""`sync --dry-run` names the outcome the real `sync` then has, event by event, and changes
nothing: the dry run is the real sync service over a Pardot that answers from the index.

The account is seeded, the index filled (`index rebuild`) and nothing changes in Pardot
afterwards, so no line may be `unknown`. Events are drawn with a fixed seed over every v4
rule: lookup values (held by one, by two, by none), userId and anonymousId links, email (one
prospect, several, none), integrations.Pardot.id and .fid (existing or not), skips,
rejections, and the same person several times with shuffled times (the later one wins).
"""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from entrypoints.cli import sync_file
from tests.operating.conftest import Operator, identify
from tests.operating.test_sync_file import _row

EVENTS = 200
LEAD_FID = "00Q5e00000LeAdAAA1"  # 18 characters: the form Pardot stores
MISSING_FID = "00Q5e00000NoBoDyA2"
KINDS = {"create", "update", "unchanged", "skipped", "rejected"}
_NAMED = re.compile(r"^(?:update )?prospect (new #\d+|\S+?)[ :]")


def _seed(operator: Operator) -> list[int]:
    """Prospects every rule can meet; returns their ids."""
    fake = operator.fake
    seeded = [
        fake.seed_prospect(email="p0@example.com", first_name="Ann"),
        fake.seed_prospect(email="p1@example.com", first_name="Ben", org_id="o1"),
        fake.seed_prospect(email="p1@example.com", first_name="Bea"),
        fake.seed_prospect(email="p2@example.com", org_id="o2a", plan="gold"),
        fake.seed_prospect(email="p2@example.com", org_id="o2b"),
        fake.seed_prospect(email="p3@example.com", org_id="o3", job_title="CTO"),
        fake.seed_prospect(email="p4@example.com", salesforce_fid=LEAD_FID),
        fake.seed_prospect(email="p5@example.com", org_id="o9"),
        fake.seed_prospect(email="p6@example.com", org_id="o9"),
    ]
    return seeded


def _draw(rng: random.Random, ids: list[int]) -> list[dict[str, Any]]:
    users = [f"u{i}" for i in range(12)]
    emails = [f"p{i}@example.com" for i in range(12)]
    orgs = ["o1", "o2a", "o3", "o9", "o-new-1", "o-new-2", "o-new-3"]
    events: list[dict[str, Any]] = []
    for n in range(EVENTS):
        minute, second = rng.randrange(60), rng.randrange(60)
        event: dict[str, Any] = {
            "type": "identify",
            "messageId": f"m-{n}",
            "timestamp": f"2026-03-01T10:{minute:02d}:{second:02d}Z",
            "traits": {},
        }
        if rng.random() < 0.85:
            event["userId"] = rng.choice(users)
        else:
            event["anonymousId"] = f"anon-{rng.randrange(4)}"
        traits = event["traits"]
        if rng.random() < 0.85:
            traits["email"] = rng.choice(emails)
        for trait, values in (
            ("firstName", ["Ann", "Ben", "Cy", "Dee"]),
            ("lastName", ["Ames", "Byrd"]),
            ("title", ["CTO", "Dev", "Ops"]),
            ("plan", ["gold", "free"]),
        ):
            if rng.random() < 0.4:
                traits[trait] = rng.choice(values)
        if rng.random() < 0.4:
            traits["org_id"] = rng.choice(orgs)
        roll = rng.random()
        if roll < 0.07:
            event["integrations"] = {"Pardot": {"id": rng.choice([*ids, 987654])}}
        elif roll < 0.13:
            event["integrations"] = {"Pardot": {"fid": rng.choice([LEAD_FID, MISSING_FID])}}
        elif roll < 0.16:
            event["integrations"] = {"Pardot": False}
        elif roll < 0.19:
            event = {"type": "track", "messageId": f"m-{n}", "userId": "u1", "event": "Clicked"}
        elif roll < 0.21:
            event.pop("userId", None)
            event.pop("anonymousId", None)  # nobody: not a valid identify
        events.append(event)
    return events


def _snapshot(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return list(connection.iterdump())


def _real_outcomes(database: Path) -> dict[str, tuple[str, str | None]]:
    """What the real run's history says of each event: its kind and the prospect it reached."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT message_id, outcome, reason, prospect FROM history WHERE source = 'sync'"
        ).fetchall()
    named = {"delivered": "update", "unchanged": "unchanged"}
    outcomes: dict[str, tuple[str, str | None]] = {}
    for message_id, outcome, reason, prospect in rows:
        created = outcome == "delivered" and reason.startswith("created prospect ")
        outcomes[message_id] = ("create" if created else named.get(outcome, outcome), prospect)
    return outcomes


def _disagreements(
    lines: list[list[str]], real: dict[str, tuple[str, str | None]], tracks: set[str]
) -> list[str]:
    """Events whose dry-run line names another kind, or another prospect, than the real run.

    A prospect the dry run would create is "new #k": each must stand for one real prospect.
    """
    disagree: list[str] = []
    new: dict[str, str | None] = {}
    for number, message_id, kind, text in lines:
        had, prospect = ("skipped", None) if message_id in tracks else real[message_id]
        named = _NAMED.match(text) if kind in ("update", "unchanged") else None
        said = named.group(1) if named else None
        if said is not None and said.startswith("new #"):
            said = new.setdefault(said, prospect)
        if kind != had or (said is not None and said != prospect):
            disagree.append(f"event {number} ({message_id}): dry run {kind} ({text}); real {had}")
    if len(set(new.values())) != len(new):
        disagree.append(f"one real prospect for several new ones: {new}")
    return disagree


@pytest.mark.parametrize("lookup", ["org_id", ""])
async def test_every_dry_run_line_names_what_the_real_run_then_does(
    v4: Operator, monkeypatch: pytest.MonkeyPatch, lookup: str
) -> None:
    monkeypatch.setattr(sync_file, "BATCH", 40)  # several batches: what one learns, the next sees
    env = {"PARDOT_LOOKUP_FIELD_ID": lookup}
    ids = _seed(v4)
    assert (await v4.run("index", "rebuild", **env)).exit_code == 0
    assert (await v4.run("fields", "check", **env)).exit_code in (0, 1)  # notes the fields
    events = _draw(random.Random(f"dry-run-{lookup}"), ids)
    path = v4.write("drawn.ndjson", events)
    database = v4.tmp / "queue.db"

    before, calls = _snapshot(database), v4.fake.total_calls
    dry = await v4.run("sync", "--dry-run", str(path), **env)
    assert v4.fake.total_calls == calls and _snapshot(database) == before, dry.output
    first, *rest = dry.stdout.splitlines()
    assert first.startswith("dry run as of the prospect index's last refresh"), first
    assert "changes made in Pardot since then are not seen" in first
    lines = [line.split("\t") for line in rest if "\t" in line]
    assert len(lines) == EVENTS

    real = await v4.run("sync", str(path), **env)
    assert real.exit_code in (0, 1), real.output
    tracks = {e["messageId"] for e in events if e["type"] == "track"}
    disagree = _disagreements(lines, _real_outcomes(database), tracks)
    assert not disagree, "\n".join(disagree)
    kinds = {line[2] for line in lines}
    assert kinds == KINDS, kinds  # the draw reaches every outcome, and none is unknown


async def test_a_dry_run_changes_nothing_in_the_store(v4: Operator) -> None:
    """Links, unlinks, field stamps, creates and the index's refresh all stay in memory."""
    known = v4.write(
        "known.ndjson",
        [identify(1, "ada", 0, email="ada@example.com", firstName="Ada"),
         identify(2, "gus", 0, email="gus@example.com", firstName="Gus")],
    )  # fmt: skip
    assert (await v4.run("sync", str(known))).exit_code == 0
    [gus] = v4.fake.prospects_by_email("gus@example.com")
    del v4.fake.records[gus["id"]]  # deleted in Pardot: the store still links gus to it
    assert (await v4.run("index", "rebuild", "--restart")).exit_code == 0
    path = v4.write(
        "later.ndjson",
        [identify(3, "ada", 9, email="ada@example.com", lastName="Lovelace"),
         identify(4, "gus", 9, email="gus@example.com", lastName="Grissom"),
         identify(5, "cy", 9, email="cy@example.com", firstName="Cy")],
    )  # fmt: skip
    database = v4.tmp / "queue.db"
    before, calls = _snapshot(database), v4.fake.total_calls
    dry = await v4.run("sync", "--dry-run", str(path))
    assert dry.exit_code == 0, dry.output
    assert _snapshot(database) == before and v4.fake.total_calls == calls
    kinds = [line.split("\t")[2] for line in dry.stdout.splitlines() if "\t" in line]
    assert kinds == ["update", "create", "create"], dry.stdout  # gus's prospect is gone

    again = await v4.run("sync", "--dry-run", str(path))
    assert again.stdout == dry.stdout  # the first dry run left nothing behind for the second
    real = await v4.run("sync", str(path))
    assert real.exit_code == 0 and _row(real.stdout, "delivered") == 3, real.output
    assert _snapshot(database) != before


async def test_an_empty_account_indexed_whole_makes_every_new_person_a_create(
    v4: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await v4.run("index", "rebuild")).exit_code == 0  # complete, and no change seen yet
    path = v4.write(
        "new.ndjson",
        [identify(1, "ada", 0, email="ada@example.com", firstName="Ada"),
         identify(2, "bob", 0, email="bob@example.com"),
         identify(3, "ada", 5, email="ada@example.com", lastName="Lovelace")],
    )  # fmt: skip
    monkeypatch.setattr(sync_file, "BATCH", 2)  # the third event sees what the first created
    calls = v4.fake.total_calls
    dry = await v4.run("sync", "--dry-run", str(path))
    assert v4.fake.total_calls == calls
    lines = [line.split("\t") for line in dry.stdout.splitlines() if "\t" in line]
    assert [line[2] for line in lines] == ["create", "create", "update"], dry.stdout
    assert lines[2][3] == "update prospect new #1 (linked to user id): last_name"


async def test_a_v3_dry_run_from_a_complete_index_knows_which_upserts_create(v3: Operator) -> None:
    v3.fake.seed_prospect(email="old@example.com", first_name="Old")
    assert (await v3.run("index", "rebuild")).exit_code == 0
    path = v3.write(
        "v3.ndjson",
        [identify(1, "a", 0, email="old@example.com", firstName="Old"),
         identify(2, "b", 0, email="old@example.com", lastName="New"),
         identify(3, "c", 0, email="new@example.com", firstName="N")],
    )  # fmt: skip
    dry = await v3.run("sync", "--dry-run", str(path))
    lines = [line.split("\t") for line in dry.stdout.splitlines() if "\t" in line]
    assert [line[2] for line in lines] == ["unchanged", "update", "create"], dry.stdout
    assert lines[1][3] == (
        "update prospect email:old@example.com (upsert by email old@example.com): last_name"
    )
    assert v3.fake.prospects_by_email("new@example.com") == []
    real = await v3.run("sync", str(path))
    assert _row(real.stdout, "unchanged") == 1 and _row(real.stdout, "delivered") == 2
    assert len(v3.fake.prospects_by_email("new@example.com")) == 1
