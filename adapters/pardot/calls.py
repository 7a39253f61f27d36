"""One call to Pardot's legacy API (v3/v4): authenticated, within a slot, retried, mapped.

In: the API version, the operation (`resource:operation`), its form, and whether repeating it
is safe. Out: Pardot's answer as a mapping, or the domain's error: a refused token (184) is
refreshed once and the call repeated, transport errors and Pardot's retryable codes are
retried with backoff (stamina), everything else is mapped by `adapters.pardot.errors`. A call
whose outcome is unknown (a create that may have reached Pardot) leaves as OutcomeUnknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

import httpx
import stamina

from adapters.pardot.errors import pardot_error, retry_after_seconds
from adapters.pardot.responses import Answer, decode
from domain.errors import (
    AuthenticationExpired,
    DailyLimitReached,
    OutcomeUnknown,
    RetryableError,
)
from domain.ports import PardotSlots, TokenProvider

# Sends one request given the auth headers; reads a response (status, body, content type).
Send = Callable[[Mapping[str, str]], Awaitable[httpx.Response]]
Read = Callable[[int, bytes, str], Answer]
# Read, update and upsert-by-key calls can be repeated safely after a lost answer; a
# create cannot (the first may have succeeded), so it is retried only when nothing was sent.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Pardot's own "internal error" and "timed out" do not promise that nothing was saved.
MAYBE_SAVED_CODES = frozenset({183, 214})


class PardotCalls:
    """The transport of PardotHttpRepository: its client, tokens, slots and retry policy."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        business_unit_id: str,
        slots: PardotSlots,
        retry_attempts: int,
        retry_wait_initial: float,
        retry_wait_max: float,
        account_zone: tzinfo,
        on_call: Callable[[str], Awaitable[None]] | None,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._base = base_url.rstrip("/")
        self._business_unit = business_unit_id
        self._slots = slots
        self._attempts = retry_attempts
        self._wait_initial = retry_wait_initial
        self._wait_max = retry_wait_max
        self._zone = account_zone
        self._on_call = on_call

    async def _call(
        self,
        version: int,
        operation: str,
        form: Mapping[str, str],
        *,
        idempotent: bool = True,
        resource: str = "prospect",
        expect: str | None = None,
        no_content: bool = False,
    ) -> Mapping[str, Any]:
        """One form-encoded call of the legacy API (see `_exchange`). `no_content` takes an
        empty 204 for success (a delete's answer), where any other call's empty body is no
        answer at all."""
        url = f"{self._base}/api/{resource}/version/{version}/do/{operation}"

        async def post(headers: Mapping[str, str]) -> httpx.Response:
            return await self._client.post(url, data={**form, "format": "json"}, headers=headers)

        call = f"{resource}:{operation}"
        read = _empty_204_or(decode) if no_content else decode
        return await self._exchange(call, post, read, idempotent=idempotent, expect=expect)

    async def _exchange(
        self,
        call: str,
        send: Send,
        read: Read,
        *,
        idempotent: bool = True,
        expect: str | None = None,
    ) -> Mapping[str, Any]:
        """One API call with the token refreshed once on 184 and retries with backoff.

        `send` makes the request given the auth headers; `read` turns the response into an
        Answer. `expect` names the key a successful answer must hold (a read without
        `prospect` would otherwise look like "not found"). Transport errors leave as domain
        errors: a create whose request may have reached Pardot as OutcomeUnknown, never
        retried here.
        """
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
                    return await self._authenticated(call, send, read, idempotent, expect)
        except httpx.TransportError as error:
            message = f"no answer from Pardot ({type(error).__name__})"
            if idempotent or isinstance(error, _UNSENT):
                raise RetryableError(message) from error
            raise OutcomeUnknown(message) from error
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _authenticated(
        self, call: str, send: Send, read: Read, idempotent: bool, expect: str | None
    ) -> Mapping[str, Any]:
        token = await self._tokens.token()
        try:
            body = await self._send(call, send, read, token, idempotent)
        except AuthenticationExpired:
            await self._tokens.invalidate(token)
            fresh = await self._tokens.token()
            body = await self._send(call, send, read, fresh, idempotent)
        if expect is not None and expect not in body:
            operation = call.partition(":")[2].split("/")[0]
            message = f"Pardot's answer to {operation} holds no {expect}"
            raise RetryableError(message) if idempotent else OutcomeUnknown(message)
        return body

    async def _send(
        self, call: str, send: Send, read: Read, token: str, idempotent: bool
    ) -> Mapping[str, Any]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Pardot-Business-Unit-Id": self._business_unit,
        }
        async with self._slots.slot():
            if self._on_call is not None:
                await self._on_call(call.partition(":")[2])
            # The client's timeout bounds the whole request, not only each wait within it: a
            # request begun under a worker's lease ends before another node may take it.
            try:
                async with asyncio.timeout(self._client.timeout.read):
                    response = await send(headers)
            except TimeoutError as late:
                raise httpx.ReadTimeout("no whole answer within the call's timeout") from late
        answer: Answer = read(
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


def _empty_204_or(read: Read) -> Read:
    def reading(status: int, content: bytes, content_type: str) -> Answer:
        if status == 204 and not content.strip():
            return Answer(True, {})
        return read(status, content, content_type)

    return reading
