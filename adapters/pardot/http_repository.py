"""The Pardot repository over HTTP: legacy prospect API v3/v4, one httpx client per process.

Every call carries a Bearer token from the TokenProvider and the business unit header. A
refused token (184) is refreshed once and the call retried; transport errors and Pardot's
retryable codes are retried with backoff (stamina); everything else is mapped to the domain's
error tree by `adapters.pardot.errors`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import quote

import httpx
import stamina

from adapters.memory.pardot_slots import InMemorySlots
from adapters.pardot.errors import pardot_error, retry_after_seconds
from adapters.pardot.responses import Answer, as_list, decode, row_errors, to_prospect
from domain.errors import (
    AuthenticationExpired,
    ConfigurationError,
    DailyLimitReached,
    OutcomeUnknown,
    PardotError,
    PermanentPardotError,
    RetryableError,
)
from domain.ports import (
    BATCH_LIMIT,
    PardotSlots,
    ProspectPage,
    ProspectQuery,
    ProspectWrite,
    TokenProvider,
)
from domain.prospect import CustomField, Fields, FieldValue, Prospect

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 5  # Pardot answers 66 to the sixth concurrent request
EMAIL_EXISTS_MESSAGE = "A prospect with the specified email address already exists"
# A read that finds nothing answers 3 (id), 4 (email) or 77 (fid: unknown and malformed alike).
NOT_FOUND_CODES = frozenset({3, 4, 77})
# Read, update and upsert-by-key calls can be repeated safely after a lost answer; a
# create cannot (the first may have succeeded), so it is retried only when nothing was sent.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Pardot's own "internal error" and "timed out" do not promise that nothing was saved.
MAYBE_SAVED_CODES = frozenset({183, 214})


class PardotHttpRepository:
    """A PardotRepository that talks to Pardot (or our fake) over HTTP."""

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
        self._client = client
        self._tokens = tokens
        self._base = base_url.rstrip("/")
        self._business_unit = business_unit_id
        self._version = api_version
        # Shared with every process on the store when the container passes its slots.
        self._slots = slots if slots is not None else InMemorySlots(max_concurrency)
        self._attempts = retry_attempts
        self._wait_initial = retry_wait_initial
        self._wait_max = retry_wait_max
        self._zone = account_zone
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"PardotHttpRepository({self._base!r}, version={self._version})"

    @property
    def api_version(self) -> int:
        if self._version is None:
            raise ConfigurationError("the API version has not been detected yet")
        return self._version

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
            return await self._write_v3(writes)
        return await self._write_v4(writes)

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
        for name in ("created_after", "updated_after", "updated_before"):
            value = getattr(query, name)
            if value is not None:
                form[name] = value
        if query.fields:
            form["fields"] = ",".join(query.fields)
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

    async def _read(self, by: str, key: str) -> Mapping[str, Any]:
        try:
            return await self._call(
                self.api_version, f"read/{by}/{_segment(key)}", {}, expect="prospect"
            )
        except PermanentPardotError as error:
            if error.code in NOT_FOUND_CODES:
                return {}
            raise

    async def _write_v4(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        results: list[PardotError | None] = [None] * len(writes)
        operations = (
            ("batchUpdate", "update"),
            ("batchUpsert", "upsert"),
            ("batchCreate", "create"),
        )
        for operation, mode in operations:
            indexes = [i for i, w in enumerate(writes) if w.mode == mode]
            if not indexes:
                continue
            rows = [_v4_row(writes[i]) for i in indexes]
            # A create batch whose answer was lost may have happened: never repeated here.
            errors = await self._batch(operation, rows, idempotent=mode != "create")
            for position, index in enumerate(indexes):
                if str(position) in errors:
                    results[index] = _row_error(errors[str(position)])
        return results

    async def _write_v3(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        """v3 rows are keyed by email or id.

        Rows with fields meant only for new prospects (the campaign) are created first, and
        those whose email exists are then updated without them: Pardot's upsert cannot say
        whether it created.
        """
        results: list[PardotError | None] = [None] * len(writes)
        creating = [
            i
            for i, w in enumerate(writes)
            if (w.create_fields or w.mode == "create") and w.by == "email"
        ]
        plain = [i for i in range(len(writes)) if i not in set(creating)]
        if creating:
            rows = {
                writes[i].key: _flat({**writes[i].create_fields, **writes[i].fields})
                for i in creating
            }
            errors = await self._batch("batchCreate", rows)
            for index in creating:
                message = errors.get(writes[index].key)
                if message == EMAIL_EXISTS_MESSAGE and writes[index].mode != "create":
                    plain.append(index)
                elif message is not None:
                    results[index] = PermanentPardotError(message)
        for operation, mode in (("batchUpdate", "update"), ("batchUpsert", "upsert")):
            chosen = [i for i in plain if writes[i].mode == mode]
            if not chosen:
                continue
            rows = {writes[i].key: _flat(writes[i].fields) for i in chosen}
            errors = await self._batch(operation, rows)
            for index in chosen:
                if writes[index].key in errors:
                    results[index] = PermanentPardotError(errors[writes[index].key])
        return results

    async def _batch(
        self, operation: str, rows: object, *, idempotent: bool = True
    ) -> dict[str, str]:
        # The rows travel in the POST body: long URLs fail with 414 in real use.
        payload = json.dumps({"prospects": rows}, separators=(",", ":"))
        body = await self._call(
            self.api_version, operation, {"prospects": payload}, idempotent=idempotent
        )
        return row_errors(body)

    async def _call(
        self,
        version: int,
        operation: str,
        form: Mapping[str, str],
        *,
        idempotent: bool = True,
        resource: str = "prospect",
        expect: str | None = None,
    ) -> Mapping[str, Any]:
        """One API call with the token refreshed once on 184 and retries with backoff.

        `expect` names the key a successful answer must hold (a read without `prospect`
        would otherwise look like "not found"). Transport errors leave as domain errors: a
        create whose request may have reached Pardot as OutcomeUnknown, never retried here.
        """
        call = f"{resource}:{operation}"
        retry_on = _retry_safe if idempotent else _retry_create
        try:
            async for attempt in stamina.retry_context(
                on=lambda error: _in_call_wait(retry_on(error), error, self._wait_max),
                attempts=self._attempts,
                wait_initial=min(self._wait_initial, self._wait_max),
                wait_max=self._wait_max,
                wait_jitter=min(1.0, self._wait_max),
                timeout=None,
            ):
                with attempt:
                    return await self._authenticated(version, call, form, idempotent, expect)
        except httpx.TransportError as error:
            message = f"no answer from Pardot ({type(error).__name__})"
            if idempotent or isinstance(error, _UNSENT):
                raise RetryableError(message) from error
            raise OutcomeUnknown(message) from error
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _authenticated(
        self,
        version: int,
        operation: str,
        form: Mapping[str, str],
        idempotent: bool,
        expect: str | None,
    ) -> Mapping[str, Any]:
        token = await self._tokens.token()
        try:
            body = await self._send(version, operation, form, token, idempotent)
        except AuthenticationExpired:
            await self._tokens.invalidate(token)
            fresh = await self._tokens.token()
            body = await self._send(version, operation, form, fresh, idempotent)
        if expect is not None and expect not in body:
            message = f"Pardot's answer to {operation.split('/')[0]} holds no {expect}"
            raise RetryableError(message) if idempotent else OutcomeUnknown(message)
        return body

    async def _send(
        self,
        version: int,
        operation: str,
        form: Mapping[str, str],
        token: str,
        idempotent: bool,
    ) -> Mapping[str, Any]:
        resource, _, operation = operation.partition(":")
        url = f"{self._base}/api/{resource}/version/{version}/do/{operation}"
        headers = {
            "Authorization": f"Bearer {token}",
            "Pardot-Business-Unit-Id": self._business_unit,
        }
        async with self._slots.slot():
            if self._on_call is not None:
                await self._on_call(operation)
            response = await self._client.post(
                url, data={**form, "format": "json"}, headers=headers
            )
        answer: Answer = decode(
            response.status_code, response.content, response.headers.get("content-type", "")
        )
        if answer.ok:
            return answer.body
        now = datetime.now(UTC)
        error = pardot_error(
            answer.code,
            answer.message,
            status=response.status_code,
            account_zone=self._zone,
            now=now,
            retry_after=retry_after_seconds(response.headers.get("retry-after"), now),
        )
        maybe_saved = answer.code is None or answer.code in MAYBE_SAVED_CODES
        if not idempotent and type(error) is RetryableError and maybe_saved:
            # Not Pardot's answer, or Pardot failing midway: the create may exist.
            raise OutcomeUnknown(error.message, code=answer.code) from error
        raise error


def _row_error(message: str) -> PermanentPardotError:
    """A batch row's error: rows carry only Pardot's message, so name the code we act on.

    "Invalid prospect ID" is error 3: the prospect is gone (deleted, archived or merged).
    """
    code = 3 if message.strip().lower().startswith("invalid prospect id") else None
    return PermanentPardotError(message, code=code)


def _retry_safe(error: Exception) -> bool:
    if isinstance(error, DailyLimitReached):
        return False  # asking again spends nothing but the next day's budget: pause instead
    return isinstance(error, RetryableError | httpx.TransportError)


def _in_call_wait(retry: bool, error: Exception, longest: float) -> bool | float:
    """Retry within the call, after the answer's Retry-After when it gave one.

    A Retry-After longer than the call may wait leaves the call: the event goes back to the
    queue with that wait as its `not_before`, so the wait survives a restart.
    """
    if not retry or not isinstance(error, RetryableError) or error.retry_after is None:
        return retry
    if error.retry_after > longest:
        return False
    return error.retry_after


def _retry_create(error: Exception) -> bool:
    """A create is repeated only when it certainly did not happen."""
    if isinstance(error, DailyLimitReached):
        return False
    if isinstance(error, RetryableError):
        return not error.maybe_applied
    return isinstance(error, _UNSENT)


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


def _flat(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()
    }


def _v4_row(write: ProspectWrite) -> dict[str, Any]:
    return {
        **_flat(
            {**write.create_fields, **write.fields} if write.mode != "update" else write.fields
        ),
        write.by: write.key,
    }
