"""Salesforce OAuth token providers for Pardot calls.

Salesforce tokens carry no `expires_in`: a token lives as long as the org's session timeout,
so a token is cached in memory, shared by every request of the process, until Pardot refuses
it (error 184) and `invalidate(stale)` is called. Fetches are single-flight: however many
calls saw the same refused token at once, one token request happens and they all get its
result (or its error).

Nothing here logs, reprs or raises with a token, a secret or a private key in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from adapters.salesforce.token_file import DEFAULT_TOKEN_FILE, TokenStore
from domain.errors import ConfigurationError, RetryableError

# Authlib 1.9 prefers httpx2 and warns, on every CLI start, when it falls back to httpx,
# which this project uses throughout. The warning is for us, not for operators: silence
# just that one message here, and import authlib's httpx clients from this module.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncAssertionClient, AsyncOAuth2Client

__all__ = [
    "FORM_CLIENT_AUTH",
    "JWT_BEARER_GRANT",
    "AsyncOAuth2Client",
    "JwtBearerProvider",
    "OAuthError",
    "RefreshTokenProvider",
    "StaticTokenProvider",
]

log = logging.getLogger(__name__)

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
BUSY_REFRESH = "token request is already being processed"
# Client id and secret in the form body, as Salesforce documents its token requests.
FORM_CLIENT_AUTH = "client_secret_post"
# Salesforce wants a JWT bearer assertion to expire within three minutes.
JWT_ASSERTION_LIFETIME = 180
TOKEN_REQUEST_TIMEOUT = 30.0
CONNECT_COMMAND = "pardot-destination connect"


class StaticTokenProvider:
    """A fixed access token: for tests and short experiments."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenProvider(<token hidden>)"

    async def token(self) -> str:
        return self._token

    async def invalidate(self, stale: str | None = None) -> None:
        """A static token cannot be renewed; the next call fails the same way."""


