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
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from domain.errors import InvalidEvent
from domain.events import parse_event
from entrypoints.http import event_checks

MAX_EVENT_BYTES = 32 * 1024  # Segment's limit per event
MAX_REQUEST_BYTES = 500 * 1024  # Segment's limit per batch request
MAX_BATCH_EVENTS = 2500
# What one request may become once stored. /v1/batch copies its top-level `context` into
# every event, so a small body can ask for a huge store (2,400 events x a 30 KB context);
# four bodies' worth leaves room for a real shared context and our receivedAt on each event.
MAX_STORED_BYTES = 4 * MAX_REQUEST_BYTES
# Request bodies being read and parsed at once, all requests together: a parsed 500 KB
# body takes a few MB, so this keeps a burst of large posts to some tens of MB.
MAX_INGEST_BYTES = 16 * 1024 * 1024
# The share of that budget bodies of senders not yet proven may hold together: a signed
# /webhook, or a /v1 call with `writeKey` in the body, can be judged only once its body is
# read, so a crowd of slow unproven bodies (anyone can open one) would otherwise hold the
# whole budget and refuse every authenticated sender.
UNPROVEN_SHARE = 4  # a quarter: 4 MB, eight of the largest bodies at once
# Segment's Webhooks destination gives up after 5 s; a body still arriving after 10 s is
# someone holding a connection open, not a sender worth waiting for.
BODY_TIMEOUT_SECONDS = 10.0
# The time a connection gets to send a request's headers (also how long an idle keep-alive
# connection stays open): slowloris senders trickle headers to hold sockets forever.
HEADER_TIMEOUT_SECONDS = 10.0
# After an early refusal (a wrong key, a full budget) aiohttp keeps reading the unwanted body
# for this long so the sender sees the answer rather than a reset; 10 s by default is a
# connection held by anyone for free.
LINGERING_SECONDS = 2.0
EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


class Refused(Exception):
    """The whole request is refused; `status` and `code` go back to the sender."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


# De-duplication scopes (EventQueue.put): a messageId is unique per sender only.
OPEN_SCOPE = ""  # no write key configured: everyone is one sender
SIGNATURE_SCOPE = "webhook-signature"  # /webhook calls proven only by the shared secret


KNOWN_HEADERS_KEPT = 64  # valid Authorization headers remembered (Basic and Bearer per key)


class WriteKeys:
    """The configured write keys, kept only as SHA-256 digests.

    Offered keys are hashed and compared with `hmac.compare_digest` against every digest:
    equal-length inputs, so neither a key's prefix nor its length shows in the timing.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key.encode()) for key in keys)
        # Authorization headers already proven to hold one of our keys: most requests carry
        # the same few, and hashing each again is a measurable share of ingest. Only valid
        # headers are kept, so a wrong key always takes the full, uniform path.
        self._known_headers: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"WriteKeys({len(self._digests)} configured)"

    def scope_of(self, offered: bytes) -> str | None:
        """The de-duplication scope of this key, or None when it is not one of ours."""
        digest = _digest(offered)
        found: bytes | None = None
        for known in self._digests:  # no early exit: every key costs the same
            if hmac.compare_digest(digest, known):
                found = known
        # A digest of the digest: the stored scope cannot be replayed as the key's digest.
        return None if found is None else "key:" + hashlib.sha256(found).hexdigest()[:16]

    def from_header(self, authorization: str | None) -> str | None:
        """The scope of the key in `Authorization`; None when there is no header to judge.

        A header that names no key of ours is refused at once, before the body is read.
        """
        if not self._digests or not authorization:
            return None
        known = self._known_headers.get(authorization)
        if known is not None:
            return known
        scope = self.scope_of(_key_in_header(authorization))
        if scope is None:
            raise Refused(401, "unauthorized", "unknown write key")
        if len(self._known_headers) < KNOWN_HEADERS_KEPT:
            self._known_headers[authorization] = scope
        return scope

    def from_body(self, body: Any) -> str:
        """Segment's other way: `writeKey` in the body (no Authorization header was sent)."""
        if not self._digests:
            return OPEN_SCOPE
        key = body.get("writeKey") if isinstance(body, Mapping) else None
        if not isinstance(key, str):
            raise Refused(401, "unauthorized", "missing write key: use Basic auth or writeKey")
        scope = self.scope_of(key.encode())
        if scope is None:
            raise Refused(401, "unauthorized", "unknown write key")
        return scope


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _key_in_header(authorization: str) -> bytes:
    """Basic with the key as user name (Segment's libraries), or Bearer with the key."""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).split(b":", 1)[0]
        except (binascii.Error, ValueError):
            raise Refused(401, "unauthorized", "malformed Basic authorization header") from None
    raise Refused(401, "unauthorized", "Authorization must be Basic or Bearer with a write key")


