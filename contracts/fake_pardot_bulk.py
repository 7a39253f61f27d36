"""The Import and Export APIs' HTTP side in the fake: paths, bodies (JSON, multipart), answers.

`contracts.fake_pardot` admits each call first (token, business unit, five in flight, the
daily budget, injected failures, the journal), exactly as it does prospect calls; this module
only does the call. Successes are plain JSON (no `@attributes` envelope: the Import and Export
pages show none), CSV for downloads; refusals are PardotError, rendered by the app in
Pardot's usual error envelope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import BodyPartReader, web

from contracts import fake_pardot_export as exports
from contracts import fake_pardot_import as imports
from contracts.fake_pardot_state import (
    CANNOT_USE_V4,
    INVALID_ACTION,
    INVALID_METHOD,
    MUST_USE_V4,
    UNSUPPORTED_VERSION,
    FakePardot,
    PardotError,
)

BULK_PATH = "/api/{kind:import|export}/version/{version:\\d+}/do/{operation}"
BULK_PATHS = (BULK_PATH, BULK_PATH + "/{tail:.+}")
# Enough for a 10 MB batch and more, so the fake itself can refuse what Pardot refuses.
MAX_BODY_BYTES = 32 * 1024 * 1024
SERVER_HEADERS = {"Server": "PardotServer"}
# operation -> HTTP method, per the Import and Export pages.
IMPORT_METHODS = {
    "create": "POST", "batch": "POST", "update": "PATCH", "read": "GET", "downloadErrors": "GET",
}  # fmt: skip
EXPORT_METHODS = {"create": "POST", "read": "GET", "downloadResults": "GET"}


def journal_name(request: web.Request) -> str:
    """How the fake's counters name a bulk call: `import/create`, `export/read`, ..."""
    return f"{request.match_info['kind']}/{request.match_info['operation']}"


async def bulk_call(fake: FakePardot, request: web.Request) -> web.StreamResponse:
    kind, operation = request.match_info["kind"], request.match_info["operation"]
    version = int(request.match_info["version"])
    if version not in (3, 4):
        raise PardotError(UNSUPPORTED_VERSION)
    if version != fake.version:
        raise PardotError(MUST_USE_V4 if fake.version == 4 else CANNOT_USE_V4)
    methods = IMPORT_METHODS if kind == "import" else EXPORT_METHODS
    if operation not in methods:
        raise PardotError(INVALID_ACTION)
    if request.method != methods[operation]:
        raise PardotError(INVALID_METHOD)
    ids = _tail(request.match_info.get("tail", ""))
    base = f"{request.scheme}://{request.host}"
    if kind == "import":
        return await _import_call(fake, request, version, operation, ids, base)
    return await _export_call(fake, request, version, operation, ids, base)


async def _import_call(
    fake: FakePardot,
    request: web.Request,
    version: int,
    operation: str,
    ids: Mapping[str, str],
    base: str,
) -> web.StreamResponse:
    if operation == "create":
        spec, first_batch = await _create_body(request)
        job = imports.create_import(fake, version, spec, first_batch)
        return _json(imports.describe(fake, job, base))
    job = imports.find_import(fake, version, _id(ids))
    if operation == "batch":
        files = await _files(request)
        imports.add_batch(fake, job, files)
        return web.Response(status=204, headers=SERVER_HEADERS)
    if operation == "update":
        spec = imports.parse_input(await _json_body(request))
        if spec.get("state") != "Ready":
            raise imports.refuse(imports.INVALID_PROPERTY)
        imports.submit(fake, job)
        body = imports.describe(fake, job, base)
        return _json({k: body[k] for k in ("id", "state", "isExpired")})
    if operation == "read":
        return _json(imports.describe(fake, job, base))
    return _csv(imports.errors_csv(fake, job))


async def _export_call(
    fake: FakePardot,
    request: web.Request,
    version: int,
    operation: str,
    ids: Mapping[str, str],
    base: str,
) -> web.StreamResponse:
    if operation == "create":
        spec = imports.parse_input(await _json_body(request))
        job = exports.create_export(fake, version, spec)
        fake.advance_bulk()  # a free queue and no delay: it may start at once
        return _json(exports.describe(fake, job, base))
    job = exports.find_export(fake, version, _id(ids))
    if operation == "read":
        return _json(exports.describe(fake, job, base))
    return _csv(exports.result_file(fake, job, ids.get("file", "")))


async def _create_body(request: web.Request) -> tuple[Mapping[str, Any], bytes | None]:
    """An import's create: JSON alone, or multipart with `importInput` and one `importFile`."""
    if request.content_type == "application/json":
        return imports.parse_input(await request.read()), None
    if request.content_type != "multipart/form-data":
        raise imports.refuse(imports.UNSUPPORTED_CONTENT_TYPE)
    parts = await _parts(request)
    spec = imports.parse_input(b"".join(parts.get("importInput", [])))
    files = parts.get("importFile", [])
    if len(files) > 1:
        raise imports.refuse(imports.TOO_MANY_FILES)
    return spec, files[0] if files else None


async def _files(request: web.Request) -> bytes:
    if request.content_type != "multipart/form-data":
        raise imports.refuse(imports.UNSUPPORTED_CONTENT_TYPE)
    files = (await _parts(request)).get("importFile", [])
    if not files:
        raise imports.refuse(imports.NO_FILE)
    if len(files) > 1:
        raise imports.refuse(imports.TOO_MANY_FILES)
    return files[0]


async def _parts(request: web.Request) -> dict[str, list[bytes]]:
    parts: dict[str, list[bytes]] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise imports.refuse(imports.UPLOAD_FAILED)
        parts.setdefault(part.name or "", []).append(await part.read(decode=True))
    return parts


async def _json_body(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise imports.refuse(imports.UNSUPPORTED_CONTENT_TYPE)
    return await request.read()


def _tail(tail: str) -> dict[str, str]:
    parts = [p for p in tail.split("/") if p]
    if len(parts) % 2 or any(key not in ("id", "file") for key in parts[::2]):
        raise PardotError(INVALID_ACTION)
    return dict(zip(parts[::2], parts[1::2], strict=True))


def _id(ids: Mapping[str, str]) -> str:
    if "id" not in ids:
        raise PardotError(INVALID_ACTION)
    return ids["id"]


def _json(body: Mapping[str, Any]) -> web.Response:
    text = json.dumps(body, separators=(",", ":"))
    return web.Response(text=text, content_type="application/json", headers=SERVER_HEADERS)


def _csv(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/csv", headers=SERVER_HEADERS)
