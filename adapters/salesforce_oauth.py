"""Salesforce OAuth token providers for Pardot calls.

Salesforce tokens carry no `expires_in`: a token lives as long as the org's session timeout,
so a token is cached until Pardot refuses it (error 184) and `invalidate()` is called.
Refreshes are single-flight: however many calls saw the same refused token at once, one
refresh happens and they all get its result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from domain.errors import ConfigurationError, RetryableError

log = logging.getLogger(__name__)

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret
BUSY_REFRESH = "token request is already being processed"


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


class RefreshTokenProvider:
    """Access tokens from a Salesforce refresh token (web-server flow, connected app).

    `on_rotation` is called with a new refresh token when the org rotates them, so the
    caller can persist it at once (the old one stops working).
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
    ) -> None:
        self._token_url = login_url.rstrip("/") + TOKEN_PATH
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._on_rotation = on_rotation
        self._busy_retries = busy_retries
        self._access: str | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"RefreshTokenProvider({self._token_url!r}, <secrets hidden>)"

    async def token(self) -> str:
        access = self._access
        if access is not None:
            return access
        async with self._lock:
            if self._access is None:
                self._access = await self._refresh()
            return self._access

    async def invalidate(self, stale: str | None = None) -> None:
        async with self._lock:
            if stale is None or stale == self._access:
                self._access = None

    async def _refresh(self) -> str:
        for attempt in range(self._busy_retries + 1):
            try:
                async with AsyncOAuth2Client(
                    self._client_id, self._client_secret, timeout=30.0
                ) as oauth:
                    token = await oauth.refresh_token(
                        self._token_url, refresh_token=self._refresh_token
                    )
                break
            except OAuthError as error:
                description = error.description or ""
                if BUSY_REFRESH in description and attempt < self._busy_retries:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if error.error == "invalid_grant":
                    raise ConfigurationError(
                        "Salesforce refused the refresh token (revoked or expired): run "
                        "`pardot-destination connect` again"
                    ) from None
                raise ConfigurationError(
                    f"Salesforce token endpoint refused: {error.error}"
                ) from None
        else:  # pragma: no cover - the loop always breaks or raises
            raise RetryableError("token refresh kept colliding")
        self.refreshes += 1
        rotated = token.get("refresh_token")
        if rotated and rotated != self._refresh_token:
            self._refresh_token = rotated
            if self._on_rotation is not None:
                await self._on_rotation(rotated)
        log.info("Salesforce access token refreshed")
        return str(token["access_token"])
