"""Counting what the service asks of Pardot and Salesforce, around the ports.

A decorator around the PardotRepository counts calls by operation and outcome (Pardot's error
code), for /metrics and for `sync`'s "Pardot calls used"; one around the TokenProvider counts
token refreshes and remembers the token's state for `status` and the status page. Neither
ever keeps or logs a token: only a digest, to notice that a new one came.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from domain.errors import PardotError
from domain.ports import (
    BulkPardot,
    ExportRequest,
    ExportStatus,
    ImportColumn,
    ImportRowError,
    ImportStatus,
    PardotRepository,
    ProspectWrite,
    TokenProvider,
)
from domain.prospect import CustomField, Fields, Prospect
from entrypoints.faults import pardot_unreachable
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness

T = TypeVar("T")


class MeteredRepository:
    """A PardotRepository that counts every call it passes on; `calls` is this process's total."""

    def __init__(
        self, inner: PardotRepository, metrics: Metrics, readiness: Readiness | None = None
    ) -> None:
        self._inner = inner
        # Both repository adapters (HTTP, in memory) serve the bulk lane as well.
        self._bulk = cast("BulkPardot", inner)
        self._metrics = metrics
        # Told whether each call got Pardot's answer: "Pardot unreachable since T" on /readyz.
        self._readiness = readiness or Readiness()
        self.calls = 0

    @property
    def api_version(self) -> int:
        return self._inner.api_version

    def __getattr__(self, name: str) -> Any:
        # Anything else the adapter offers (issue 11's query_page, say) passes through.
        return getattr(self._inner, name)

    async def _count(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        self.calls += 1
        try:
            result = await call()
        except PardotError as error:
            code = str(error.code) if error.code is not None else "none"
            self._metrics.pardot_calls.labels(operation, code).inc()
            self._readiness.pardot_answered(not pardot_unreachable(error))
            raise
        except Exception:
            self._metrics.pardot_calls.labels(operation, "transport").inc()
            raise
        self._metrics.pardot_calls.labels(operation, "ok").inc()
        self._readiness.pardot_answered(True)
        return result

    async def detect_version(self) -> int:
        # Asks Pardot only under `auto`, and only once; not a call worth counting.
        return await self._inner.detect_version()

    async def read_by_email(self, email: str) -> list[Prospect]:
        return await self._count("read_by_email", lambda: self._inner.read_by_email(email))

    async def read_by_id(self, prospect_id: int) -> Prospect | None:
        return await self._count("read_by_id", lambda: self._inner.read_by_id(prospect_id))

    async def read_by_fid(self, fid: str) -> Prospect | None:
        return await self._count("read_by_fid", lambda: self._inner.read_by_fid(fid))

    async def create(self, email: str, fields: Fields) -> Prospect:
        return await self._count("create", lambda: self._inner.create(email, fields))

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        return await self._count("write_batch", lambda: self._inner.write_batch(writes))

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        return await self._count(
            "query",
            lambda: self._inner.query(id_greater_than=id_greater_than, limit=limit, offset=offset),
        )

    async def custom_fields(self) -> list[CustomField]:
        return await self._count("custom_fields", self._inner.custom_fields)

    async def delete_prospect(self, prospect_id: int) -> bool:
        return await self._count("delete", lambda: self._inner.delete_prospect(prospect_id))

    # The bulk lane (BulkPardot), counted like any call: /metrics shows imports and exports.
    async def create_import(
        self, columns: Sequence[ImportColumn], *, restore_deleted: bool = False
    ) -> ImportStatus:
        return await self._count(
            "import_create",
            lambda: self._bulk.create_import(columns, restore_deleted=restore_deleted),
        )

    async def add_import_batch(self, import_id: int, csv_data: bytes) -> None:
        await self._count("import_batch", lambda: self._bulk.add_import_batch(import_id, csv_data))

    async def submit_import(self, import_id: int) -> ImportStatus:
        return await self._count("import_submit", lambda: self._bulk.submit_import(import_id))

    async def read_import(self, import_id: int) -> ImportStatus:
        return await self._count("import_read", lambda: self._bulk.read_import(import_id))

    async def import_errors(self, import_id: int) -> list[ImportRowError]:
        return await self._count("import_errors", lambda: self._bulk.import_errors(import_id))

    async def create_export(self, request: ExportRequest) -> ExportStatus:
        return await self._count("export_create", lambda: self._bulk.create_export(request))

    async def read_export(self, export_id: int) -> ExportStatus:
        return await self._count("export_read", lambda: self._bulk.read_export(export_id))

    async def download_export(self, ref: str) -> list[dict[str, str]]:
        return await self._count("export_download", lambda: self._bulk.download_export(ref))


@dataclass
class TokenState:
    """What the service last saw of its Salesforce token; never the token itself."""

    state: str = "unknown"  # "ok" once a token came, "refused" when getting one failed
    detail: str = ""
    refreshed_at: datetime | None = None
    refreshes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
            "refreshes": self.refreshes,
        }


class MeteredTokens:
    """A TokenProvider that counts new tokens and keeps the latest TokenState."""

    def __init__(
        self,
        inner: TokenProvider,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._inner = inner
        # Both repository adapters (HTTP, in memory) serve the bulk lane as well.
        self._bulk = cast("BulkPardot", inner)
        self._metrics = metrics
        self._clock = clock
        self._seen: bytes | None = None
        self.status = TokenState()

    async def token(self) -> str:
        try:
            token = await self._inner.token()
        except Exception as error:
            self.status.state, self.status.detail = "refused", str(error)
            raise
        digest = hashlib.sha256(token.encode()).digest()
        if digest != self._seen:
            self._seen = digest
            self._metrics.token_refreshes.inc()
            self.status.refreshes += 1
            self.status.refreshed_at = self._clock()
        self.status.state, self.status.detail = "ok", ""
        return token

    async def invalidate(self, stale: str | None = None) -> None:
        await self._inner.invalidate(stale)
