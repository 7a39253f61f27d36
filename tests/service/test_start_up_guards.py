"""Settings that would leave the door open stop start-up with one line saying what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli.main import main
from entrypoints.config import exposure_problem, is_loopback, load_config

BASE_ENV = {"PARDOT_ACCOUNT_ID": "507251", "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("PARDOT_", "SALESFORCE_", "DESTINATION_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env or TOML file from the checkout
    monkeypatch.setenv("PARDOT_DESTINATION_CONFIG", str(tmp_path / "absent.toml"))


def serve(*args: str, **env: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["serve", "--port", "0", *args], env={**BASE_ENV, **env})
    return result.exit_code, result.output.strip().splitlines()


def test_batching_without_a_write_key_stops_start_up_with_one_line() -> None:
    code, lines = serve(DESTINATION_WEBHOOK_BATCHING="true", DESTINATION_SHARED_SECRET="s")
    assert code == 2 and len(lines) == 1
    assert "DESTINATION_WEBHOOK_BATCHING" in lines[0] and "DESTINATION_WRITE_KEY" in lines[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", ""])
@pytest.mark.parametrize("secret", [{}, {"DESTINATION_SHARED_SECRET": "s"}])
def test_listening_beyond_loopback_without_a_write_key_stops_start_up(
    host: str, secret: dict[str, str]
) -> None:
    code, lines = serve("--host", host, **secret)
    assert code == 2 and len(lines) == 1
    assert "DESTINATION_WRITE_KEY" in lines[0] and "--insecure-open" in lines[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_may_stay_keyless_for_the_demo(host: str) -> None:
    assert is_loopback(host)
    assert exposure_problem(host, load_config(**BASE_ENV), insecure_open=False) is None


def test_a_write_key_or_insecure_open_allows_any_host() -> None:
    keyed = load_config(**BASE_ENV, DESTINATION_WRITE_KEY="k")
    assert exposure_problem("0.0.0.0", keyed, insecure_open=False) is None
    keyless = load_config(**BASE_ENV)
    assert exposure_problem("0.0.0.0", keyless, insecure_open=True) is None
    assert exposure_problem("0.0.0.0", keyless, insecure_open=False) is not None


def test_the_new_settings_are_read_by_their_names() -> None:
    config = load_config(**BASE_ENV, DESTINATION_WRITE_KEY="k", DESTINATION_WEBHOOK_BATCHING="1")
    assert config.webhook_batching is True
    assert load_config(**BASE_ENV).webhook_batching is False
