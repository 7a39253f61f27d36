"""Serve Pardot's tracking code at `/pardot.js`, for plain pages and for Segment's analytics.js.

The script is `static/pardot.js` with this service's settings filled in. It is built once at
startup: it only changes when the settings do, and those need a restart anyway.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files

from aiohttp import web

from entrypoints.config import TrackingConfig

# Browsers reuse the script for five minutes, then revalidate with the ETag: a new campaign
# id reaches visitors soon after a restart, and repeat views cost at most a 304.
CACHE_CONTROL = "public, max-age=300"
_PLACEHOLDER = "/*@pardot-config*/ {}"


def build_script(config: TrackingConfig) -> str:
    """The JavaScript served at /pardot.js for this configuration."""
    if not config.account_id:
        # Still valid JavaScript, so the page works and the console says what to fix.
        return (
            'console.error("pardot-destination: PARDOT_ACCOUNT_ID is not set, '
            'so Pardot tracking is off.");\n'
        )
    source = (files("entrypoints") / "static" / "pardot.js").read_text(encoding="utf-8")
    if source.count(_PLACEHOLDER) != 1:
        raise RuntimeError("static/pardot.js has lost its settings placeholder")
    settings = {
        "accountId": config.account_id,
        "campaignId": config.campaign_id or "",
        "trackerUrl": config.tracker_url.rstrip("/"),
    }
    return source.replace(_PLACEHOLDER, _js_literal(settings))


def _js_literal(value: object) -> str:
    # JSON is JavaScript, but a "</script>" or "<!--" inside it would break the page of anyone
    # who pastes the script inline; json.dumps already escapes U+2028 and U+2029.
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def add_tracking_routes(app: web.Application, config: TrackingConfig) -> None:
    """Register `GET /pardot.js` (and HEAD), cacheable with a strong ETag."""
    body = build_script(config).encode()
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": f'"{etag}"',
        "X-Content-Type-Options": "nosniff",
    }

    async def pardot_js(request: web.Request) -> web.Response:
        # If-None-Match compares weakly (RFC 9110 13.1.2), so W/"x" matches "x" too.
        if any(tag.value in {etag, "*"} for tag in request.if_none_match or ()):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=body, content_type="text/javascript", charset="utf-8", headers=headers
        )

    app.router.add_get("/pardot.js", pardot_js)
