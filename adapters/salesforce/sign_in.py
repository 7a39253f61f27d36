"""Signing in to Salesforce once: the OAuth 2.0 web-server flow with PKCE, then one Pardot call.

`connect` drives it: it shows the authorize URL, waits for the browser to come back with a
code, and hands the code to `exchange`. The first Pardot call is the repository's own
version detection with the new access token, so it meets Pardot's answers exactly as the
service will. Nothing here logs, reprs or raises with a token or a secret in it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.salesforce.token_file import StoredTokens, now_millis
from adapters.salesforce.token_providers import (
    FORM_CLIENT_AUTH,
    TOKEN_PATH,
    AsyncOAuth2Client,
    OAuthError,
    StaticTokenProvider,
    unreachable,
)
from domain.errors import ConfigurationError

AUTHORIZE_PATH = "/services/oauth2/authorize"
SCOPE = "pardot_api refresh_token"
HTTP_TIMEOUT = 30.0
# What to change when Salesforce refuses the code, by its OAuth error.
_REFUSAL_HINTS = {
    "invalid_client_id": "check SALESFORCE_CLIENT_ID (the consumer key)",
    "invalid_client": "check SALESFORCE_CLIENT_SECRET (the consumer secret)",
}


@dataclass(frozen=True)
class SignedIn:
    """What the code bought: an access token for the first call, and what to keep."""

    access_token: str = field(repr=False)
    tokens: StoredTokens


class WebServerSignIn:
    """One sign-in: its PKCE verifier lives from the authorize URL to the code exchange."""

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self._login = login_url.rstrip("/")
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43..128
        self._oauth = AsyncOAuth2Client(
            client_id,
            client_secret,
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=FORM_CLIENT_AUTH,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"WebServerSignIn({self._login!r}, <secrets hidden>)"

    async def __aenter__(self) -> WebServerSignIn:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._oauth.aclose()

    def authorize_url(self, state: str) -> str:
        """Where the browser signs in; Salesforce sends it back with a code and `state`."""
        url, _ = self._oauth.create_authorization_url(
            self._login + AUTHORIZE_PATH, state=state, code_verifier=self._verifier
        )
        return str(url)

    async def exchange(self, code: str) -> SignedIn:
        """Trade the code for tokens; ConfigurationError says what to fix when refused."""
        try:
            token: Mapping[str, Any] = await self._oauth.fetch_token(
                self._login + TOKEN_PATH,
                grant_type="authorization_code",
                code=code,
                code_verifier=self._verifier,
                redirect_uri=self._redirect_uri,
            )
        except OAuthError as error:
            hint = _REFUSAL_HINTS.get(str(error.error), "run connect again")
            if error.error == "redirect_uri_mismatch":
                hint = f"register {self._redirect_uri} as a Callback URL of the app"
            raise ConfigurationError(
                f"Salesforce refused the authorization code ({error.error}"
                + (f": {error.description}" if error.description else "")
                + f"): {hint}"
            ) from None
        except (httpx.HTTPError, ValueError) as error:
            raise unreachable(error) from None
        refresh_token = token.get("refresh_token")
        if not refresh_token:
            raise ConfigurationError(
                "Salesforce issued no refresh token: add the scope 'Perform requests at any "
                "time (refresh_token, offline_access)' to the connected app and run connect again"
            )
        stored = StoredTokens(
            refresh_token=str(refresh_token),
            instance_url=str(token.get("instance_url") or ""),
            login_url=self._login,
            client_id=self._client_id,
            issued_at=str(token.get("issued_at") or now_millis()),
        )
        return SignedIn(str(token["access_token"]), stored)


async def first_pardot_call(*, pardot_url: str, business_unit_id: str, access_token: str) -> int:
    """The API version Pardot answers this token with, or the domain error its answer maps to.

    Asked once, without retries: a person is waiting, and the answer is what matters.
    Transport failures are raised as httpx errors.
    """
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        repository = PardotHttpRepository(
            client,
            StaticTokenProvider(access_token),
            base_url=pardot_url,
            business_unit_id=business_unit_id,
            api_version=None,
            retry_attempts=1,
        )
        return await repository.detect_version()
