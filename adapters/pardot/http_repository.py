"""The Pardot repository over HTTP: legacy prospect API v3/v4, one httpx client per process.

In: prospect reads, creates, batch writes and queries as the PardotRepository port asks them.
Out: Prospects, pages and per-row errors, from Pardot's answers. This module knows Pardot's
prospect operations (URLs, forms, what "not found" looks like); `batch_writes` splits a batch
into Pardot's v3 or v4 operations, and `calls` sends each one (the Bearer token and business
unit header, a refused token refreshed once, retries with backoff, errors mapped to the
domain's error tree).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, tzinfo
from typing import Any
from urllib.parse import quote

import httpx

from adapters.memory.pardot_slots import InMemorySlots
from adapters.pardot.batch_writes import write_v3, write_v4
from adapters.pardot.bulk_http import PardotBulkCalls
from adapters.pardot.responses import as_list, row_errors, to_prospect
from domain.errors import (
    ConfigurationError,
    PardotError,
    PermanentPardotError,
)
from domain.ports import (
    BATCH_LIMIT,
    PardotSlots,
    ProspectPage,
    ProspectQuery,
    ProspectWrite,
    TokenProvider,
)
from domain.prospect import CustomField, Fields, Prospect

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 5  # Pardot answers 66 to the sixth concurrent request
# A read that finds nothing answers 3 (id), 4 (email) or 77 (fid: unknown and malformed alike).
NOT_FOUND_CODES = frozenset({3, 4, 77})


class PardotHttpRepository(PardotBulkCalls):
    """A PardotRepository (and BulkPardot) that talks to Pardot (or our fake) over HTTP."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        business_unit_id: str,
        api_version: int | None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        slots: PardotSlots | None = None,
        retry_attempts: int = 6,
        retry_wait_initial: float = 0.2,
        retry_wait_max: float = 10.0,
        account_zone: tzinfo = UTC,
        on_call: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`on_call` hears of every request before it is sent (the daily budget counts them)."""
        if api_version not in (None, 3, 4):
            raise ValueError("api_version must be 3, 4 or None (detect)")
        super().__init__(
            client,
            tokens,
            base_url=base_url,
            business_unit_id=business_unit_id,
            # Shared with every process on the store when the container passes its slots.
            slots=slots if slots is not None else InMemorySlots(max_concurrency),
            retry_attempts=retry_attempts,
            retry_wait_initial=retry_wait_initial,
            retry_wait_max=retry_wait_max,
            account_zone=account_zone,
            on_call=on_call,
        )
        self._version = api_version

    def __repr__(self) -> str:
        return f"PardotHttpRepository({self._base!r}, version={self._version})"

    async def detect_version(self) -> int:
        """Ask Pardot which version this business unit speaks (88 means 4, 89 means 3)."""
        if self._version is not None:
            return self._version
        for candidate, wrong in ((4, 89), (3, 88)):
            try:
                await self._call(candidate, "query", {"limit": "1", "output": "mobile"})
            except ConfigurationError as error:
                if error.code == wrong:
                    continue
                raise
            self._version = candidate
            log.info("Pardot API version detected: %s", candidate)
            return candidate
        raise ConfigurationError("Pardot refused both API versions 3 and 4")

    async def read_by_email(self, email: str) -> list[Prospect]:
        answer = await self._read("email", email)
        return [to_prospect(raw) for raw in as_list(answer.get("prospect"))]

    async def read_by_id(self, prospect_id: int) -> Prospect | None:
        rows = as_list((await self._read("id", str(prospect_id))).get("prospect"))
        return to_prospect(rows[0]) if rows else None

    async def read_by_fid(self, fid: str) -> Prospect | None:
        rows = as_list((await self._read("fid", fid)).get("prospect"))
        return to_prospect(rows[0]) if rows else None

    async def create(self, email: str, fields: Fields) -> Prospect:
        body = await self._call(
            self.api_version,
            f"create/email/{_segment(email)}",
            _form(fields),
            idempotent=False,
            expect="prospect",
        )
        return to_prospect(body["prospect"])

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        if len(writes) > BATCH_LIMIT:
            raise ValueError(f"at most {BATCH_LIMIT} writes per batch")
        if not writes:
            return []
        if self.api_version == 3:
            return await write_v3(writes, self._batch)
        return await write_v4(writes, self._batch)

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        form = {
            "limit": str(min(limit, 200)),
            "offset": str(offset),
            "sort_by": "id",
            "sort_order": "ascending",
            "output": "full",
        }
        if id_greater_than is not None:
            form["id_greater_than"] = str(id_greater_than)
        body = await self._call(self.api_version, "query", form, expect="result")
        result = body.get("result") or {}
        return [to_prospect(raw) for raw in as_list(result.get("prospect"))]

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        form = {
            "limit": str(min(query.limit, 200)),
            "sort_by": query.sort_by,
            "sort_order": query.sort_order,
            "output": query.output,
        }
        for name in ("id_greater_than", "id_less_than"):
            value = getattr(query, name)
            if value is not None:
                form[name] = str(value)
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(query, name)
            if value is not None:
                form[name] = value
        if query.fields:
            form["fields"] = ",".join(query.fields)
        if query.deleted:
            form["deleted"] = "true"
        body = await self._call(self.api_version, "query", form, expect="result")
        result = body.get("result") or {}
        total = result.get("total_results")
        return ProspectPage(
            [to_prospect(raw) for raw in as_list(result.get("prospect"))],
            int(total) if total is not None else None,
        )

    async def custom_fields(self) -> list[CustomField]:
        body = await self._call(
            self.api_version, "query", {}, resource="customField", expect="result"
        )
        result = body.get("result") or {}
        return [
            CustomField(str(raw["field_id"]), str(raw.get("type") or "Text"))
            for raw in as_list(result.get("customField"))
            if isinstance(raw, Mapping) and raw.get("field_id")
        ]

    async def delete_prospect(self, prospect_id: int) -> bool:
        try:
            # Success is HTTP 204 with no body (PARDOT_API.md, "Delete"); repeating it after a
            # lost answer is safe: the second finds the prospect gone.
            await self._call(self.api_version, f"delete/id/{prospect_id}", {}, no_content=True)
        except PermanentPardotError as error:
            if error.code in NOT_FOUND_CODES:
                return False
            raise
        return True

    async def _read(self, by: str, key: str) -> Mapping[str, Any]:
        try:
            return await self._call(
                self.api_version, f"read/{by}/{_segment(key)}", {}, expect="prospect"
            )
        except PermanentPardotError as error:
            if error.code in NOT_FOUND_CODES:
                return {}
            raise

    async def _batch(
        self, operation: str, rows: object, *, idempotent: bool = True
    ) -> dict[str, str]:
        # The rows travel in the POST body: long URLs fail with 414 in real use.
        payload = json.dumps({"prospects": rows}, separators=(",", ":"))
        body = await self._call(
            self.api_version, operation, {"prospects": payload}, idempotent=idempotent
        )
        return row_errors(body)


def _segment(value: str) -> str:
    """A URL path segment: emails may hold `+`, `/` or `%`."""
    return quote(value, safe="@")


def _form(fields: Fields) -> dict[str, str]:
    """Form fields; a multi-value field is sent as `name_0`, `name_1`, ..."""
    form: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, tuple):
            form.update({f"{name}_{i}": item for i, item in enumerate(value)})
            if not value:
                form[name] = ""
        else:
            form[name] = value
    return form
