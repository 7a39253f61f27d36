"""dead-letters, explain, fields check and status, on a real queue delivered by the real worker
against the fake Pardot."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

from domain.ports import SLOT_BUCKET_SECONDS, IndexState
from entrypoints.container import opened
from tests.operating.conftest import Operator, identify


async def _two_dead_letters(v4: Operator) -> None:
    """Two events the worker gives up on (every try answered "unable to save")."""
    await v4.enqueue(
        identify(1, "ada", 0, email="ada@example.com", plan="old"),
        identify(2, "bob", 0, email="bob@example.com", plan="basic"),
    )
    v4.fake.fail_next(40, err_code=85, message="Unable to save prospect")
    await v4.deliver(rounds=1, DESTINATION_MAX_ATTEMPTS="1")
    v4.fake.failures.clear()  # the cause is fixed


async def test_dead_letters_are_listed_shown_replayed_and_purged(v4: Operator) -> None:
    await _two_dead_letters(v4)
    listed = await v4.run("dead-letters")  # bare: lists, as before
    assert listed.exit_code == 0, listed.output
    assert "m-1" in listed.stdout and "m-2" in listed.stdout
    assert "85" in listed.stdout and "Unable to save prospect" in listed.stdout
    assert "ada@example.com" in listed.stdout  # the event, in one line
    assert (await v4.run("dead-letters", "list")).stdout == listed.stdout

    [first_id] = re.findall(r"│ (\d+)\s+│ m-1", listed.stdout)
    shown = await v4.run("dead-letters", "show", first_id)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"tries:\s+1", shown.stdout) and re.search(r"Pardot code:\s+85", shown.stdout)
    assert re.search(r"last try:\s+20\d\d-", shown.stdout)
    assert json.loads(shown.stdout.split("event:\n", 1)[1])["traits"]["plan"] == "old"
    assert (await v4.run("dead-letters", "show", "999")).exit_code == 1

    neither = await v4.run("dead-letters", "replay")
    assert neither.exit_code == 2 and "--all" in neither.output

    # A newer event for ada wins while her old one lies dead...
    await v4.enqueue(identify(3, "ada", 9, email="ada@example.com", plan="new"))
    await v4.deliver(rounds=1)
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    assert ada["plan"] == "new"
    # ...so replaying the old one (its own time kept) is unchanged, not written back.
    replayed = await v4.run("dead-letters", "replay", first_id, "999")
    assert replayed.exit_code == 1, replayed.output  # 999 is not a dead letter: said so
    assert f"1 event(s) requeued: {first_id}" in replayed.stdout
    assert "not dead letters" in replayed.stdout and "999" in replayed.stdout
    await v4.deliver(rounds=1)
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    assert ada["plan"] == "new"
    told = await v4.run("explain", "ada")
    assert re.search(r"m-1\s+│ unchanged", told.stdout), told.stdout

    # requeue-dead stays, as `replay --all`.
    synonym = await v4.run("requeue-dead")
    assert synonym.exit_code == 0 and "1 event(s) requeued" in synonym.stdout
    await v4.deliver(rounds=1)
    assert v4.fake.prospects_by_email("bob@example.com")[0]["plan"] == "basic"
    assert "no dead letters" in (await v4.run("dead-letters")).stdout


async def test_purge_forgets_dead_letters_older_than_days(v4: Operator) -> None:
    await _two_dead_letters(v4)
    kept = await v4.run("dead-letters", "purge", "--older-than", "1")
    assert kept.exit_code == 0 and "0 dead letter(s)" in kept.stdout
    gone = await v4.run("dead-letters", "purge", "--older-than", "0")
    assert "2 dead letter(s)" in gone.stdout
    assert "no dead letters" in (await v4.run("dead-letters")).stdout
    assert (await v4.run("dead-letters", "purge")).exit_code == 2  # --older-than is required


async def test_explain_names_the_prospect_its_fields_and_the_events_that_wrote_them(
    v4: Operator,
) -> None:
    await v4.enqueue(
        identify(1, "ada", 0, email="ada@example.com", firstName="Ada", org_id="acme"),
        identify(2, "ada", 5, email="ada@example.com", lastName="Lovelace"),
        identify(3, "nobody", 0, firstName="No email"),
    )
    await v4.deliver()
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    for who in ("ada@example.com", "ada"):
        told = await v4.run("explain", who)
        assert told.exit_code == 0, told.output
        assert f"prospect {ada['id']}" in told.stdout and "user:ada" in told.stdout
        assert re.search(r"first_name\s+│ Ada\s+│ 2026-03-01 10:00:00", told.stdout)
        assert re.search(r"m-2\s+│ delivered", told.stdout)
        assert "last_name='Lovelace'" in told.stdout
        assert "first_name='Ada'" in told.stdout
    as_json = json.loads((await v4.run("explain", "ada", "--json")).stdout)
    [prospect] = as_json["prospects"]
    assert prospect["prospect"] == str(ada["id"])
    by_message = {e["message_id"]: e for e in prospect["events"]}
    # Each event is credited with the values of its own that won (the later one, the email).
    assert by_message["m-2"]["fields"] == {"last_name": "Lovelace", "email": "ada@example.com"}
    assert by_message["m-1"]["fields"] == {"first_name": "Ada", "org_id": "acme"}
    # An event that reached no prospect is still explained.
    nobody = await v4.run("explain", "nobody")
    assert nobody.exit_code == 0 and "reached no prospect" in nobody.stdout
    assert "missing trait email" in nobody.stdout
    unknown = await v4.run("explain", "stranger@example.com")
    assert unknown.exit_code == 1 and "nothing known about" in unknown.stdout
    calls = v4.fake.total_calls
    await v4.run("explain", "ada")
    assert v4.fake.total_calls == calls


async def test_fields_check_lists_traits_the_account_lacks_and_status_warns(v4: Operator) -> None:
    await v4.enqueue(
        identify(1, "ada", 0, email="ada@example.com", firstName="Ada", org_Id="acme"),
        identify(2, "bob", 0, email="bob@example.com", favourite_colour="teal", plan="pro"),
    )
    await v4.deliver()
    checked = await v4.run("fields", "check")
    assert checked.exit_code == 1, checked.output
    assert re.search(r"org_Id\s+│ 1\s+│ org_id", checked.stdout)
    assert re.search(r"favourite_colour\s+│ 1\s+│ -", checked.stdout)
    assert "plan " not in checked.stdout and "first_name" not in checked.stdout
    report = json.loads((await v4.run("fields", "check", "--json")).stdout)
    assert {u["field"] for u in report["unknown"]} == {"org_Id", "favourite_colour"}

    status = await v4.run("status")
    assert status.exit_code == 0, status.output
    assert "2 trait(s) match no field" in status.stdout and "org_Id" in status.stdout

    v4.fake.custom_fields |= {"org_Id", "favourite_colour"}
    fixed = await v4.run("fields", "check")
    assert fixed.exit_code == 0 and "exists in Pardot" in fixed.stdout


async def test_status_and_status_json_show_the_figures(v4: Operator) -> None:
    await v4.enqueue(
        identify(1, "ada", 0, email="ada@example.com", firstName="Ada"),
        identify(2, "bob", 0, email="bob@example.com", firstName="Bob"),
    )
    await v4.deliver()
    await v4.enqueue(identify(3, "cy", 0, email="cy@example.com"))  # waits: nobody delivers
    result = await v4.run("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["depth"] == 1 and report["queue"]["delivered"] == 2
    assert report["oldest_pending_seconds"] is not None and report["oldest_pending_seconds"] >= 0
    assert report["deliveries_per_minute"] == 0.2  # 2 in the last 10 minutes
    assert sum(report["chart"]["delivered"]) == 2 and len(report["chart"]["minutes"]) == 60
    assert report["dead_letters"] == {"count": 0, "latest": []}
    assert report["token"]["state"] == "ok"
    budget = report["api_budget"]
    assert budget["limit"] == 25_000 and budget["used"] >= 2 and budget["resets_at"]
    # Two people on an empty account: reading them one by one is cheaper than a scan.
    assert report["index"]["complete"] is False
    assert report["fields"]["unknown"] == [] and report["fields"]["checked_at"]

    text = await v4.run("status")
    assert re.search(r"waiting \(pending, retry, leased\)\s+│ 1", text.stdout)
    assert re.search(r"Salesforce token\s+│ ok", text.stdout)

    revoked = await v4.run("status", "--json", SALESFORCE_REFRESH_TOKEN="revoked-token")
    assert json.loads(revoked.stdout)["token"]["state"] == "refused"
    none = await v4.run("status", "--json", SALESFORCE_REFRESH_TOKEN="")
    assert json.loads(none.stdout)["token"]["state"] == "not configured"


async def _save_index_state(
    v4: Operator, *, age: float, refreshes_ago: tuple[float, ...], **env: str
) -> None:
    """A complete index whose watermark's refresh began `age` seconds ago on the store's clock,
    with earlier refreshes begun `refreshes_ago` seconds ago."""
    built = v4.container(**env)
    async with opened(built):
        index = await built.prospect_index.async_()
        now = await index.clock()
        await index.save_state(
            IndexState(
                complete=True,
                high_water="2026-03-01 10:00:00",
                watermark_began=now - timedelta(seconds=age),
                recent_refreshes=tuple(now - timedelta(seconds=s) for s in refreshes_ago),
            )
        )


async def test_status_shows_the_index_age_and_refreshes_in_the_last_minute(v4: Operator) -> None:
    empty = json.loads((await v4.run("status", "--json")).stdout)["index"]
    assert empty["age_seconds"] is None and empty["refreshes_last_minute"] == 0
    assert re.search(
        r"index age\s+│ - \(no complete refresh yet\)", (await v4.run("status")).stdout
    )

    await _save_index_state(v4, age=130, refreshes_ago=(300, 130, 40, 5))
    result = await v4.run("status", "--json")
    assert result.exit_code == 0, result.output
    index = json.loads(result.stdout)["index"]
    assert 130 <= index["age_seconds"] < 150  # now on the store's clock minus the start
    assert index["refreshes_last_minute"] == 2  # 40 s and 5 s ago; 130 s and 300 s are older
    text = (await v4.run("status")).stdout
    assert re.search(r"index age\s+│ 2 min since its last refresh began", text)
    assert re.search(r"index refreshes in the last minute\s+│ 2", text)


async def test_status_reads_the_index_age_on_the_postgres_clock(
    v4: Operator, postgres_url: str
) -> None:
    await _save_index_state(v4, age=30, refreshes_ago=(30, 70), DESTINATION_QUEUE_URL=postgres_url)
    result = await v4.run("status", "--json", DESTINATION_QUEUE_URL=postgres_url)
    assert result.exit_code == 0, result.output
    index = json.loads(result.stdout)["index"]
    assert 30 <= index["age_seconds"] < 50 and index["refreshes_last_minute"] == 1


async def _record_busy(v4: Operator, seconds: float, **env: str) -> None:
    """`seconds` of busy slot time in the store's current bucket, as a deliverer records it."""
    built = v4.container(**env)
    async with opened(built):
        busy_log = await built.slot_busy_log.async_()
        await busy_log.add(int(time.time()) // SLOT_BUCKET_SECONDS * SLOT_BUCKET_SECONDS, seconds)


async def test_status_shows_how_busy_the_pardot_slots_were_in_the_last_minute(
    v4: Operator,
) -> None:
    idle = json.loads((await v4.run("status", "--json")).stdout)
    assert idle["pardot_slots_busy_ratio"] == 0.0 and idle["pardot_slots"] == 5
    assert re.search(
        r"Pardot slots busy \(last minute\)\s+│ 0% of 5", (await v4.run("status")).stdout
    )
    # 150 busy slot-seconds over 5 slots and the 60 to 70 s the last minute's buckets span.
    await _record_busy(v4, 150)
    report = json.loads((await v4.run("status", "--json")).stdout)
    assert 150 / (5 * 70) <= report["pardot_slots_busy_ratio"] <= 150 / (5 * 60)
    text = (await v4.run("status")).stdout
    shown = re.search(r"Pardot slots busy \(last minute\)\s+│ (\d+)% of 5", text)
    assert shown and 42 <= int(shown[1]) <= 50, text


async def test_status_reads_slot_use_every_node_recorded_in_postgres(
    v4: Operator, postgres_url: str
) -> None:
    await _record_busy(v4, 100, DESTINATION_QUEUE_URL=postgres_url)
    await _record_busy(v4, 50, DESTINATION_QUEUE_URL=postgres_url)  # another node, same bucket
    result = await v4.run("status", "--json", DESTINATION_QUEUE_URL=postgres_url)
    assert result.exit_code == 0, result.output
    assert 150 / (5 * 70) <= json.loads(result.stdout)["pardot_slots_busy_ratio"] <= 150 / 300