class _CachedTokenProvider:
    """One access token per process, fetched single-flight by a subclass's `_fetch()`."""

    def __init__(self) -> None:
        self._access: str | None = None
        self._pending: asyncio.Future[str] | None = None
        self.fetches = 0  # successful token requests, for tests and metrics

    async def token(self) -> str:
        access = self._access
        if access is not None:
            return access
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._fetch_once())
            pending.add_done_callback(_consume_exception)
        # Shielded: one caller giving up (a cancelled request) must not cancel the fetch
        # every other caller is waiting for.
        return await asyncio.shield(pending)

    async def invalidate(self, stale: str | None = None) -> None:
        """Forget `stale` if it is still the current token; a newer one is kept."""
        if stale is None or stale == self._access:
            self._access = None

    async def _fetch_once(self) -> str:
        try:
            access = await self._fetch()
        finally:
            self._pending = None
        self._access = access
        self.fetches += 1
        return access

    async def _fetch(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class RefreshTokenProvider(_CachedTokenProvider):
    """Access tokens from a Salesforce refresh token (web-server flow, connected app).

    `on_rotation` is called with a new refresh token when the org rotates them, so the
    caller can persist it at once (the old one stops working). `reload` returns the refresh
    token stored now: when Salesforce rejects ours, a newer stored one (written by
    `pardot-destination connect`, or rotated by another process) is tried before giving up,
    so deliveries resume without a restart.
    """

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        on_rotation: Callable[[str], Awaitable[None]] | None = None,
        busy_retries: int = 3,
        busy_wait: float = 0.2,
        reload: Callable[[], str | None] | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = TOKEN_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__()
        self._token_url = login_url.rstrip("/") + TOKEN_PATH
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._on_rotation = on_rotation
        self._busy_retries = busy_retries
        self._busy_wait = busy_wait
        self._reload = reload
        self._token_file = None if token_file is None else Path(token_file)
        self._timeout = timeout

    @classmethod
    def kept_in(
        cls,
        store: TokenStore,
        *,
        login_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        instance_url: str = "",
    ) -> RefreshTokenProvider:
        """A provider that saves rotated refresh tokens to `store` at once, and that tries
        the one stored there when Salesforce rejects its own (written by `connect`, or
        rotated by another process)."""

        async def save_rotation(rotated: str) -> None:
            await asyncio.to_thread(
                store.save_refresh_token,
                rotated,
                login_url=login_url,
                client_id=client_id,
                instance_url=instance_url,
            )

        return cls(
            login_url=login_url,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            on_rotation=save_rotation,
            reload=store.refresh_token,
            token_file=store.path,
        )

    def __repr__(self) -> str:
        return f"RefreshTokenProvider({self._token_url!r}, <secrets hidden>)"

    @property
    def refreshes(self) -> int:
        return self.fetches

    async def _fetch(self) -> str:
        busy = 0
        while True:
            try:
                token = await self._request(self._refresh_token)
            except OAuthError as error:
                description = str(error.description or "")
                if error.error == "invalid_grant" and BUSY_REFRESH in description:
                    if busy < self._busy_retries:
                        busy += 1
                        log.info("Salesforce is refreshing this token already; waiting")
                        await asyncio.sleep(self._busy_wait * busy)
                        continue
                    raise RetryableError(
                        "Salesforce kept answering that a refresh of this token is already "
                        "being processed; will try again"
                    ) from None
                if error.error == "invalid_grant" and await self._take_newer_refresh_token():
                    continue
                raise self._refused(str(error.error), description) from None
            break
        rotated = token.get("refresh_token")
        if rotated and rotated != self._refresh_token:
            self._refresh_token = str(rotated)
            await self._persist_rotation(str(rotated))
        log.info("Salesforce access token refreshed")
        return str(token["access_token"])

    async def _request(self, refresh_token: str) -> Mapping[str, Any]:
        try:
            async with AsyncOAuth2Client(
                self._client_id,
                self._client_secret,
                token_endpoint_auth_method=FORM_CLIENT_AUTH,
                timeout=self._timeout,
            ) as oauth:
                token: Mapping[str, Any] = await oauth.refresh_token(
                    self._token_url, refresh_token=refresh_token
                )
                return token
        except (httpx.HTTPError, ValueError) as error:
            raise unreachable(error) from None

    async def _take_newer_refresh_token(self) -> bool:
        if self._reload is None:
            return False
        newer = await asyncio.to_thread(self._reload)
        if not newer or newer == self._refresh_token:
            return False
        log.info("using the newer refresh token from the token store")
        self._refresh_token = newer
        return True

    async def _persist_rotation(self, rotated: str) -> None:
        if self._on_rotation is None:
            log.warning("Salesforce rotated the refresh token but nothing persists it")
            return
        try:
            await self._on_rotation(rotated)
        except Exception as error:
            # The new token still works in memory; losing it only hurts after a restart.
            log.error(
                "could not save the rotated refresh token (%s): after a restart, run `%s`",
                type(error).__name__,
                CONNECT_COMMAND,
            )
        else:
            log.info("Salesforce rotated the refresh token; saved")

    def _refused(self, error: str, description: str) -> ConfigurationError:
        if error == "invalid_grant":
            resume = "it has saved a new token"
            if self._reload is None:
                resume += " and the service is restarted"
            return ConfigurationError(
                "Salesforce refused the refresh token (revoked or expired): "
                f"run `{self._connect_command()}`; deliveries resume once {resume}"
            )
        if error in ("invalid_client_id", "invalid_client"):
            return ConfigurationError(
                f"Salesforce refused the connected app ({error}): check SALESFORCE_CLIENT_ID "
                "and SALESFORCE_CLIENT_SECRET"
            )
        return ConfigurationError(
            f"Salesforce token endpoint refused the refresh: {error}"
            + (f" ({description})" if description else "")
        )

    def _connect_command(self) -> str:
        file = self._token_file
        if file is None or file == DEFAULT_TOKEN_FILE.expanduser():
            return CONNECT_COMMAND
        return f"{CONNECT_COMMAND} --token-file {file}"


class JwtBearerProvider(_CachedTokenProvider):
    """Access tokens for server-to-server setups: the OAuth 2.0 JWT bearer flow.

    The connected app holds the certificate of `private_key`; each fetch signs a short-lived
    RS256 assertion (iss = consumer key, sub = username, aud = login host). No refresh token
    is involved: a refused access token is replaced by signing a new assertion.
    """

    def __init__(
        self,
        *,
        login_url: str,
        consumer_key: str,
        username: str,
        private_key: str | bytes | None = None,
        private_key_file: str | os.PathLike[str] | None = None,
        audience: str | None = None,
        assertion_lifetime: int = JWT_ASSERTION_LIFETIME,
        timeout: float = TOKEN_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__()
        if private_key is not None and private_key_file is None:
            pem = private_key
        elif private_key_file is not None and private_key is None:
            pem = _read_private_key(Path(private_key_file))
        else:
            raise ValueError("give exactly one of private_key and private_key_file")
        self._login_url = login_url.rstrip("/")
        self._token_url = self._login_url + TOKEN_PATH
        # Salesforce wants the login host itself (login or test.salesforce.com) as audience,
        # even when tokens are requested from a My Domain URL: pass `audience` then.
        self._audience = (audience or self._login_url).rstrip("/")
        self._consumer_key = consumer_key
        self._username = username
        self._key = _rsa_private_key(pem)
        self._lifetime = assertion_lifetime
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"JwtBearerProvider({self._token_url!r}, username={self._username!r}, <key hidden>)"

    async def _fetch(self) -> str:
        try:
            async with AsyncAssertionClient(
                self._token_url,
                issuer=self._consumer_key,
                subject=self._username,
                audience=self._audience,
                grant_type=JWT_BEARER_GRANT,
                key=self._key,
                alg="RS256",
                expires_in=self._lifetime,
                timeout=self._timeout,
            ) as client:
                token: Mapping[str, Any] = await client.refresh_token()
        except OAuthError as error:
            raise ConfigurationError(
                f"Salesforce refused the JWT bearer assertion ({error.error}"
                + (f": {error.description}" if error.description else "")
                + "): check the consumer key, that the connected app holds this key's "
                "certificate and that the user is pre-authorized for it"
            ) from None
        except (httpx.HTTPError, ValueError) as error:
            raise unreachable(error) from None
        log.info("Salesforce access token obtained with a JWT bearer assertion")
        return str(token["access_token"])


def unreachable(error: Exception) -> RetryableError:
    """A token request that failed on the way, not by Salesforce's refusal: try again."""
    if isinstance(error, httpx.HTTPError):
        why = f"unreachable or failing ({type(error).__name__})"
    else:
        why = "answered something not JSON"
    return RetryableError(f"Salesforce token endpoint {why}")


def _read_private_key(path: Path) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(
            f"cannot read the JWT private key file {path} ({type(error).__name__}): check "
            "SALESFORCE_JWT_PRIVATE_KEY_FILE"
        ) from None


def _rsa_private_key(pem: str | bytes) -> RSAKey:
    """The signing key, checked now so a bad key file fails at startup, not at first use."""
    try:
        key = RSAKey.import_key(pem)
    except (JoseError, ValueError, TypeError):
        key = None
    if key is None or not key.is_private:
        # Named by kind only: the text may be a private key in a format we cannot read.
        raise ConfigurationError(
            "the JWT private key is not an unencrypted RSA private key in PEM form "
            "(-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
        )
    return key


def _consume_exception(future: asyncio.Future[str]) -> None:
    """Mark a failed fetch's error as seen even when every waiter was cancelled."""
    if not future.cancelled():
        future.exception()
