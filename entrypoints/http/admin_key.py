"""DESTINATION_ADMIN_KEY: what guards `/status`, `/status.json` and `/metrics`.

A wrapper on those routes, not an application middleware: aiohttp runs every middleware
on every request, and ingest's requests, which never need this check, are most of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

ADMIN_DIGEST = web.AppKey("admin_key_digest", bytes)  # absent or empty: the routes are open

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def set_admin_key(app: web.Application, key: str) -> None:
    key = key.strip()
    app[ADMIN_DIGEST] = hashlib.sha256(key.encode()).digest() if key else b""


def admin_only(handler: Handler) -> Handler:
    """`handler`, answered only to a request carrying the admin key (when one is set)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        digest = request.app.get(ADMIN_DIGEST, b"")
        if not digest:
            return await handler(request)
        offered = _offered_key(request.headers.get("Authorization", ""))
        if offered is not None and hmac.compare_digest(
            hashlib.sha256(offered.encode()).digest(), digest
        ):
            return await handler(request)
        return web.json_response(
            {
                "success": False,
                "code": "unauthorized",
                "message": "DESTINATION_ADMIN_KEY required",
            },
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="pardot-destination status"'},
        )

    return guarded


def _offered_key(header: str) -> str | None:
    """As a Bearer token, or as the password of HTTP Basic (any user name)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None
