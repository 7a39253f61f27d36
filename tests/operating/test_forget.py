"""`forget` as an operator runs it (click's CliRunner) on a real SQLite file, against the fake
Pardot over HTTP: per kind what went, the prospect deleted in Pardot (or kept, and said so),
nothing left in plain text, other people untouched, bad input refused with nothing removed."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

from tests.forget.scan import sqlite_hits
from tests.operating.conftest import Operator, identify

EMAIL, USER, ANONYMOUS = "ada.lovelace@example.com", "ada-lovelace-1815", "anon-ada-4711"
ADA = {"email": EMAIL, "firstName": "Ada", "org_id": "acme"}


def _db(operator: Operator) -> Path:
    return operator.tmp / "queue.db"


def _others(operator: Operator) -> list[tuple[Any, ...]]:
    """Bob's events, as the file holds them (id, state, payload)."""
    with sqlite3.connect(_db(operator)) as conn:
        return conn.execute(
            "SELECT id, state, payload FROM events WHERE payload LIKE '%bob-babbage%' ORDER BY id"
        ).fetchall()


def _suppressed(operator: Operator) -> int:
    with sqlite3.connect(_db(operator)) as conn:
        return int(conn.execute("SELECT count(*) FROM suppressed").fetchone()[0])


async def _ada_and_bob(operator: Operator) -> int:
    """Ada delivered (her prospect in Pardot and the index), then one more event of hers and
    one of Bob's waiting; returns Ada's prospect id."""
    bob = {"email": "bob@example.com", "firstName": "Bob"}
    await operator.enqueue(identify(1, USER, 0, **ADA), identify(2, "bob-babbage", 0, **bob))
    await operator.deliver()
    [ada] = operator.fake.prospects_by_email(EMAIL)
    rebuilt = await operator.run("index", "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    later = identify(3, USER, 5, firstName="Augusta")
    await operator.enqueue(
        {**later, "anonymousId": ANONYMOUS}, identify(4, "bob-babbage", 5, firstName="Charles")
    )
    return int(ada["id"])


async def test_forget_in_pardot_leaves_nothing_of_the_person_and_nothing_else_changes(
    v4: Operator,
) -> None:
    ada = await _ada_and_bob(v4)
    others = _others(v4)
    assert len(others) == 2
    told = await v4.run("forget", EMAIL, "--in-pardot", "--json")
    assert told.exit_code == 0, told.output
    report = json.loads(told.stdout)
    assert report["removed"]["settled"] == 1 and report["removed"]["waiting"] == 1
    assert report["removed"]["history"] >= 1 and report["removed"]["stamps"] >= 1
    assert report["removed"]["links"] >= 1 and report["removed"]["index"] == 1
    assert report["prospects"] == [
        {"prospect": str(ada), "prospectId": ada, "fate": "deleted in Pardot"}
    ]
    assert report["suppressed"] == report["identities"] >= 3  # email, userId, anonymousId
    assert v4.fake.prospects_by_email(EMAIL) == []  # in the recycle bin
    assert _others(v4) == others
    for who in (EMAIL, USER):
        assert (await v4.run("explain", who)).exit_code == 1
    assert "no dead letters" in (await v4.run("dead-letters")).stdout
    assert sqlite_hits(_db(v4), [EMAIL, USER, ANONYMOUS]) == {}
    # A rebuild of the index reads the live prospects: the deleted one does not come back.
    assert (await v4.run("index", "rebuild")).exit_code == 0
    assert sqlite_hits(_db(v4), [EMAIL, USER, ANONYMOUS]) == {}
    # Bob's waiting event is still delivered; a second forget finds nothing of Ada.
    await v4.deliver()
    assert v4.fake.prospects_by_email("bob@example.com")[0]["first_name"] == "Charles"
    again = await v4.run("forget", EMAIL)
    assert again.exit_code == 1 and "nothing known" in again.stdout


async def test_forget_without_in_pardot_keeps_the_prospect_and_its_index_row_and_says_so(
    v4: Operator,
) -> None:
    ada = await _ada_and_bob(v4)
    told = await v4.run("forget", USER)
    assert told.exit_code == 0, told.output
    assert f"Pardot prospect {ada}: kept in Pardot" in told.stdout
    assert "Pardot still holds these prospects and the prospect index keeps their rows" in (
        told.stdout
    )
    assert [p["id"] for p in v4.fake.prospects_by_email(EMAIL)] == [ada]
    # Only the index, Pardot's mirror, still names her.
    assert set(sqlite_hits(_db(v4), [EMAIL, USER, ANONYMOUS])) <= {
        "prospect_index.email",
        "prospect_index.data",
    }
    assert sqlite_hits(_db(v4), [USER, ANONYMOUS]) == {}


async def test_a_dry_run_prints_what_would_go_and_removes_nothing(v4: Operator) -> None:
    await _ada_and_bob(v4)
    before = sqlite_hits(_db(v4), [EMAIL, USER])
    told = await v4.run("forget", EMAIL, "--in-pardot", "--dry-run")
    assert told.exit_code == 0, told.output
    assert "would remove" in told.stdout and "would be deleted in Pardot" in told.stdout
    assert "dry run: nothing was removed and nobody was suppressed" in told.stdout
    assert sqlite_hits(_db(v4), [EMAIL, USER]) == before
    assert _suppressed(v4) == 0
    assert len(v4.fake.prospects_by_email(EMAIL)) == 1
    assert (await v4.run("explain", EMAIL)).exit_code == 0


async def test_bad_input_is_refused_with_nothing_removed(v4: Operator) -> None:
    await _ada_and_bob(v4)
    before = sqlite_hits(_db(v4), [EMAIL, USER])
    malformed = await v4.run("forget", "ada.lovelace@")
    assert malformed.exit_code == 2
    assert "'ada.lovelace@' is not a valid email address" in malformed.output
    unknown = await v4.run("forget", "nobody@example.com", "--in-pardot")
    assert unknown.exit_code == 1
    assert "nothing known about nobody@example.com" in unknown.stdout
    assert "nothing removed, nobody suppressed" in unknown.stdout
    assert sqlite_hits(_db(v4), [EMAIL, USER]) == before
    assert _suppressed(v4) == 0


async def test_lift_takes_the_person_off_the_suppression_list(v4: Operator) -> None:
    await _ada_and_bob(v4)
    assert (await v4.run("forget", EMAIL)).exit_code == 0
    # The email (also read as a userId or anonymousId, as `explain` reads it), and the userId
    # and anonymousId found beside it.
    assert _suppressed(v4) == 5
    lifted = await v4.run("forget", "--lift", EMAIL)
    assert lifted.exit_code == 0 and "taken off the suppression list" in lifted.stdout
    # Only what was named: the userId and anonymousId found beside the email stay suppressed.
    assert _suppressed(v4) == 2
    assert (await v4.run("forget", "--lift", USER)).exit_code == 0
    assert _suppressed(v4) == 1
    again = await v4.run("forget", "--lift", EMAIL)
    assert again.exit_code == 1 and "not on the suppression list" in again.stdout


async def test_with_pardot_unreachable_a_forget_in_pardot_removes_nothing(v4: Operator) -> None:
    """Pardot answers before anything goes: otherwise the person would be gone here while their
    prospect stays there, with no record left of which prospect it was."""
    await _ada_and_bob(v4)
    before = sqlite_hits(_db(v4), [EMAIL, USER])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    told = await v4.run("forget", EMAIL, "--in-pardot", PARDOT_BASE_URL=closed)
    assert told.exit_code == 2, told.output
    assert "Pardot could not be used, nothing removed" in told.output
    assert sqlite_hits(_db(v4), [EMAIL, USER]) == before
    assert _suppressed(v4) == 0
    assert len(v4.fake.prospects_by_email(EMAIL)) == 1
