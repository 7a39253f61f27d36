"""`POST /admin/forget`: the forget of a data-subject request, for request-handling tools.

In: `{"email": ...}`, `{"userId": ...}` or `{"anonymousId": ...}` (exactly one), with
`"inPardot": bool` and `"dryRun": bool` (both false when left out), and the admin key as a
Bearer token or HTTP Basic password. Out: the report `forget` prints, as JSON
(`ForgetReport.as_dict`): 200 when something was forgotten (or would be, in a dry run), 404
when nothing matched (nothing removed, nobody suppressed), 502 when a prospect could not be
deleted in Pardot, 503 when Pardot could not be used at all (nothing removed). Refused (403)
while DESTINATION_ADMIN_KEY is unset: this route removes data.
"""

from __future__ import annotations

import json

from aiohttp import web

from domain.errors import ConfigurationError, PardotError, RetryableError
from domain.forget import KINDS, InvalidPerson, requested
from entrypoints.http.admin_key import ADMIN_DIGEST, Handler, admin_only
from entrypoints.http.app import guarded
from entrypoints.http.ingest import Refused
from entrypoints.http.suppressed import SUPPRESSION
from entrypoints.operator.forget import ForgetSources, forget

FORGETTING = web.AppKey("forget_sources", ForgetSources)
MAX_BODY_BYTES = 64 * 1024
_OPTIONS = ("inPardot", "dryRun")


def add_forget_route(app: web.Application, sources: ForgetSources) -> None:
    """After `set_admin_key` (add_status_routes), which this route's guard reads."""
    app[FORGETTING] = sources
    app.router.add_post("/admin/forget", guarded(_only_with_a_key(admin_only(_forget))))


def _only_with_a_key(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        if not request.app.get(ADMIN_DIGEST, b""):
            raise Refused(
                403,
                "admin_key_unset",
                "/admin/forget removes data: it is refused until DESTINATION_ADMIN_KEY is set",
            )
        return await handler(request)

    return checked


async def _forget(request: web.Request) -> web.Response:
    asked, options = _read(await request.read())
    try:
        report = await forget(
            {asked},
            request.app[FORGETTING],
            in_pardot=options["inPardot"],
            dry_run=options["dryRun"],
        )
    except (ConfigurationError, RetryableError) as error:  # unset, refused, or unreachable
        raise Refused(503, "pardot_unavailable", f"nothing removed: {error}") from None
    except PardotError as error:
        raise Refused(502, "pardot_error", f"nothing removed: {error}") from None
    gate = request.app.get(SUPPRESSION)
    if gate is not None:
        gate.changed()
    body = report.as_dict()
    if report.nothing_matched:
        message = "nothing is known about this person: nothing removed, nobody suppressed"
        return web.json_response(
            {"success": False, "code": "unknown_person", "message": message, **body}, status=404
        )
    if report.pardot_failed:
        message = "removed here, but Pardot did not delete every prospect: see prospects"
        return web.json_response(
            {"success": False, "code": "pardot_error", "message": message, **body}, status=502
        )
    return web.json_response({"success": True, **body})


def _read(raw: bytes) -> tuple[str, dict[str, bool]]:
    if len(raw) > MAX_BODY_BYTES:
        raise Refused(413, "too_large", f"the body is over {MAX_BODY_BYTES // 1024} KB")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_request", "the body must be a JSON object")
    named = [kind for kind in KINDS if kind in body]
    unknown = sorted(set(body) - set(KINDS) - set(_OPTIONS))
    if unknown:
        raise Refused(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    if len(named) != 1:
        raise Refused(400, "invalid_request", "name exactly one of email, userId or anonymousId")
    options = {name: body.get(name, False) for name in _OPTIONS}
    for name, value in options.items():
        if not isinstance(value, bool):
            raise Refused(400, "invalid_request", f"{name} must be true or false")
    try:
        return requested(named[0], body[named[0]]), options
    except InvalidPerson as error:
        raise Refused(400, "invalid_person", str(error)) from None
