"""Salesforce's OAuth 2.0 endpoints, as much of them as a Pardot client touches.

The authorize endpoint approves at once (no login page), so browser-less tests can walk
the whole web-server flow. The token endpoint takes the refresh-token, authorization-code
(with PKCE) and JWT bearer grants; register a JWT app's public key with
`FakePardot.register_jwt_client`. Tokens issued here are the only ones the fake Pardot
accepts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from contracts.fake_pardot_state import AuthorizationCode, FakePardot

TOKEN_PATH = "/services/oauth2/token"
AUTHORIZE_PATH = "/services/oauth2/authorize"
ORG_ID = "00DFAKE000000001AAA"
USER_ID = "005FAKE000000001AAA"
DEFAULT_SCOPE = "pardot_api refresh_token"
EXPIRED_GRANT = "expired access/refresh token"
BUSY_GRANT = "token request is already being processed"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce wants a JWT bearer assertion to expire within three minutes; allow some skew.
JWT_MAX_LIFETIME = 180
JWT_CLOCK_SKEW = 60


def oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


class SalesforceOAuth:
    """Handlers bound to one FakePardot, whose token and client tables they use."""

    def __init__(self, fake: FakePardot):
        self.fake = fake

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_get(AUTHORIZE_PATH, self.authorize)

    async def token(self, request: web.Request) -> web.Response:
        fake = self.fake
        fake.token_requests += 1
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        grant = fields.get("grant_type", "")
        if grant == JWT_BEARER_GRANT:
            return self._jwt_bearer(request, fields.get("assertion", ""))
        client_id = fields.get("client_id", "")
        if grant not in ("refresh_token", "authorization_code"):
            return oauth_error("unsupported_grant_type", "grant type not supported")
        if client_id not in fake.oauth_clients:
            return oauth_error("invalid_client_id", "client identifier invalid")
        secret = fields.get("client_secret", "")
        if not hmac.compare_digest(secret.encode(), fake.oauth_clients[client_id].encode()):
            return oauth_error("invalid_client", "invalid client credentials")
        if grant == "refresh_token":
            return await self._refresh(request, client_id, fields.get("refresh_token", ""))
        return self._exchange_code(request, client_id, fields)

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if client_id not in self.fake.oauth_clients:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if not redirect_uri:
            return oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
        answer: dict[str, str] = {}
        challenge = query.get("code_challenge")
        if query.get("response_type") != "code":
            answer["error"] = "unsupported_response_type"
        elif challenge and query.get("code_challenge_method", "S256") != "S256":
            answer["error"] = "invalid_request"
        else:
            code = f"aPrx{secrets.token_urlsafe(24)}"
            self.fake.authorization_codes[code] = AuthorizationCode(
                client_id, redirect_uri, query.get("scope") or DEFAULT_SCOPE, challenge
            )
            answer["code"] = code
        if "state" in query:
            answer["state"] = query["state"]
        separator = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(f"{redirect_uri}{separator}{urlencode(answer)}")

    async def _refresh(self, request: web.Request, client_id: str, token: str) -> web.Response:
        fake = self.fake
        if fake.refresh_busy_remaining > 0:
            fake.refresh_busy_remaining -= 1
            return oauth_error("invalid_grant", BUSY_GRANT)
        if token in fake.refreshing:
            return oauth_error("invalid_grant", BUSY_GRANT)
        if fake.refresh_tokens.get(token) != client_id:
            return oauth_error("invalid_grant", EXPIRED_GRANT)
        # A refresh that is still running makes a concurrent one of the same token fail,
        # which is how Salesforce answers two workers refreshing at once.
        fake.refreshing.add(token)
        try:
            if fake.token_latency:
                await asyncio.sleep(fake.token_latency)
        finally:
            fake.refreshing.discard(token)
        if fake.refresh_tokens.get(token) != client_id:
            return oauth_error("invalid_grant", EXPIRED_GRANT)
        new_refresh = None
        if fake.rotate_refresh_tokens:
            fake.revoke_refresh_token(token)
            new_refresh = fake.issue_refresh_token(client_id)
        return web.json_response(self._grant(request, client_id, DEFAULT_SCOPE, new_refresh))

    def _exchange_code(
        self, request: web.Request, client_id: str, fields: dict[str, str]
    ) -> web.Response:
        code = self.fake.authorization_codes.pop(fields.get("code", ""), None)
        if code is None or code.client_id != client_id:
            return oauth_error("invalid_grant", "invalid authorization code")
        if fields.get("redirect_uri") != code.redirect_uri:
            return oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
        if code.code_challenge is not None:
            verifier = fields.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not verifier or not hmac.compare_digest(expected, code.code_challenge):
                return oauth_error("invalid_grant", "invalid code verifier")
        refresh = self.fake.issue_refresh_token(client_id)
        return web.json_response(self._grant(request, client_id, code.scope, refresh))

    def _jwt_bearer(self, request: web.Request, assertion: str) -> web.Response:
        """The JWT bearer flow: an RS256 assertion signed with the connected app's key.

        Checked as Salesforce does: iss names a connected app holding the signing key's
        certificate, aud is the login host, exp lies in the next three minutes, sub is a user
        pre-authorized for the app. No refresh token is issued.
        """
        try:
            unverified = json.loads(jws.extract_compact(assertion.encode()).payload)
        except (JoseError, ValueError, TypeError):
            return oauth_error("invalid_grant", "invalid assertion")
        issuer = unverified.get("iss") if isinstance(unverified, dict) else None
        client = self.fake.jwt_clients.get(str(issuer))
        if client is None:
            return oauth_error("invalid_client_id", "client identifier invalid")
        try:
            key = RSAKey.import_key(client.public_key_pem)
            claims = jwt.decode(assertion, key, algorithms=["RS256"]).claims
        except (JoseError, ValueError):
            return oauth_error("invalid_grant", "invalid assertion")
        base = f"{request.scheme}://{request.host}"
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if base not in [str(a).rstrip("/") for a in audiences]:
            return oauth_error("invalid_grant", "audience is invalid")
        now = time.time()
        expires = claims.get("exp")
        if (
            not isinstance(expires, int | float)
            or expires < now - JWT_CLOCK_SKEW
            or expires > now + JWT_MAX_LIFETIME + JWT_CLOCK_SKEW
        ):
            # Salesforce's words for an exp in the past or too far ahead.
            return oauth_error("invalid_grant", "expired authorization code")
        subject = claims.get("sub")
        if not subject or (client.users is not None and subject not in client.users):
            return oauth_error("invalid_grant", "user hasn't approved this consumer")
        return web.json_response(self._grant(request, str(issuer), DEFAULT_SCOPE, None))

    def _grant(
        self, request: web.Request, client_id: str, scope: str, refresh_token: str | None
    ) -> dict[str, Any]:
        """A token answer in Salesforce's shape: no expires_in, issued_at in epoch ms."""
        base = f"{request.scheme}://{request.host}"
        identity = f"{base}/id/{ORG_ID}/{USER_ID}"
        issued_at = str(int(time.time() * 1000))
        # Salesforce signs with the consumer secret; JWT-only apps are keyed by their id here.
        key = self.fake.oauth_clients.get(client_id, client_id).encode()
        mac = hmac.new(key, (identity + issued_at).encode(), hashlib.sha256).digest()
        body: dict[str, Any] = {"access_token": self.fake.issue_access_token(client_id)}
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        body |= {
            "signature": base64.b64encode(mac).decode(),
            "scope": scope,
            "instance_url": base,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        return body
