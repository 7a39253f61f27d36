"""The command line: start-up errors in one line, dry runs, queue inspection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli.main import main

BASE_ENV = {"PARDOT_ACCOUNT_ID": "507251", "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PARDOT_", "SALESFORCE_", "DESTINATION_")):
            monkeypatch.delenv(name)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env or TOML file from the checkout
    return {**BASE_ENV, "DESTINATION_QUEUE_URL": f"sqlite:///{tmp_path / 'q.db'}"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"PARDOT_ACCOUNT_ID": ""}, "PARDOT_ACCOUNT_ID"),
        ({"PARDOT_BUSINESS_UNIT_ID": "0Uv1"}, "PARDOT_BUSINESS_UNIT_ID"),
        ({"PARDOT_API_VERSION": "5"}, "PARDOT_API_VERSION"),
        ({"PARDOT_CREATE_CAMPAIGN_ID": "x1"}, "PARDOT_CREATE_CAMPAIGN_ID"),
        ({"DESTINATION_QUEUE_URL": "postgres://x"}, "DESTINATION_QUEUE_URL"),
        ({"PARDOT_TRACKER_URL": "pi.pardot.com/pd.js"}, "PARDOT_TRACKER_URL"),
        ({"DESTINATION_MAX_ATTEMPTS": "0"}, "DESTINATION_MAX_ATTEMPTS"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    env: dict[str, str], change: dict[str, str], named: str
) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "0"], env={**env, **change})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output


def test_plan_is_a_dry_run_with_reasons(env: dict[str, str]) -> None:
    events = [
        {"type": "identify", "messageId": "a", "userId": "u", "traits": {"email": "a@x.io"}},
        {
            "type": "identify",
            "messageId": "b",
            "userId": "u",
            "traits": {},
            "integrations": {"Pardot": {"fid": "003000000000000AAA"}},
        },
        {"type": "track", "messageId": "c", "userId": "u", "event": "x"},
        ["not", "an", "event"],
    ]
    result = CliRunner().invoke(
        main, ["plan", "-"], input=json.dumps(events), env={**env, "PARDOT_API_VERSION": "4"}
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.strip().splitlines()]
    assert [row[1] for row in rows] == ["MatchPerson", "UpsertByFid", "Skip", "Reject"]
    assert rows[3][2].startswith("rejected: invalid event")


def test_status_and_dead_letters_read_the_queue(env: dict[str, str]) -> None:
    runner = CliRunner()
    status = runner.invoke(main, ["status"], env=env)
    assert status.exit_code == 0 and "pending" in status.output
    dead = runner.invoke(main, ["requeue-dead"], env=env)
    assert dead.exit_code == 0 and "0 event(s) requeued" in dead.output


def test_settings_may_come_from_a_toml_file_or_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pardot-destination.toml").write_text(
        'pardot_account_id = "42"\npardot_api_version = "3"\n'
    )
    (tmp_path / ".env").write_text("PARDOT_BUSINESS_UNIT_ID=0Uv000000000001AAA\n")
    event = {"type": "identify", "userId": "u", "traits": {"email": "a@x.io"}}
    result = CliRunner().invoke(main, ["plan", "-"], input=json.dumps(event), env={})
    assert result.exit_code == 0, result.output
    assert "\tUpsertByEmail\t" in result.output
