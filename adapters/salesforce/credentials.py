"""Which TokenProvider the Salesforce credentials ask for, or what is missing for one.

In: `SalesforceCredentials`, plain values the operator set (secrets already revealed, never
in the repr). Out: a TokenProvider: a static token; the JWT bearer flow when a username or
key file is set; a refresh token given explicitly; the refresh token `connect` stored in the
token file. Otherwise a ConfigurationError naming what to set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from adapters.salesforce.token_file import TokenStore
from adapters.salesforce.token_providers import (
    CONNECT_COMMAND,
    JwtBearerProvider,
    RefreshTokenProvider,
    StaticTokenProvider,
)
from domain.errors import ConfigurationError
from domain.ports import TokenProvider

log = logging.getLogger(__name__)

NO_CREDENTIALS = (
    f"no Salesforce credentials: run `{CONNECT_COMMAND}` or set SALESFORCE_REFRESH_TOKEN"
)


@dataclass(frozen=True)
class SalesforceCredentials:
    login_url: str
    client_id: str | None = None
    client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    static_access_token: str = field(default="", repr=False)
    jwt_username: str | None = None
    jwt_private_key_file: str | None = None
    token_file: str | None = None  # None: the default token file


def token_provider(credentials: SalesforceCredentials) -> TokenProvider:
    """The token provider the credentials ask for, or a ConfigurationError naming what to set.

    Rotated refresh tokens are written to the token file, and a rejected refresh token is
    replaced by the stored one when that is newer.
    """
    static = credentials.static_access_token.strip()
    if static:
        return StaticTokenProvider(static)
    login = credentials.login_url.rstrip("/")
    client_id = credentials.client_id
    jwt_username, key_file = credentials.jwt_username, credentials.jwt_private_key_file
    if jwt_username or key_file:
        if not (jwt_username and key_file):
            missing = "SALESFORCE_JWT_USERNAME" if not jwt_username else "the private key file"
            raise ConfigurationError(f"the JWT bearer flow needs {missing} as well")
        if not client_id:
            raise ConfigurationError(
                "the JWT bearer flow needs SALESFORCE_CLIENT_ID (the connected app's consumer key)"
            )
        return JwtBearerProvider(
            login_url=login,
            consumer_key=client_id,
            username=jwt_username,
            private_key_file=key_file,
        )

    store = TokenStore(credentials.token_file)
    token, instance_url = credentials.refresh_token.strip(), ""
    if not token:
        stored = store.load()
        if stored is None:
            raise ConfigurationError(NO_CREDENTIALS)
        if client_id and client_id != stored.client_id:
            raise ConfigurationError(
                f"the token file {store.path} was written for another connected app than "
                f"SALESFORCE_CLIENT_ID: run `{CONNECT_COMMAND}` again or fix SALESFORCE_CLIENT_ID"
            )
        if stored.login_url.rstrip("/") != login:
            log.info("using the login URL stored with the refresh token: %s", stored.login_url)
        token, client_id, login = stored.refresh_token, stored.client_id, stored.login_url
        instance_url = stored.instance_url
    if not client_id:
        raise ConfigurationError(
            "SALESFORCE_CLIENT_ID is not set (the connected app's consumer key)"
        )
    secret = credentials.client_secret.strip()
    if not secret:
        raise ConfigurationError(
            "SALESFORCE_CLIENT_SECRET is not set (the connected app's consumer secret, needed "
            "to use the refresh token)"
        )
    return RefreshTokenProvider.kept_in(
        store,
        login_url=login,
        client_id=client_id,
        client_secret=secret,
        refresh_token=token,
        instance_url=instance_url,
    )
