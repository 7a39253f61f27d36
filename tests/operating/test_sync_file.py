"""`sync FILE`: backfills through the service's domain and store, every exit status."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from entrypoints.cli import sync_file
from entrypoints.cli.demo import seed_examples
from entrypoints.container import opened
from tests.operating.conftest import Operator, identify


def _row(output: str, outcome: str) -> int:
    match = re.search(rf"│ {re.escape(outcome)}\s+│ ([\d,]+)\s+│", output)
    assert match is not None, output
    return int(match.group(1).replace(",", ""))


async def test_a_file_is_delivered_and_summarised_and_a_rerun_is_not_deduplicated(
    v4: Operator,
) -> None:
    path = v4.write(
        "people.ndjson",
        [
            identify(1, "ada", 0, email="ada@example.com", firstName="Ada"),
            identify(2, "bob", 0, email="bob@example.com", firstName="Bob"),
            identify(3, "ada", 5, email="ada@example.com", lastName="Lovelace"),
            {"type": "track", "messageId": "m-4", "userId": "ada", "event": "Clicked"},
        ],
    )
    result = await v4.run("sync", str(path))
    assert result.exit_code == 0, result.output
    assert _row(result.stdout, "delivered") == 3 and _row(result.stdout, "skipped") == 1
    assert _row(result.stdout, "rejected") == 0 and _row(result.stdout, "events read") == 4
    assert _row(result.stdout, "Pardot calls used") > 0
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    assert (ada["first_name"], ada["last_name"]) == ("Ada", "Lovelace")
    assert len(v4.fake.prospects_by_email("bob@example.com")) == 1

    calls = v4.fake.total_calls
    again = await v4.run("sync", str(path))
    assert again.exit_code == 0, again.output
    # Not the queue: the same messageIds run again (nothing is thrown away as a duplicate).
    handled = _row(again.stdout, "delivered") + _row(again.stdout, "unchanged")
    assert handled == 3 and _row(again.stdout, "skipped") == 1
    assert v4.fake.total_calls > calls
    assert len(v4.fake.prospects_by_email("ada@example.com")) == 1


async def test_a_json_array_and_stdin_are_read_too(v4: Operator) -> None:
    array = v4.write(
        "array.json", [identify(1, "ada", email="ada@example.com", firstName="Ada")], array=True
    )
    result = await v4.run("sync", str(array))
    assert result.exit_code == 0, result.output
    assert _row(result.stdout, "delivered") == 1
    piped = json.dumps(identify(2, "cy", email="cy@example.com", firstName="Cy")) + "\n"
    result = await v4.run("sync", "-", input=piped)
    assert result.exit_code == 0, result.output
    assert v4.fake.prospects_by_email("cy@example.com")[0]["first_name"] == "Cy"


async def test_exit_1_when_any_event_is_rejected_with_the_reasons(v4: Operator) -> None:
    path = v4.tmp / "mixed.ndjson"
    path.write_text(
        json.dumps(identify(1, "ada", email="ada@example.com")) + "\n"
        "{this is not json}\n"
        + json.dumps(identify(3, "nobody", firstName="No email")) + "\n"
    )  # fmt: skip
    result = await v4.run("sync", str(path))
    assert result.exit_code == 1, result.output
    assert _row(result.stdout, "delivered") == 1 and _row(result.stdout, "rejected") == 2
    assert "line 2: not JSON" in result.stdout
    assert "missing trait email" in result.stdout


async def test_exit_1_when_retryable_failures_outlast_the_tries(v4: Operator) -> None:
    path = v4.write("one.ndjson", [identify(1, "ada", email="ada@example.com")])
    v4.fake.fail_next(50, err_code=85)  # "unable to save": retryable, every time
    result = await v4.run("sync", str(path))
    assert result.exit_code == 1, result.output
    assert _row(result.stdout, "given up") == 1
    assert "Pardot error 85" in result.stdout


async def test_exit_3_at_the_daily_limit_says_how_far_and_a_rerun_resumes(
    v4: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_file, "BATCH", 2)  # small batches, so the stop falls mid-file
    events = [identify(i, f"u{i}", email=f"u{i}@example.com", firstName=f"U{i}") for i in range(8)]
    path = v4.write("big.ndjson", events)
    # Each new person costs a read by email and a create: 4 people fit, the 5th is read only.
    v4.fake.daily_budget = 9
    stopped = await v4.run("sync", str(path))
    assert stopped.exit_code == 3, stopped.output
    assert "stopped by Pardot's daily API limit after event 4 (line 4)" in stopped.stderr
    assert "resumes where it stopped" in stopped.stderr
    delivered = _row(stopped.stdout, "delivered")
    assert delivered == 4

    # Until the account's midnight the service is paused too: a re-run stops at once.
    calls = v4.fake.total_calls
    early = await v4.run("sync", str(path))
    assert early.exit_code == 3 and v4.fake.total_calls == calls

    # Midnight: the budget resets and the pause it set on the queue is over.
    v4.fake.reset_daily_budget()
    built = v4.container()
    async with opened(built):
        await (await built.queue.async_()).pause_until(datetime.now(UTC) - timedelta(seconds=1))
    resumed = await v4.run("sync", str(path))
    assert resumed.exit_code == 0, resumed.output
    assert _row(resumed.stdout, "done by an earlier run") == delivered
    assert _row(resumed.stdout, "delivered") == 8 - delivered
    for i in range(8):
        assert len(v4.fake.prospects_by_email(f"u{i}@example.com")) == 1
    # Finished: the next run of the file starts from the top again.
    last = await v4.run("sync", str(path))
    assert "done by an earlier run" not in last.stdout


async def test_exit_2_on_usage_and_setup_errors(v4: Operator) -> None:
    missing = await v4.run("sync", str(v4.tmp / "absent.ndjson"))
    assert missing.exit_code == 2 and "cannot read" in missing.output
    path = v4.write("one.ndjson", [identify(1, "ada", email="ada@example.com")])
    auto = await v4.run("sync", "--dry-run", str(path), PARDOT_API_VERSION="auto")
    assert auto.exit_code == 2 and "PARDOT_API_VERSION" in auto.output
    bad = await v4.run("sync", str(path), PARDOT_BUSINESS_UNIT_ID="0Uv1")
    assert bad.exit_code == 2 and "PARDOT_BUSINESS_UNIT_ID" in bad.output
    keyless = await v4.run("sync", str(path), SALESFORCE_REFRESH_TOKEN="")
    assert keyless.exit_code == 2 and "no Salesforce credentials" in keyless.output
    assert v4.fake.total_calls == 0


async def test_the_dry_run_of_the_seed_examples_makes_no_pardot_call(v4: Operator) -> None:
    path = v4.write("seed.ndjson", seed_examples())
    result = await v4.run("sync", "--dry-run", str(path))
    assert result.exit_code == 1, result.output  # the seed's nameless event is rejected
    assert v4.fake.total_calls == 0 and v4.fake.token_requests == 0
    lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    kinds = {row[1]: row[2] for row in lines}
    assert kinds == {
        "demo-1": "unknown",  # nothing known yet: only Pardot can say who has tom@
        "demo-2": "unknown",
        "demo-3": "unknown",
        "demo-5": "unknown",
        "demo-4": "unknown",
        "demo-6": "skipped",
        "demo-7": "rejected",
        "demo-8": "skipped",
    }
    texts = {row[1]: row[3] for row in lines}
    assert "needs Pardot: find the prospects with email tom@initech.example" in texts["demo-1"]
    assert "would write" in texts["demo-1"] and "job_title" in texts["demo-1"]
    assert "fid 00Q5e00000AbCdEfGH" in texts["demo-3"]
    assert _row(result.stdout, "Pardot calls used") == 0

    # Once delivered, the store knows them: the same dry run names the prospects.
    await v4.run("sync", str(path))
    calls = v4.fake.total_calls
    after = await v4.run("sync", "--dry-run", str(path))
    assert v4.fake.total_calls == calls
    rows = {
        line.split("\t")[1]: line.split("\t") for line in after.stdout.splitlines() if "\t" in line
    }
    [tom] = v4.fake.prospects_by_email("tom@initech.example")
    assert rows["demo-1"][2] == "unchanged" and f"prospect {tom['id']}" in rows["demo-1"][3]
    changed = identify(9, "f4ca124298", email="tom@initech.example", title="Boss")
    changed["timestamp"] = datetime.now(UTC).isoformat()  # later than anything written
    more = v4.write("more.ndjson", [changed])
    update = await v4.run("sync", "--dry-run", str(more))
    assert f"1\tm-9\tupdate\tupdate prospect {tom['id']} (linked to user id): job_title" in (
        update.stdout
    )
    assert v4.fake.total_calls == calls


async def test_the_v3_dry_run_says_upserts_need_pardot_until_the_store_knows(v3: Operator) -> None:
    path = v3.write("seed.ndjson", seed_examples()[:2])
    result = await v3.run("sync", "--dry-run", str(path))
    assert result.exit_code == 0, result.output
    assert "needs Pardot: upsert by email tom@initech.example" in result.stdout
    await v3.run("sync", str(path))
    after = await v3.run("sync", "--dry-run", str(path))
    assert "unchanged\tprospect email:tom@initech.example" in after.stdout


async def test_a_backfill_records_its_busy_pardot_slot_time_for_status(v4: Operator) -> None:
    path = v4.write("people.ndjson", [identify(1, "ada", 0, email="ada@example.com")])
    v4.fake.latency = 0.2  # each call holds its slot a while
    result = await v4.run("sync", str(path))
    assert result.exit_code == 0, result.output
    built = v4.container()
    async with opened(built):
        busy_log = await built.slot_busy_log.async_()
        # At least one call's 0.2 s in a slot, recorded in the store when the run ended.
        assert await busy_log.busy(0, 10**10) >= 0.2
