"""`pardot-destination connect`: sign in to Salesforce once, keep the refresh token, test Pardot.

The OAuth 2.0 web-server flow with PKCE: print (and open) the authorize URL, wait on a local
callback for the code, check `state`, exchange the code, store the refresh token with mode
0600, then make one real Pardot call to say which API version answers or exactly what is
wrong. The exchange and the call are the OAuth adapter's, taken from the container; this
module keeps the command's flow, its callback page and what it tells the person at the
terminal. The core is `run_connect`, testable without click; the click command is a shell.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from aiohttp import web

from domain.errors import ConfigurationError, PardotError, RetryableError
from entrypoints.container import Container

log = logging.getLogger(__name__)

DEFAULT_LOGIN_URL = "https://login.salesforce.com"
DEFAULT_PARDOT_URL = "https://pi.pardot.com"
SANDBOX_LOGIN_URL = "https://test.salesforce.com"
SANDBOX_PARDOT_URL = "https://pi.demo.pardot.com"
CALLBACK_PATH = "/callback"
CALLBACK_HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 300.0

# What two answers mean right after a sign-in; the repository's error table explains the rest.
TEST_CALL_HINTS: dict[int, str] = {
    184: (
        "Pardot refused the new access token: give the connected app the pardot_api scope "
        "and the Salesforce user access to Account Engagement"
    ),
    122: "the business unit's daily API limit is spent; the sign-in itself worked",
}


class ConnectError(Exception):
    """Connecting failed; the message says what happened and what to do."""


@dataclass(frozen=True)
class ConnectionCheck:
    """The result of one real Pardot call made with the new token."""

    api_version: int | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ConnectResult:
    token_file: Path
    redirect_uri: str
    instance_url: str
    check: ConnectionCheck | None  # None when no business unit id was given


async def run_connect(
    *,
    client_id: str,
    client_secret: str,
    business_unit_id: str | None,
    login_url: str = DEFAULT_LOGIN_URL,
    pardot_url: str = DEFAULT_PARDOT_URL,
    token_file: str | Path | None = None,
    port: int = 0,
    callback_timeout: float = DEFAULT_TIMEOUT,
    open_url: Callable[[str], object] | None = None,
    echo: Callable[[str], object] = click.echo,
    container: Container | None = None,
) -> ConnectResult:
    """Run the whole flow; raises ConnectError when no refresh token could be stored."""
    container = container or Container()
    login = login_url.rstrip("/")
    store = container.token_store(token_file)
    state = secrets.token_urlsafe(32)
    callback = _Callback(state)
    runner = web.AppRunner(callback.app(), access_log=None)  # the callback URL holds the code
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, CALLBACK_HOST, port).start()
        except OSError as error:
            raise ConnectError(
                f"cannot listen on {CALLBACK_HOST}:{port} ({error.strerror}): choose another --port"
            ) from None
        bound = runner.addresses[0][1]
        redirect_uri = f"http://{CALLBACK_HOST}:{bound}{CALLBACK_PATH}"
        async with container.sign_in(
            login_url=login,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
        ) as sign_in:
            authorize_url = sign_in.authorize_url(state)
            echo(f"Callback URL (register it in the connected app): {redirect_uri}")
            if port == 0:
                echo("  (the port was picked at random: pass --port to keep it the same)")
            echo(f"Open this URL to sign in to Salesforce:\n\n  {authorize_url}\n")
            if open_url is not None:
                open_url(authorize_url)
            code = await _wait_for_code(callback, redirect_uri, callback_timeout)
            try:
                signed_in = await sign_in.exchange(code)
            except RetryableError as error:
                raise ConnectError(
                    f"{error} at {login}: check SALESFORCE_LOGIN_URL (--login-url, --sandbox)"
                ) from None
            except ConfigurationError as error:
                raise ConnectError(str(error)) from None
    finally:
        await runner.cleanup()

    tokens = signed_in.tokens
    try:
        store.save(tokens)
    except OSError as error:
        raise ConnectError(
            f"cannot write the token file {store.path} ({error.strerror}): "
            "choose another --token-file"
        ) from None
    where = tokens.instance_url or login
    echo(f"Signed in to {where}; refresh token saved to {store.path} (mode 0600)")

    check = None
    if business_unit_id:
        check = await _test_call(container, pardot_url, signed_in.access_token, business_unit_id)
    return ConnectResult(store.path, redirect_uri, tokens.instance_url, check)


async def _test_call(
    container: Container, pardot_url: str, access_token: str, business_unit_id: str
) -> ConnectionCheck:
    """Ask Pardot which API version answers the new token, as the service will."""
    base = pardot_url.rstrip("/")
    try:
        version: int = await container.pardot_test_call(
            pardot_url=base, business_unit_id=business_unit_id, access_token=access_token
        )
    except httpx.HTTPError as error:
        return ConnectionCheck(
            None,
            f"cannot reach Pardot at {base} ({type(error).__name__}): check "
            "PARDOT_BASE_URL (--pardot-url, --sandbox)",
        )
    except PardotError as error:
        if error.code is None and not isinstance(error, ConfigurationError):
            # Not an answer in Pardot's words: probably not Pardot at all.
            return ConnectionCheck(None, f"{error}: check PARDOT_BASE_URL (--pardot-url)")
        hint = TEST_CALL_HINTS.get(error.code or 0)
        return ConnectionCheck(None, f"{error}" + (f"; {hint}" if hint else ""))
    return ConnectionCheck(version)


class _Callback:
    """The local page Salesforce redirects the browser to, with the code and our state."""

    def __init__(self, state: str) -> None:
        self._state = state
        self.answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(CALLBACK_PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query
        if self.answer.done():
            return _page(409, "This sign-in was already handled. Return to the terminal.")
        if not secrets.compare_digest(query.get("state", "").encode(), self._state.encode()):
            # Anyone who can reach the port may call it: a forged or stale callback must not
            # end the real sign-in, which is still on its way.
            log.warning(
                "ignored a callback whose state does not match this sign-in "
                "(a stale browser tab or a forged request); still waiting for the sign-in"
            )
            return _page(400, "This is not the sign-in in progress. Return to the terminal.")
        if "error" in query:
            description = query.get("error_description", "")
            self.answer.set_exception(
                ConnectError(
                    f"Salesforce refused the sign-in: {query['error']}"
                    + (f" ({description})" if description else "")
                )
            )
            return _page(400, "Salesforce refused the sign-in. Return to the terminal.")
        code = query.get("code", "")
        if not code:
            self.answer.set_exception(ConnectError("the callback carried no authorization code"))
            return _page(400, "No authorization code arrived. Return to the terminal.")
        self.answer.set_result(code)
        return _page(200, "Connected to Salesforce. You can close this tab.")


async def _wait_for_code(callback: _Callback, redirect_uri: str, seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            return await callback.answer
    except TimeoutError:
        raise ConnectError(
            f"no sign-in arrived at {redirect_uri} within {seconds:g} s: open the URL above in "
            "a browser on this machine (or raise --timeout)"
        ) from None


def _page(status: int, text: str) -> web.Response:
    html = (
        "<!doctype html><meta charset='utf-8'><title>pardot-destination</title>"
        f"<p style='font-family:sans-serif'>{text}</p>"
    )
    return web.Response(status=status, text=html, content_type="text/html")


def open_in_browser(url: str) -> None:
    """Open `url` without waiting: a console browser could otherwise hold the flow."""
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


@click.command("connect")
@click.option(
    "--client-id",
    envvar="SALESFORCE_CLIENT_ID",
    prompt="Connected app consumer key (client id)",
    help="The connected app's consumer key. [env: SALESFORCE_CLIENT_ID]",
)
@click.option(
    "--client-secret",
    envvar="SALESFORCE_CLIENT_SECRET",
    prompt="Connected app consumer secret",
    hide_input=True,
    help="The connected app's consumer secret; asked for when missing. "
    "[env: SALESFORCE_CLIENT_SECRET]",
)
@click.option(
    "--business-unit-id",
    envvar="PARDOT_BUSINESS_UNIT_ID",
    default=None,
    help="The Pardot business unit (0Uv…) to test the connection with. "
    "[env: PARDOT_BUSINESS_UNIT_ID]",
)
@click.option(
    "--login-url",
    envvar="SALESFORCE_LOGIN_URL",
    default=DEFAULT_LOGIN_URL,
    show_default=True,
    help="Salesforce login host. [env: SALESFORCE_LOGIN_URL]",
)
@click.option(
    "--pardot-url",
    envvar="PARDOT_BASE_URL",
    default=DEFAULT_PARDOT_URL,
    show_default=True,
    help="Pardot API host. [env: PARDOT_BASE_URL]",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help=f"Use a sandbox: {SANDBOX_LOGIN_URL} and {SANDBOX_PARDOT_URL}.",
)
@click.option(
    "--token-file",
    envvar="SALESFORCE_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to store the refresh token (mode 0600). "
    "[default: ~/.config/pardot-destination/tokens.json; env: SALESFORCE_TOKEN_FILE]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    # Salesforce only redirects to the exact callback URL registered in the connected app,
    # so the default is a fixed port; 0 picks a free one (register the URL it prints).
    default=8787,
    show_default=True,
    help="Local callback port; 0 picks a free one.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the browser to come back.",
)
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@click.pass_context
def connect(
    ctx: click.Context,
    client_id: str,
    client_secret: str,
    business_unit_id: str | None,
    login_url: str,
    pardot_url: str,
    sandbox: bool,
    token_file: Path | None,
    port: int,
    timeout: float,
    no_browser: bool,
) -> None:
    """Connect to Pardot: sign in with Salesforce once and store the refresh token."""
    if sandbox:
        for name in ("login_url", "pardot_url"):
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--sandbox and --{name.replace('_', '-')} contradict")
        login_url, pardot_url = SANDBOX_LOGIN_URL, SANDBOX_PARDOT_URL
    if not no_browser:
        click.echo("Opening the sign-in page in your browser (--no-browser to skip).")
    try:
        result = asyncio.run(
            run_connect(
                client_id=client_id,
                client_secret=client_secret,
                business_unit_id=business_unit_id,
                login_url=login_url,
                pardot_url=pardot_url,
                token_file=token_file,
                port=port,
                callback_timeout=timeout,
                open_url=None if no_browser else open_in_browser,
            )
        )
    except (ConnectError, ConfigurationError) as error:
        raise click.ClickException(str(error)) from None
    if result.check is None:
        click.echo(
            "Connection to Pardot not tested: give --business-unit-id "
            "(or set PARDOT_BUSINESS_UNIT_ID) to test it."
        )
        return
    if result.check.ok:
        click.echo(
            f"Connected to Pardot: API version {result.check.api_version} works for business "
            f"unit {business_unit_id} (PARDOT_API_VERSION={result.check.api_version})."
        )
        return
    raise click.ClickException(
        f"signed in, but the Pardot test call failed: {result.check.problem}"
    )