class ByteBudget:
    """How many request bytes may be read and parsed at once (503 past it).

    Bodies are bounded one by one (MAX_REQUEST_BYTES); this bounds them together, so a
    crowd of large posts cannot take all the memory. One request is always let in when
    nothing else is being read, so the largest allowed body still fits. Bodies whose
    sender is not proven yet hold at most `1 / UNPROVEN_SHARE` of it together, so the
    rest stays for senders whose write key was already checked.

    `hold(size)` is a context manager written as a class: one is entered per request, and
    a generator-based one costs several times more.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.unproven_limit = limit // UNPROVEN_SHARE
        self.in_use = 0
        self.unproven = 0  # the part of in_use held by unproven senders

    def hold(self, size: int, *, proven: bool = True) -> Held:
        return Held(self, size, proven)


class Held:
    __slots__ = ("_budget", "_proven", "_size")

    def __init__(self, budget: ByteBudget, size: int, proven: bool) -> None:
        self._budget = budget
        self._size = size
        self._proven = proven

    def __enter__(self) -> None:
        budget = self._budget
        size = self._size
        if (budget.in_use and budget.in_use + size > budget.limit) or (
            not self._proven and budget.unproven and budget.unproven + size > budget.unproven_limit
        ):
            raise Refused(
                503, "busy", "too many requests are being read: retry shortly", retry_after=1
            )
        budget.in_use += size
        if not self._proven:
            budget.unproven += size

    def __exit__(self, *exc_info: object) -> None:
        self._budget.in_use -= self._size
        if not self._proven:
            self._budget.unproven -= self._size


@dataclass
class Intake:
    """What one request brought: events to store, events only counted, per-event errors."""

    store: list[dict[str, Any]] = field(default_factory=list)
    store_index: list[int] = field(default_factory=list)  # each one's index in the request
    counted: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stored_bytes: int = 0  # the events of `store` as stored, when counted (`batch`)


class Decoded(NamedTuple):
    value: Any
    # Whether the body can hold none of what `event_checks` looks for: orjson refuses lone
    # surrogates, NaN, Infinity and numbers past a double, the digit check keeps integers
    # within 64 bits, and fewer containers than MAX_DEPTH cannot nest deeper than it.
    plain: bool


def decode_json(raw: bytes) -> Decoded:
    """The body's JSON; anything the parser cannot turn into values is the sender's fault.

    NaN, Infinity and 1e999 parse (as floats that are not finite) and are refused per
    event by `event_checks`; a number with thousands of digits or nesting past the
    interpreter's recursion limit cannot even be parsed, so the whole request is refused.

    orjson reads the usual body several times faster than the standard library. What it
    refuses (NaN, a lone surrogate, a byte-order mark, UTF-16) goes the standard way, for
    the same values and messages as before; so does a body with a long run of digits,
    since orjson turns an integer past 64 bits into a float and would change its value.
    """
    if _LONG_DIGITS.search(raw) is None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and says why
        else:
            containers = raw.count(b"{") + raw.count(b"[")
            # A NUL can only arrive escaped: JSON refuses raw control characters in strings.
            plain = containers < event_checks.MAX_DEPTH and b"\\u0000" not in raw
            return Decoded(value, plain=plain)
    try:
        return Decoded(json.loads(raw), plain=False)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Refused(400, "invalid_json", "body is nested too deeply") from None
    except ValueError as exc:  # int() past sys.get_int_max_str_digits()
        raise Refused(400, "invalid_json", f"body holds a number out of range: {exc}") from None


# 19 digits reach past a signed 64-bit integer (a negative one below -2**63 too).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


_UTF8_BOM = b"\xef\xbb\xbf"


def utf8(sent: bytes) -> bytes:
    """The body as UTF-8 without a byte-order mark: the one form every later step (is it
    an array? what is signed? the JSON itself) reads, so no two of them can disagree.

    The standard parser takes a BOM and UTF-16/32 (RFC 8259 lets a parser ignore a BOM);
    judging the shape on the bytes as sent let `\\xef\\xbb\\xbf[...]` pass as "not an array".
    """
    if sent[:1] in (b"{", b"["):  # what every Segment sender posts: nothing to do
        return sent
    if sent.startswith(_UTF8_BOM):
        return sent[len(_UTF8_BOM) :]
    encoding = json.detect_encoding(sent)
    if encoding in ("utf-8", "utf-8-sig"):
        return sent
    try:
        return sent.decode(encoding).encode("utf-8")
    except UnicodeError as exc:
        raise Refused(400, "invalid_json", f"body is not valid JSON: {exc}") from None


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
    if not is_array(raw):
        return raw
    try:
        text = raw.decode("utf-8", errors="strict").lstrip()
        start = 1 + len(text[1:]) - len(text[1:].lstrip())
        _, end = json.JSONDecoder().raw_decode(text, start)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except (RecursionError, ValueError):
        raise Refused(
            400, "invalid_json", "body is nested too deeply or holds a number out of range"
        ) from None
    return text[start:end].encode()


def is_array(raw: bytes) -> bool:
    """Whether the body is a JSON array, judged before parsing it."""
    return raw.lstrip(b" \t\r\n")[:1] == b"["


@dataclass(frozen=True)
class Arrival:
    """What every event of one request shares: when it arrived, how big the body was, and
    whether it is plain (`Decoded.plain`)."""

    received_at: str
    body_bytes: int
    plain: bool = False

    @classmethod
    def now(cls, body_bytes: int, *, plain: bool = False) -> Arrival:
        return cls(_utc_stamp(time.time_ns() // 1000), body_bytes, plain)

    @property
    def events_may_be_too_big(self) -> bool:
        # An event is at most the whole body plus the receivedAt we add: below the limit, the
        # per-event measurement (a JSON serialisation each) can be skipped.
        return self.body_bytes + len(self.received_at) + 16 > MAX_EVENT_BYTES


def _utc_stamp(micros: int) -> str:
    """`2026-12-02T10:00:00.123456Z` for microseconds since the epoch. The part up to the
    second is formatted once per second: a datetime per request cost more than the rest of
    the arrival."""
    second, fraction = divmod(micros, 1_000_000)
    if second != _stamp_second[0]:
        when = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
        _stamp_second[:] = [second, when.isoformat()]
    return f"{_stamp_second[1]}.{fraction:06d}Z"


_stamp_second: list[Any] = [None, ""]  # the second last formatted, and its text


def single(payload: Any, path_type: str | None, arrival: Arrival) -> Intake:
    """One event posted to /v1/{type} or /webhook."""
    intake = Intake()
    _take(intake, 0, payload, path_type, {}, arrival)
    return intake


def batch(payload: Any, arrival: Arrival) -> Intake:
    """Segment's /v1/batch: top-level context and integrations apply to every event.

    Those are stored with each event, so what the request becomes once stored is bounded
    (MAX_STORED_BYTES, 413 past it), measured only when the shared part could reach it and
    then only until it does: refusing costs no more than the limit.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise Refused(400, "invalid_batch", "body must be an object with a `batch` array")
    events = payload["batch"]
    if len(events) > MAX_BATCH_EVENTS:
        raise Refused(400, "invalid_batch", f"at most {MAX_BATCH_EVENTS} events per batch")
    shared = {key: payload[key] for key in ("context", "integrations") if key in payload}
    # Each stored event holds at most its own bytes, the shared part and our receivedAt.
    per_event = (stored_size(shared) if shared else 0) + RECEIVED_AT_BYTES
    measure = arrival.body_bytes + len(events) * per_event > MAX_STORED_BYTES
    intake = Intake()
    for index, event in enumerate(events):
        _take(intake, index, event, None, shared, arrival, measure=measure)
        if intake.stored_bytes > MAX_STORED_BYTES:
            raise Refused(
                413,
                "too_large",
                f"the events of this request take over {MAX_STORED_BYTES // 1024} KB once "
                "stored (the top-level context is stored with every event): send fewer "
                "events per request, or less in the shared context",
            )
    return intake


RECEIVED_AT_BYTES = len(',"receivedAt":"2026-12-02T10:00:00.123456Z"')


def stored_size(value: Any) -> int:
    """Bytes of `value` as the queues store it (`adapters.shared.event_json`)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:  # an integer past 64 bits: the standard library stores it
        return len(json.dumps(value, separators=(",", ":")).encode())


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
    *,
    measure: bool = False,
) -> None:
    if isinstance(payload, dict):
        payload = _merged(payload, path_type, shared, arrival.received_at)
        refused = event_checks.problem(payload, plain=arrival.plain)
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
        intake.store_index.append(index)
        if measure:
            intake.stored_bytes += stored_size(payload)
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
