"""`pardot-destination connect` end to end against the fake Salesforce and Pardot."""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from adapters.salesforce.token_file import TokenStore
from adapters.salesforce.token_providers import RefreshTokenProvider
from contracts.fake_pardot import FakePardot, RunningFakePardot, running_fake_pardot
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from entrypoints.cli.connect import ConnectError, ConnectionCheck, connect, run_connect
from tests.oauth.browser import Browser, visit
from tests.oauth.conftest import CLIENT_ID, CLIENT_SECRET, chosen_tokens, refresh_works


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def file_exists(path: Path) -> bool:
    return path.exists()


async def connect_to(
    server: RunningFakePardot, token_file: Path, browser: Browser | None, **options: object
) -> tuple[object, list[str]]:
    lines: list[str] = []
    settings: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "business_unit_id": DEFAULT_BUSINESS_UNIT_ID,
        "login_url": server.url,
        "pardot_url": server.url,
        "token_file": token_file,
        "callback_timeout": 5.0,
        "open_url": browser,
        "echo": lines.append,
    }
    settings.update(options)
    result = await run_connect(**settings)  # type: ignore[arg-type]
    return result, lines


async def test_connect_stores_a_working_refresh_token_and_tests_pardot(
    server: RunningFakePardot, fake: FakePardot, http: httpx.AsyncClient, token_file: Path
) -> None:
    browser = Browser()
    result, lines = await connect_to(server, token_file, browser)

    page = await browser.last_visit()
    assert page.status == 200 and "close this tab" in page.text
    # The authorize URL asks for what Pardot needs, with state and PKCE.
    [url] = browser.opened
    assert url.startswith(f"{server.url}/services/oauth2/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    redirect_uri = query["redirect_uri"]
    assert redirect_uri.startswith("http://127.0.0.1:") and redirect_uri.endswith("/callback")
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["scope"] == "pardot_api refresh_token"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32
    assert any(redirect_uri in line for line in lines)  # what to register in the app
    assert any(url in line for line in lines)

    assert file_mode(token_file) == 0o600
    stored = TokenStore(token_file).load()
    assert stored is not None
    assert stored.client_id == CLIENT_ID and stored.login_url == server.url
    assert stored.instance_url == server.url and stored.issued_at.isdigit()
    assert await refresh_works(http, server.url, stored.refresh_token)

    assert result.check == ConnectionCheck(api_version=4)  # type: ignore[attr-defined]
    assert result.token_file == token_file  # type: ignore[attr-defined]
    # The service picks the stored token up from the file.
    tokens = chosen_tokens(
        login_url=None,
        client_id=None,
        client_secret=CLIENT_SECRET,
        refresh_token=None,
        token_file=token_file,
    )
    assert isinstance(tokens, RefreshTokenProvider)
    assert await tokens.token() in fake.access_tokens


async def test_connect_detects_a_version_3_account(
    server: RunningFakePardot, fake: FakePardot, token_file: Path
) -> None:
    fake.version = 3
    result, _ = await connect_to(server, token_file, Browser())
    assert result.check == ConnectionCheck(api_version=3)  # type: ignore[attr-defined]


async def test_a_wrong_business_unit_is_reported_precisely(
    server: RunningFakePardot, token_file: Path
) -> None:
    result, _ = await connect_to(
        server, token_file, Browser(), business_unit_id="0Uv000000000009AAA"
    )
    check = result.check  # type: ignore[attr-defined]
    assert check.api_version is None
    assert check.problem.startswith("Pardot error 201: ")
    assert "check PARDOT_BUSINESS_UNIT_ID" in check.problem
    assert TokenStore(token_file).load() is not None  # the sign-in itself is kept


async def test_connect_without_business_unit_skips_the_test(
    server: RunningFakePardot, token_file: Path
) -> None:
    result, _ = await connect_to(server, token_file, Browser(), business_unit_id=None)
    assert result.check is None  # type: ignore[attr-defined]
    assert TokenStore(token_file).load() is not None


async def test_a_callback_with_a_wrong_state_is_refused_and_the_wait_goes_on(
    server: RunningFakePardot, token_file: Path
) -> None:
    browser = Browser(tamper_state=True)
    with pytest.raises(ConnectError, match=r"within 0\.5 s"):
        await connect_to(server, token_file, browser, callback_timeout=0.5)
    assert (await browser.last_visit()).status == 400
    assert not file_exists(token_file)


async def test_a_forged_callback_does_not_abort_the_real_sign_in(
    server: RunningFakePardot, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    browser = Browser(forge_first=True)
    result, _ = await connect_to(server, token_file, browser)
    visit_ = await browser.last_visit()
    assert visit_.forged_status == 400 and visit_.status == 200
    assert TokenStore(token_file).load() is not None
    assert result.check is not None and result.check.ok  # type: ignore[attr-defined]
    assert "state does not match" in caplog.text and "attacker-code" not in caplog.text


async def test_a_denied_sign_in_is_reported(server: RunningFakePardot, token_file: Path) -> None:
    with pytest.raises(ConnectError, match="access_denied"):
        await connect_to(server, token_file, Browser(deny=True))
    assert not file_exists(token_file)


async def test_no_browser_coming_back_times_out(
    server: RunningFakePardot, token_file: Path
) -> None:
    with pytest.raises(ConnectError, match=r"within 0\.2 s"):
        await connect_to(server, token_file, None, callback_timeout=0.2)


async def test_a_wrong_client_secret_is_reported(
    server: RunningFakePardot, token_file: Path
) -> None:
    with pytest.raises(ConnectError, match="SALESFORCE_CLIENT_SECRET") as caught:
        await connect_to(server, token_file, Browser(), client_secret="not-the-secret")
    assert "not-the-secret" not in str(caught.value)


async def test_a_busy_callback_port_is_reported(
    server: RunningFakePardot, token_file: Path
) -> None:
    port = int(server.url.rsplit(":", 1)[1])  # the fake holds it
    with pytest.raises(ConnectError, match="choose another --port"):
        await connect_to(server, token_file, None, port=port)


# ---- the click command, in a thread of its own like a terminal ---------------------------


@pytest.fixture
def threaded_fake() -> Iterator[tuple[FakePardot, str]]:
    fake = FakePardot(version=4)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        async with running_fake_pardot(fake) as running:
            holder["url"] = running.url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield fake, str(holder["url"])
    finally:
        stop = holder["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SALESFORCE_CLIENT_ID",
        "SALESFORCE_CLIENT_SECRET",
        "SALESFORCE_LOGIN_URL",
        "SALESFORCE_TOKEN_FILE",
        "PARDOT_BASE_URL",
        "PARDOT_BUSINESS_UNIT_ID",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_cli_command_connects_and_reports_the_api_version(
    threaded_fake: tuple[FakePardot, str],
    token_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: None,
) -> None:
    fake, url = threaded_fake
    visits: list[int] = []

    def open_browser(target: str) -> bool:
        visits.append(asyncio.run(visit(target)).status)
        return True

    monkeypatch.setattr("webbrowser.open", open_browser)
    monkeypatch.setenv("PARDOT_BUSINESS_UNIT_ID", DEFAULT_BUSINESS_UNIT_ID)
    args = ["--client-id", CLIENT_ID, "--login-url", url, "--pardot-url", url]
    args += ["--token-file", str(token_file), "--timeout", "5", "--port", "0"]

    result = CliRunner().invoke(connect, args, input=CLIENT_SECRET + "\n")

    assert result.exit_code == 0, result.output
    assert visits == [200]
    assert "Connected to Pardot: API version 4 works" in result.output
    assert "consumer secret" in result.output  # it was asked for ...
    assert CLIENT_SECRET not in result.output  # ... without echoing it
    stored = TokenStore(token_file).load()
    assert stored is not None and stored.refresh_token in fake.refresh_tokens
    assert stored.refresh_token not in result.output


def test_the_cli_reports_a_failed_pardot_test_and_exits_non_zero(
    threaded_fake: tuple[FakePardot, str],
    token_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: None,
) -> None:
    _, url = threaded_fake
    monkeypatch.setattr("webbrowser.open", lambda target: asyncio.run(visit(target)) and True)
    args = ["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--login-url", url]
    args += ["--pardot-url", url, "--token-file", str(token_file), "--timeout", "5"]
    args += ["--business-unit-id", "0Uv000000000009AAA", "--port", "0"]

    result = CliRunner().invoke(connect, args)

    assert result.exit_code == 1
    assert "Pardot error 201" in result.output
    assert "check PARDOT_BUSINESS_UNIT_ID" in result.output


def test_sandbox_contradicting_an_explicit_host_is_a_usage_error(clean_env: None) -> None:
    args = ["--client-id", "x", "--client-secret", "y", "--sandbox"]
    result = CliRunner().invoke(connect, [*args, "--login-url", "https://login.salesforce.com"])
    assert result.exit_code == 2 and "--sandbox" in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(connect, ["--help"])
    for option in (
        "--client-id",
        "--client-secret",
        "--business-unit-id",
        "--login-url",
        "--pardot-url",
        "--sandbox",
        "--token-file",
        "--port",
        "--timeout",
        "--no-browser",
    ):
        assert option in result.output
