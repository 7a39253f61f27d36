"""From request bytes to storable events: auth, size limits, JSON, Segment validation.

Pure functions of the request's parts, so the rules are testable without a server and the
aiohttp handlers stay thin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.errors import InvalidEvent
from domain.events import parse_event
from entrypoints import event_checks

MAX_EVENT_BYTES = 32 * 1024  # Segment's limit per event
MAX_REQUEST_BYTES = 500 * 1024  # Segment's limit per batch request
MAX_BATCH_EVENTS = 2500
EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


class Refused(Exception):
    """The whole request is refused; `status` and `code` go back to the sender."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Intake:
    """What one request brought: events to store, events only counted, per-event errors."""

    store: list[dict[str, Any]] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def decode_json(raw: bytes) -> Any:
    """The body's JSON; anything the parser cannot turn into values is the sender's fault.

    NaN, Infinity and 1e999 parse (as floats that are not finite) and are refused per
    event by `event_checks`; a number with thousands of digits or nesting past the
    interpreter's recursion limit cannot even be parsed, so the whole request is refused.
    """
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Refused(400, "invalid_json", "body is nested too deeply") from None
    except ValueError as exc:  # int() past sys.get_int_max_str_digits()
        raise Refused(400, "invalid_json", f"body holds a number out of range: {exc}") from None


def check_write_key(
    write_keys: Iterable[str], authorization: str | None, body: Mapping[str, Any] | None
) -> None:
    """Basic auth with the write key as user name, or `writeKey` in the body."""
    keys = [key.encode() for key in write_keys]
    if not keys:
        return
    offered: list[bytes] = []
    if authorization and authorization.lower().startswith("basic "):
        try:
            user = base64.b64decode(authorization[6:].strip(), validate=True).split(b":", 1)[0]
            offered.append(user)
        except (binascii.Error, ValueError):
            raise Refused(401, "unauthorized", "malformed Basic authorization header") from None
    if isinstance(body, Mapping) and isinstance(body.get("writeKey"), str):
        offered.append(body["writeKey"].encode())
    if not offered:
        raise Refused(401, "unauthorized", "missing write key: use Basic auth or writeKey")
    # Compare against every key in constant time so timing does not reveal a prefix.
    matched = False
    for candidate in offered:
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise Refused(401, "unauthorized", "unknown write key")


def check_signature(secret: str, signature: str | None, signed: bytes) -> None:
    """Segment's Webhooks destination: hex HMAC-SHA1 of the signed bytes."""
    if not signature:
        raise Refused(401, "unauthorized", "missing X-Signature header")
    expected = hmac.new(secret.encode(), signed, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise Refused(401, "unauthorized", "X-Signature does not match the body")


def signed_part(raw: bytes) -> bytes:
    """What the signature covers: the whole body, or for a JSON array its first element.

    Webhooks (Actions) with batching signs only the first event as JavaScript serialised
    it; its raw bytes are HMACed, never a Python re-serialisation.
    """
    text = raw.decode("utf-8", errors="strict").lstrip()
    if not text.startswith("["):
        return raw
    try:
        start = 1 + len(text[1:]) - len(text[1:].lstrip())
        _, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise Refused(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    return text[start:end].encode()


@dataclass(frozen=True)
class Arrival:
    """What every event of one request shares: when it arrived, and how big the body was."""

    received_at: str
    body_bytes: int

    @classmethod
    def now(cls, body_bytes: int) -> Arrival:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return cls(stamp, body_bytes)

    @property
    def events_may_be_too_big(self) -> bool:
        # An event is at most the whole body plus the receivedAt we add: below the limit, the
        # per-event measurement (a JSON serialisation each) can be skipped.
        return self.body_bytes + len(self.received_at) + 16 > MAX_EVENT_BYTES


def single(payload: Any, path_type: str | None, arrival: Arrival) -> Intake:
    """One event posted to /v1/{type} or /webhook."""
    intake = Intake()
    _take(intake, 0, payload, path_type, {}, arrival)
    return intake


def batch(payload: Any, arrival: Arrival) -> Intake:
    """Segment's /v1/batch: top-level context and integrations apply to every event."""
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise Refused(400, "invalid_batch", "body must be an object with a `batch` array")
    events = payload["batch"]
    if len(events) > MAX_BATCH_EVENTS:
        raise Refused(400, "invalid_batch", f"at most {MAX_BATCH_EVENTS} events per batch")
    shared = {key: payload[key] for key in ("context", "integrations") if key in payload}
    intake = Intake()
    for index, event in enumerate(events):
        _take(intake, index, event, None, shared, arrival)
    return intake


def array(payload: list[Any], arrival: Arrival) -> Intake:
    """Webhooks (Actions) with batching on: a bare JSON array of events."""
    if len(payload) > MAX_BATCH_EVENTS:
        raise Refused(400, "invalid_batch", f"at most {MAX_BATCH_EVENTS} events per request")
    intake = Intake()
    for index, event in enumerate(payload):
        _take(intake, index, event, None, {}, arrival)
    return intake


def _take(
    intake: Intake,
    index: int,
    payload: Any,
    path_type: str | None,
    shared: Mapping[str, Any],
    arrival: Arrival,
) -> None:
    if isinstance(payload, dict):
        payload = _merged(payload, path_type, shared, arrival.received_at)
        refused = event_checks.problem(payload)
        if refused is not None:
            intake.errors.append(_error(index, payload, refused))
            return
        if arrival.events_may_be_too_big:
            size = len(json.dumps(payload, separators=(",", ":")).encode())
            if size > MAX_EVENT_BYTES:
                intake.errors.append(_error(index, payload, f"event is {size} bytes, over 32 KB"))
                return
    try:
        event = parse_event(payload)
    except InvalidEvent as exc:
        intake.errors.append(_error(index, payload, str(exc)))
        return
    if event.type == "identify":
        intake.store.append(payload)
    elif event.type in EVENT_TYPES:
        intake.counted.append(event.type)
    else:
        intake.errors.append(_error(index, payload, f"type: unknown event type {event.type!r}"))


def _merged(
    payload: dict[str, Any], path_type: str | None, shared: Mapping[str, Any], received_at: str
) -> dict[str, Any]:
    event = dict(payload)
    event.pop("writeKey", None)  # a secret: never stored with the event
    if path_type is not None:
        event.setdefault("type", path_type)
    for key, value in shared.items():
        own = event.get(key)
        if isinstance(value, dict) and isinstance(own, dict):
            event[key] = {**value, **own}
        elif own is None:
            event[key] = value
    # Our arrival time, whatever a sender claimed: event times are corrected against it.
    event["receivedAt"] = received_at
    return event


def _error(index: int, payload: Any, reason: str) -> dict[str, Any]:
    message_id = payload.get("messageId") if isinstance(payload, dict) else None
    return {"index": index, "messageId": message_id, "reason": reason}
