"""Pardot's Import and Export APIs over HTTP: the BulkPardot port on the shared call machinery.

Every request goes through `PardotCalls._exchange`, like a prospect call: Bearer token and
business unit header, a slot of the five, the daily budget hook, retries, the error table.
Shapes from Pardot's Import and Export pages (PARDOT_API.md, "Bulk: Import and Export"):
successes are plain JSON (an export's may be wrapped in `{"export": ...}`), downloads are CSV,
refusals are Pardot's usual error envelope.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from adapters.pardot.calls import PardotCalls, Read
from adapters.pardot.responses import Answer, decode
from domain.errors import (
    BulkLimitExceeded,
    ConfigurationError,
    ImportUnavailable,
    PardotError,
    RetryableError,
)
from domain.ports import (
    BULK_BATCH_BYTES,
    ExportRequest,
    ExportStatus,
    ImportColumn,
    ImportRowError,
    ImportStatus,
    pardot_time_in,
)
from domain.ports.bulk import ExportState, ImportState

# Pardot refuses to create an import for a user whose role lacks the Prospect Import ability
# (46, its docs' only stated reason); 22 is its "unsupported feature" code.
IMPORT_REFUSED_CODES = frozenset({22, 46})
# 158 (upload failed: what the fake answers past 10 MB; Pardot's docs name no code for it),
# 160 (10 batches an import), 164 (1,000 batches a day).
BATCH_LIMIT_CODES = frozenset({158, 160, 164})
NOT_OPEN = 155  # submitting an import that is no longer Open
IMPORT_STATES: frozenset[str] = frozenset({"Open", "Waiting", "Processing", "Complete"})
EXPORT_STATES: frozenset[str] = frozenset({"Waiting", "Processing", "Complete", "Failed"})
# What Pardot's error file may call the reason column (its docs do not show the layout).
REASON_COLUMNS = ("error", "errors", "error message", "error_message", "reason")


class PardotBulkCalls(PardotCalls):
    """The BulkPardot port for PardotHttpRepository, which sets `_version` (configured, or
    None until `detect_version`)."""

    _version: int | None

    @property
    def api_version(self) -> int:
        if self._version is None:
            raise ConfigurationError("the API version has not been detected yet")
        return self._version

    # ---- import ---------------------------------------------------------------------------

    async def create_import(
        self, columns: Sequence[ImportColumn], *, restore_deleted: bool = False
    ) -> ImportStatus:
        spec = {
            "operation": "Upsert",
            "object": "Prospect",
            "restoreDeleted": restore_deleted,
            "columns": [
                {"field": c.field, "overwrite": c.overwrite, "nullOverwrite": c.null_overwrite}
                for c in columns
            ],
        }
        try:
            # A create repeated after a lost answer leaves an empty Open import, which expires.
            body = await self._bulk("import", "create", "POST", json_body=spec)
        except (ConfigurationError, PardotError) as error:
            if error.code in IMPORT_REFUSED_CODES and not isinstance(error, RetryableError):
                raise ImportUnavailable(error.message, code=error.code) from error
            raise
        return _import_status(body)

    async def add_import_batch(self, import_id: int, csv_data: bytes) -> None:
        if len(csv_data) >= BULK_BATCH_BYTES:
            raise BulkLimitExceeded(
                f"an import batch must be smaller than {BULK_BATCH_BYTES} bytes "
                f"({len(csv_data)} given)"
            )
        files = {"importFile": ("batch.csv", csv_data, "text/csv")}
        try:
            # Not repeated blindly: a batch that arrived twice counts twice against the 10.
            await self._bulk(
                "import", f"batch/id/{import_id}", "POST", files=files, idempotent=False
            )
        except PardotError as error:
            if error.code in BATCH_LIMIT_CODES and not isinstance(error, RetryableError):
                raise BulkLimitExceeded(error.message, code=error.code) from error
            raise

    async def submit_import(self, import_id: int) -> ImportStatus:
        try:
            body = await self._bulk(
                "import", f"update/id/{import_id}", "PATCH", json_body={"state": "Ready"}
            )
        except PardotError as error:
            if error.code != NOT_OPEN or isinstance(error, RetryableError):
                raise
            # A submit repeated after a lost answer: submitted already, unless it expired.
            status = await self.read_import(import_id)
            if status.state == "Open" or status.expired:
                raise
            return status
        return _import_status(body)

    async def read_import(self, import_id: int) -> ImportStatus:
        return _import_status(await self._bulk("import", f"read/id/{import_id}", "GET"))

    async def import_errors(self, import_id: int) -> list[ImportRowError]:
        body = await self._bulk("import", f"downloadErrors/id/{import_id}", "GET", read=_read_csv)
        return _row_errors(str(body["csv"]))

    # ---- export ---------------------------------------------------------------------------

    async def create_export(self, request: ExportRequest) -> ExportStatus:
        arguments = {"updated_after": pardot_time_in(request.updated_after, request.zone)}
        if request.updated_before is not None:
            arguments["updated_before"] = pardot_time_in(request.updated_before, request.zone)
        if request.include_deleted:
            arguments["deleted"] = "all"
        spec = {
            "object": "prospect",
            "fields": list(request.fields),
            "procedure": {"name": "filter_by_updated_at", "arguments": arguments},
        }
        # Exports run one at a time: a repeated create only queues a twin behind this one.
        return _export_status(await self._bulk("export", "create", "POST", json_body=spec))

    async def read_export(self, export_id: int) -> ExportStatus:
        return _export_status(await self._bulk("export", f"read/id/{export_id}", "GET"))

    async def download_export(self, ref: str) -> list[dict[str, str]]:
        # The ref is Pardot's full URL; only its path is used, against our own base URL, so
        # the token never goes to a host this adapter was not configured with.
        path = urlsplit(ref).path
        prefix = f"/api/export/version/{self.api_version}/do/"
        if not path.startswith(prefix + "downloadResults/"):
            raise PardotError(f"not an export result of this account: {path}")
        operation = path.removeprefix(prefix)
        body = await self._bulk("export", operation, "GET", read=_read_csv)
        reader = csv.DictReader(io.StringIO(str(body["csv"])))
        return [{k: v or "" for k, v in row.items() if k is not None} for row in reader]

    # ---- transport ------------------------------------------------------------------------

    async def _bulk(
        self,
        kind: str,
        operation: str,
        method: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        idempotent: bool = True,
        read: Read | None = None,
    ) -> Mapping[str, Any]:
        url = f"{self._base}/api/{kind}/version/{self.api_version}/do/{operation}"

        async def send(headers: Mapping[str, str]) -> httpx.Response:
            content = None if json_body is None else json.dumps(json_body).encode()
            if content is not None:
                headers = {**headers, "Content-Type": "application/json"}
            return await self._client.request(
                method,
                url,
                params={"format": "json"},
                headers=headers,
                content=content,
                files=files,
            )

        return await self._exchange(
            f"{kind}:{operation}", send, read or _read_json, idempotent=idempotent
        )


def _read_json(status: int, content: bytes, content_type: str) -> Answer:
    """A bulk success is bare JSON (204: no body); anything else is read as Pardot's envelope
    (an error) or as an answer from something in between."""
    if status == 204:
        return Answer(True, {})
    try:
        body = json.loads(content) if 200 <= status < 300 else None
    except (json.JSONDecodeError, ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and body and "@attributes" not in body:
        return Answer(True, body)
    return decode(status, content, content_type)


def _read_csv(status: int, content: bytes, content_type: str) -> Answer:
    text = content.decode("utf-8-sig", errors="replace")
    looks_like_page = text.lstrip()[:1] in ("", "<", "{")
    if status == 200 and not looks_like_page:
        return Answer(True, {"csv": text})
    return decode(status, content, content_type)


def _import_status(body: Mapping[str, Any]) -> ImportStatus:
    state = body.get("state")
    if not isinstance(body.get("id"), int) or state not in IMPORT_STATES:
        raise RetryableError("not an import in Pardot's answer")
    import_state: ImportState = state
    return ImportStatus(
        id=body["id"],
        state=import_state,
        expired=bool(body.get("isExpired")),
        created=int(body.get("createdCount") or 0),
        updated=int(body.get("updatedCount") or 0),
        failed=int(body.get("errorCount") or 0),
    )


def _export_status(body: Mapping[str, Any]) -> ExportStatus:
    # The docs show the export both wrapped in "export" and bare.
    inner = body.get("export", body)
    state = inner.get("state") if isinstance(inner, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("id"), int):
        raise RetryableError("not an export in Pardot's answer")
    if state not in EXPORT_STATES:
        raise RetryableError("not an export in Pardot's answer")
    export_state: ExportState = state
    refs = inner.get("resultRefs")
    files = (refs,) if isinstance(refs, str) else tuple(str(r) for r in refs or ())
    return ExportStatus(inner["id"], export_state, bool(inner.get("isExpired")), files)


def _row_errors(text: str) -> list[ImportRowError]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    if not header:
        return []
    lowered = [name.strip().lower() for name in header]
    reason_at = next((lowered.index(n) for n in REASON_COLUMNS if n in lowered), len(header) - 1)
    errors = []
    for row in reader:
        if not row:
            continue
        cells = dict(zip(header, row, strict=False))
        reason = row[reason_at] if reason_at < len(row) else ""
        cells.pop(header[reason_at], None)
        errors.append(ImportRowError(cells, reason))
    return errors
