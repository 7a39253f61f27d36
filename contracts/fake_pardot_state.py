"""State and knobs of the fake Pardot: accounts, tokens, prospects, counters.

Nothing here speaks HTTP, so tests can arrange and inspect the fake directly in the
same process (seed prospects, expire tokens, queue failures) without any API call
being counted. The HTTP layer lives in `contracts.fake_pardot`.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from contracts.fake_pardot_bulk_books import ExportBook, ImportBook

# Pardot error codes (the body's err_code carries the meaning, not the HTTP status).
INVALID_ACTION = 2
INVALID_PROSPECT_ID = 3
INVALID_EMAIL = 4
INVALID_TIMESTAMP = 7
INVALID_ID = 16
EMAIL_EXISTS = 9
REQUIRED_PARAMETER_MISSING = 13
UPSERT_ID_NOT_FOUND_NO_EMAIL = 14
INVALID_SORT_BY = 19
INVALID_SORT_ORDER = 20
INVALID_OFFSET = 21
UNSUPPORTED_VERSION = 22
INVALID_LIMIT = 23
INVALID_DELETED = 27
INVALID_CAMPAIGN_ID = 38
EMAIL_IN_USE = 54
INVALID_METHOD = 60
INVALID_NUMBER = 56
INVALID_DATE = 57
CONCURRENT_LIMIT = 66
BATCH_TOO_LARGE = 70
BATCH_INVALID_JSON = 71
INVALID_FID = 77
ID_FID_MISMATCH = 81
UNABLE_TO_SAVE = 85
MUST_USE_V4 = 88
CANNOT_USE_V4 = 89
BATCH_NOT_FLAT = 90
BATCH_NOT_KEYED = 91
DAILY_LIMIT = 122
BUSINESS_UNIT_MISSING = 181
BUSINESS_UNIT_MALFORMED = 182
INVALID_ACCESS_TOKEN = 184
BUSINESS_UNIT_UNKNOWN = 201

# Messages as Pardot words them where its docs or recorded traffic show them.
MESSAGES: dict[int, str] = {
    INVALID_ACTION: "Invalid action",
    INVALID_PROSPECT_ID: "Invalid prospect ID",
    INVALID_EMAIL: "Invalid prospect email address",
    INVALID_TIMESTAMP: "Invalid timestamp",
    INVALID_ID: "Invalid ID",
    EMAIL_EXISTS: "A prospect with the specified email address already exists",
    REQUIRED_PARAMETER_MISSING: "One or more required parameters are missing",
    UPSERT_ID_NOT_FOUND_NO_EMAIL: "Non-existent prospect ID; No email address provided",
    INVALID_SORT_BY: "Invalid value specified for sort_by",
    INVALID_SORT_ORDER: "Invalid value specified for sort_order",
    INVALID_OFFSET: "Invalid value specified for offset",
    UNSUPPORTED_VERSION: "Unsupported feature in this version of the API",
    INVALID_LIMIT: "Invalid value specified for limit",
    INVALID_DELETED: "Parameter deleted must be true or false",
    INVALID_CAMPAIGN_ID: "Invalid campaign ID",
    EMAIL_IN_USE: "Email address is already in use",
    INVALID_METHOD: "Invalid HTTP request method",
    INVALID_NUMBER: "Invalid number entered for field",
    INVALID_DATE: "Invalid date entered for field",
    CONCURRENT_LIMIT: (
        "You have exceeded your concurrent request limit.  Please wait, before trying again"
    ),
    BATCH_TOO_LARGE: "Batch processing is limited to 50 prospects at once.",
    BATCH_INVALID_JSON: "Input needs to be valid JSON or XML",
    INVALID_FID: "Invalid prospect fid",
    ID_FID_MISMATCH: "Prospect ID and FID do not match",
    UNABLE_TO_SAVE: "Unable to save the prospect",
    MUST_USE_V4: "Your account must use version 4 of the API.",
    CANNOT_USE_V4: "Your account is unable to use version 4 of the API.",
    BATCH_NOT_FLAT: "Prospect array should be a flat array of attributes",
    BATCH_NOT_KEYED: "Prospect array must be keyed by email address",
    DAILY_LIMIT: "Daily API rate limit met",
    BUSINESS_UNIT_MISSING: (
        "A required header is missing: Pardot-Business-Unit-Id header not found on request."
    ),
    BUSINESS_UNIT_MALFORMED: "Invalid value specified for Pardot-Business-Unit-Id header",
    INVALID_ACCESS_TOKEN: "access_token is invalid, unknown, or malformed",
    BUSINESS_UNIT_UNKNOWN: (
        "Invalid business unit ID: the Pardot-Business-Unit-Id header does not match an "
        "active business unit"
    ),
}

DEFAULT_BUSINESS_UNIT_ID = "0Uv000000000001AAA"
DEFAULT_CLIENT_ID = "demo-client-id"
DEFAULT_CLIENT_SECRET = "demo-client-secret"
DEFAULT_REFRESH_TOKEN = "demo-refresh-token"
DEFAULT_CAMPAIGN_ID = 1

# The whole standard field set in the order real v4 answers carry it.
STANDARD_FIELDS: tuple[str, ...] = (
    "id",
    "campaign_id",
    "salutation",
    "first_name",
    "last_name",
    "email",
    "password",
    "company",
    "website",
    "job_title",
    "department",
    "country",
    "address_one",
    "address_two",
    "city",
    "state",
    "territory",
    "zip",
    "phone",
    "fax",
    "source",
    "annual_revenue",
    "employees",
    "industry",
    "years_in_business",
    "comments",
    "notes",
    "score",
    "grade",
    "last_activity_at",
    "recent_interaction",
    "crm_lead_fid",
    "crm_contact_fid",
    "crm_owner_fid",
    "crm_account_fid",
    "salesforce_fid",
    "crm_last_sync",
    "crm_url",
    "is_do_not_email",
    "is_do_not_call",
    "opted_out",
    "is_reviewed",
    "is_starred",
    "created_at",
    "updated_at",
)
# Pardot computes these itself; a write to one is ignored like an unknown field.
READ_ONLY_FIELDS = frozenset(
    {"id", "grade", "last_activity_at", "recent_interaction", "crm_lead_fid",
     "crm_contact_fid", "crm_owner_fid", "crm_account_fid", "salesforce_fid", "crm_last_sync",
     "crm_url", "opted_out", "created_at", "updated_at"}
)  # fmt: skip
WRITABLE_FIELDS = frozenset(STANDARD_FIELDS) - READ_ONLY_FIELDS
BOOLEAN_FIELDS = frozenset({"is_do_not_email", "is_do_not_call", "is_reviewed", "is_starred"})
MOBILE_FIELDS: tuple[str, ...] = ("id", "first_name", "last_name", "email", "company")
OUTPUTS = frozenset({"full", "simple", "mobile", "bulk"})

_EMAIL = re.compile(r"[^@\s]+@(?:[^@\s.]+\.)+[^@\s.]+")
_FID = re.compile(r"(?:00Q|003)[A-Za-z0-9]+")
_BUSINESS_UNIT = re.compile(r"0Uv[A-Za-z0-9]{15}")
_MULTI_VALUE = re.compile(r"(.+)_(\d+)")
_TIMESTAMP = "%Y-%m-%d %H:%M:%S"

FieldValue = str | list[str]


class PardotError(Exception):
    """An answer in Pardot's error envelope; raised anywhere, rendered once by the app."""

    def __init__(self, code: int, message: str | None = None, *, status: int | None = None):
        self.code = code
        self.message = message or MESSAGES.get(code, "Unknown error")
        # 184 has been seen with 401; everything else Pardot answers with a plain 400.
        self.status = status or (401 if code == INVALID_ACCESS_TOKEN else 400)
        super().__init__(f"{code}: {self.message}")


class AnsweredError(NamedTuple):
    """One error envelope the fake sent, kept so tests can assert what clients saw."""

    code: int
    message: str


@dataclass
class InjectedFailure:
    """A queued answer that replaces the next call's real outcome."""

    status: int
    err_code: int | None
    message: str | None
    only: str | None = None  # a part of the request's path: only such calls get it


@dataclass(frozen=True)
class ForeignAnswer:
    """An answer from something between the client and Pardot: a proxy, a load balancer,
    a web application firewall, a maintenance page. It carries no Pardot envelope."""

    status: int
    body: bytes
    content_type: str
    # Extra headers, e.g. a load balancer's `Retry-After` on its 503.
    headers: Mapping[str, str] = field(default_factory=dict)


# What real middleboxes send instead of Pardot's JSON (PARDOT_API.md: "an empty body, an
# HTML page or a 4xx/5xx without Pardot's err_code came from something in between").
FOREIGN_ANSWERS: dict[str, ForeignAnswer] = {
    "empty": ForeignAnswer(200, b"", "application/json"),
    "empty_object": ForeignAnswer(200, b"{}", "application/json"),
    "maintenance": ForeignAnswer(
        200,
        b"<!DOCTYPE html><html><head><title>Scheduled Maintenance</title></head>"
        b"<body><h1>Account Engagement is down for maintenance</h1></body></html>",
        "text/html",
    ),
    # Well-formed XML without Pardot's <rsp stat="...">: parses, but is not an answer.
    "xhtml": ForeignAnswer(
        200, b"<html><body><p>We will be back shortly.</p></body></html>", "text/html"
    ),
    "waf": ForeignAnswer(
        403,
        b"<html><head><title>403 Forbidden</title></head><body><h1>Access Denied</h1>"
        b"<p>Request blocked. Reference #18.7c2f1cb8</p></body></html>",
        "text/html",
    ),
    "not_found_page": ForeignAnswer(404, b"<html><body>Not Found</body></html>", "text/html"),
    "gateway": ForeignAnswer(502, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "gateway_json": ForeignAnswer(
        504, b'{"message":"Endpoint request timed out"}', "application/json"
    ),
    "bad_request_json": ForeignAnswer(400, b'{"error":"bad_request"}', "application/json"),
}


@dataclass(frozen=True)
class PendingForeignAnswer:
    answer: ForeignAnswer
    # Only a call of this operation (e.g. "batchCreate") takes it; None: the next call.
    operation: str | None
    # True: Pardot did the call and the middlebox replaced its answer (a load balancer's
    # timeout page after the backend finished); False: the request never reached Pardot.
    after_call: bool


@dataclass
class AccessToken:
    """An issued bearer token and how many Pardot calls it has made."""

    client_id: str
    calls: int = 0
    revoked: bool = False


@dataclass
class AuthorizationCode:
    """A code handed out by the authorize redirect, redeemable once."""

    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None


@dataclass
class JwtClient:
    """A connected app set up for the JWT bearer flow: its certificate's public key (PEM).

    `users` are the usernames pre-authorized for the app; None admits any username.
    """

    public_key_pem: str
    users: set[str] | None = None


@dataclass
class JournalEntry:
    """One API call as the fake saw it, for benchmarks that time what reached Pardot when.

    Times are `time.monotonic()`, one clock for every process of a Linux machine, so a client
    in another process can set them against its own.
    """

    operation: str
    params: dict[str, str]
    received: float
    answered: float | None = None
    # The bearer token that made the call: tells apart nodes that each signed in themselves.
    token: str = ""


@dataclass
class ProspectRecord:
    """One stored prospect. `update_seq` orders writes even within one clock second.

    `archived` is Pardot's own word for the recycle bin (its error 132 "Prospect is archived",
    its upsert that "unarchives"): a prospect deleted, or merged away into another, stays
    stored but answers only `deleted=true` queries; reads and updates call it gone (3/4) and
    an upsert by its id or fid restores it.
    """

    id: int
    values: dict[str, str | int]
    custom: dict[str, FieldValue]
    created_at: datetime
    updated_at: datetime
    update_seq: int
    salesforce_fid: str | None = None
    grade: str | None = None
    opted_out: bool = False
    archived: bool = False

    @property
    def email(self) -> str:
        return str(self.values.get("email", ""))


@dataclass(eq=False)
class FakePardot:
    """One Pardot account (with its business units) plus the Salesforce login in front of it.

    Every public attribute is a knob or a counter that tests may read or set directly.
    """

    version: int = 4
    business_unit_ids: set[str] = field(default_factory=lambda: {DEFAULT_BUSINESS_UNIT_ID})
    custom_fields: set[str] = field(default_factory=set)
    # Optional types for custom fields: "number" reads back as int, "date" as YYYY-MM-DD.
    custom_field_types: dict[str, str] = field(default_factory=dict)
    campaigns: dict[int, str] = field(
        default_factory=lambda: {DEFAULT_CAMPAIGN_ID: "Website Tracking"}
    )
    oauth_clients: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
    )
    max_concurrent: int = 5
    daily_budget: int | None = None
    latency: float = 0.0
    # Latencies of particular operations (`batchCreate`...), where `latency` is not theirs:
    # keeps a test's reads quick while its writes stay in flight.
    latency_of: dict[str, float] = field(default_factory=dict)
    token_latency: float = 0.0
    token_lifetime_calls: int | None = None
    rotate_refresh_tokens: bool = False
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC).replace(tzinfo=None))
    # True: every write takes a second of its own (a strict order, running ahead of the clock
    # under bursts). False: like Pardot, many writes share a second, so clients paging by
    # `updated_after` must overlap the last second and drop rows already seen.
    distinct_seconds: bool = True

    # The bulk lane (PARDOT_API.md "Bulk: Import and Export"): how fast Pardot works through
    # imports and exports, by `clock`. False: the account refuses to create imports.
    import_enabled: bool = True
    import_rows_per_second: float = 5000.0
    import_queue_delay: float = 0.0
    export_rows_per_second: float = 5000.0
    export_queue_delay: float = 0.0
    export_rows_per_file: int = 10_000
    # The next this many exports end in Pardot's `Failed` state instead of Complete.
    export_failures: int = 0
    # Pardot's docs do not say custom fields can be exported: off, so code cannot count on it.
    export_custom_fields: bool = False
    # The zone of `clock` and of every stored time, and the zone of the API user, in which
    # exports write their dates: different by default, so no client can mistake one for the
    # other (or either for UTC).
    account_time_zone: str = "UTC"
    export_user_time_zone: str = "America/Los_Angeles"

    # Counters, read by tests.
    calls: Counter[str] = field(default_factory=Counter)
    max_in_flight: int = 0
    in_flight: Counter[str] = field(default_factory=Counter)
    budget_used: Counter[str] = field(default_factory=Counter)
    errors: list[AnsweredError] = field(default_factory=list)
    row_errors: list[AnsweredError] = field(default_factory=list)
    token_requests: int = 0
    tokens_issued: int = 0

    records: dict[int, ProspectRecord] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_REFRESH_TOKEN: DEFAULT_CLIENT_ID}
    )
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    authorization_codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    jwt_clients: dict[str, JwtClient] = field(default_factory=dict)
    refreshing: set[str] = field(default_factory=set)
    refresh_busy_remaining: int = 0
    failures: list[InjectedFailure] = field(default_factory=list)
    resets_pending: int = 0
    hangs_pending: list[float] = field(default_factory=list)
    foreign_pending: list[PendingForeignAnswer] = field(default_factory=list)
    # A list to record every prospect and custom field call in (off by default: unbounded).
    journal: list[JournalEntry] | None = None
    imports: ImportBook = field(default_factory=lambda: _books().ImportBook(), init=False)
    exports: ExportBook = field(default_factory=lambda: _books().ExportBook(), init=False)
    _next_id: int = field(default=1001, init=False)
    # Prospects by lower-case email, so an account of 100,000 answers by-email calls quickly.
    _by_email: dict[str, list[ProspectRecord]] = field(default_factory=dict, init=False)
    _seq: int = field(default=0, init=False)
    _last_stamp: datetime | None = field(default=None, init=False)

    # ---- knobs -------------------------------------------------------------------------

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 400,
        err_code: int | None = UNABLE_TO_SAVE,
        message: str | None = None,
        only: str | None = None,
    ) -> None:
        """Answer the next `n` authenticated calls with this error instead of doing them.

        `err_code=None` sends a bare non-Pardot answer (say a 503 from a proxy); `only`
        (a part of the path, say `/import/version/4/do/batch`) spares every other call.
        """
        self.failures.extend(InjectedFailure(status, err_code, message, only) for _ in range(n))

    def next_failure(self, path: str) -> InjectedFailure | None:
        """The queued failure this call gets, if any (taken off the queue)."""
        for position, failure in enumerate(self.failures):
            if failure.only is None or failure.only in path:
                return self.failures.pop(position)
        return None

    def reset_next(self, n: int = 1) -> None:
        """Drop the connection of the next `n` calls without answering (before any check)."""
        self.resets_pending += n

    def hang_next(self, n: int = 1, seconds: float = 30.0) -> None:
        """Delay the next `n` admitted calls by `seconds` while they hold a concurrency slot.

        Calls refused earlier (184, 181, 66...) do not use one up. The call is still carried
        out afterwards, as a real server would after the client gave up, so a timed-out
        create may well exist.
        """
        self.hangs_pending.extend(seconds for _ in range(n))

    def answer_next(
        self,
        n: int = 1,
        kind: str | ForeignAnswer = "empty",
        *,
        after_call: bool = False,
        operation: str | None = None,
    ) -> None:
        """Answer the next `n` prospect calls with a non-Pardot answer (FOREIGN_ANSWERS).

        With `after_call=True` the call is carried out first and only its answer replaced,
        so a create answered this way did create the prospect.
        """
        answer = FOREIGN_ANSWERS[kind] if isinstance(kind, str) else kind
        self.foreign_pending.extend(
            PendingForeignAnswer(answer, operation, after_call) for _ in range(n)
        )

    def refresh_busy_next(self, n: int = 1) -> None:
        """Answer the next `n` refreshes with "token request is already being processed"."""
        self.refresh_busy_remaining += n

    def reset_daily_budget(self) -> None:
        """What the account's midnight does (to calls and to import batches alike)."""
        self.budget_used.clear()
        self.imports.batches_today = 0

    def issue_access_token(self, client_id: str = DEFAULT_CLIENT_ID) -> str:
        """A bearer token the Pardot endpoints accept, without going through OAuth."""
        token = f"00DFAKE0000000001!{secrets.token_urlsafe(32)}"
        self.access_tokens[token] = AccessToken(client_id)
        self.tokens_issued += 1
        return token

    def issue_refresh_token(self, client_id: str = DEFAULT_CLIENT_ID) -> str:
        token = f"5Aep861FAKE{secrets.token_urlsafe(24)}"
        self.refresh_tokens[token] = client_id
        return token

    def register_jwt_client(
        self, consumer_key: str, public_key_pem: str | bytes, *, users: set[str] | None = None
    ) -> None:
        """Accept JWT bearer assertions signed by the private half of `public_key_pem`."""
        pem = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
        self.jwt_clients[consumer_key] = JwtClient(pem, users)

    def revoke_refresh_token(self, token: str) -> None:
        self.refresh_tokens.pop(token, None)

    def expire_access_tokens(self) -> None:
        """End every session issued so far, as an org session timeout would."""
        for token in self.access_tokens.values():
            token.revoked = True

    def advance_bulk(self) -> None:
        """Let imports and exports progress as far as `clock` says they have by now."""
        books = _books()
        books.advance_imports(self)
        books.advance_exports(self)

    # ---- inspection that never counts as an API call ------------------------------------

    def all_prospects(self, *, include_archived: bool = False) -> list[dict[str, Any]]:
        """Every prospect as a full read would render it, oldest id first."""
        self.advance_bulk()
        return [
            self.render(r, "full")
            for r in sorted(self.records.values(), key=lambda r: r.id)
            if include_archived or not r.archived
        ]

    def get_prospect(self, prospect_id: int) -> dict[str, Any] | None:
        self.advance_bulk()
        record = self.records.get(prospect_id)
        return None if record is None else self.render(record, "full")

    def prospects_by_email(self, email: str) -> list[dict[str, Any]]:
        self.advance_bulk()
        return [self.render(r, "full") for r in self.find_by_email(email)]

    def latest_by_email(self, email: str) -> dict[str, Any] | None:
        """The prospect with this email written last (by internal sequence, not the clock)."""
        self.advance_bulk()
        matches = self.find_by_email(email)
        if not matches:
            return None
        return self.render(max(matches, key=lambda r: r.update_seq), "full")

    def seed_prospect(self, **fields: Any) -> int:
        """Store a prospect directly, read-only fields included; returns its id.

        Accepts standard and known custom fields plus `salesforce_fid`, `grade`,
        `opted_out`, `archived`, `created_at`/`updated_at` (datetime or text) and `id`.
        No v3 email uniqueness check, so tests can build states the API would refuse.
        """
        extra = {
            k: fields.pop(k)
            for k in (
                "id",
                "salesforce_fid",
                "grade",
                "opted_out",
                "archived",
                "created_at",
                "updated_at",
            )
            if k in fields
        }
        unknown = [
            k
            for k in fields
            if k not in WRITABLE_FIELDS
            and k not in self.custom_fields
            and not self._is_multi_value_key(k)
        ]
        if unknown:
            raise ValueError(f"not a standard or configured custom field: {unknown}")
        fid = extra.get("salesforce_fid")
        if fid is not None:
            self.check_fid(str(fid))
        record = self.create_record({k: _text(v) for k, v in fields.items()})
        if "id" in extra:
            if int(extra["id"]) in self.records:
                del self.records[record.id]
                raise ValueError(f"prospect id {extra['id']} is taken")
            del self.records[record.id]
            record.id = int(extra["id"])
            self.records[record.id] = record
            self._next_id = max(self._next_id, record.id + 1)
        record.salesforce_fid = None if fid is None else str(fid)
        record.grade = extra.get("grade")
        record.opted_out = bool(extra.get("opted_out", False))
        record.archived = bool(extra.get("archived", False))
        for name in ("created_at", "updated_at"):
            if name in extra:
                setattr(record, name, _as_datetime(extra[name]))
        return record.id

    # ---- what a marketer does in Pardot's own screens -----------------------------------

    def delete_prospect(self, prospect_id: int) -> None:
        """A marketer deletes the prospect: it goes to the recycle bin.

        Deleting is a change, so `updated_at` moves to the deletion time: that is what lets a
        `deleted=true&updated_after=...` query find it (Pardot's docs do not say; see
        PARDOT_API.md on learning of deletions).
        """
        self.move_to_recycle_bin(self._live(prospect_id))

    def merge_prospects(self, survivor_id: int, absorbed_id: int) -> None:
        """A marketer merges two prospects: the survivor keeps its own values and takes the
        absorbed one's only where it has none; the absorbed one goes to the recycle bin.
        Both change, so both `updated_at` move.
        """
        if survivor_id == absorbed_id:
            raise ValueError("a prospect cannot be merged into itself")
        survivor, absorbed = self._live(survivor_id), self._live(absorbed_id)
        # An unset field is absent from the record (`_apply` drops it), so setdefault fills
        # exactly the survivor's empty fields.
        for name, value in absorbed.values.items():
            survivor.values.setdefault(name, value)
        for name, custom in absorbed.custom.items():
            survivor.custom.setdefault(name, custom)
        if survivor.salesforce_fid is None:
            survivor.salesforce_fid = absorbed.salesforce_fid
        survivor.grade = survivor.grade or absorbed.grade
        self._touch(survivor)
        self.move_to_recycle_bin(absorbed)

    def move_to_recycle_bin(self, record: ProspectRecord) -> None:
        record.archived = True
        self._touch(record)

    def _live(self, prospect_id: int) -> ProspectRecord:
        record = self.records.get(prospect_id)
        if record is None or record.archived:
            raise KeyError(f"no live prospect {prospect_id}")
        return record

    # ---- prospect store used by the operations ------------------------------------------

    def find_by_email(self, email: str) -> list[ProspectRecord]:
        wanted = email.strip().lower()
        return sorted(
            (
                r
                for r in self._by_email.get(wanted, ())
                if self.records.get(r.id) is r and not r.archived and r.email.lower() == wanted
            ),
            key=lambda r: r.id,
        )

    def find_by_fid(self, fid: str) -> ProspectRecord | None:
        """The live prospect with this fid, else one in the recycle bin (a merge can leave
        the fid on both)."""
        matches = [r for r in self.records.values() if r.salesforce_fid == fid]
        return min(matches, key=lambda r: (r.archived, r.id), default=None)

    def create_record(self, fields: Mapping[str, FieldValue]) -> ProspectRecord:
        changes = self.prepare_changes(fields)
        stamp = self._stamp()
        self._seq += 1
        record = ProspectRecord(
            id=self._next_id,
            values={"campaign_id": DEFAULT_CAMPAIGN_ID, "score": 0},
            custom={},
            created_at=stamp,
            updated_at=stamp,
            update_seq=self._seq,
        )
        self._next_id += 1
        _apply(record, changes)
        self.records[record.id] = record
        self._by_email.setdefault(record.email.lower(), []).append(record)
        return record

    def update_record(self, record: ProspectRecord, fields: Mapping[str, FieldValue]) -> None:
        changes = self.prepare_changes(fields)
        if self.version == 3 and "email" in changes:
            new_email = str(changes["email"]).lower()
            if any(
                r.email.lower() == new_email and r is not record
                for r in self.find_by_email(new_email)
            ):
                raise PardotError(EMAIL_IN_USE)
        before = record.email.lower()
        _apply(record, changes)
        if record.email.lower() != before:
            previous = self._by_email.get(before, [])
            if record in previous:
                previous.remove(record)
            self._by_email.setdefault(record.email.lower(), []).append(record)
        self._touch(record)

    def prepare_changes(self, fields: Mapping[str, FieldValue]) -> dict[str, Any]:
        """Validate a whole write before touching the record, so a rejected call changes nothing.

        Unknown fields and read-only fields are dropped silently, as Pardot does.
        """
        changes: dict[str, Any] = {}
        multi: dict[str, dict[int, str]] = {}
        for key, raw in fields.items():
            if key in WRITABLE_FIELDS:
                value = raw if isinstance(raw, str) else (raw[0] if raw else "")
                changes[key] = self._standard_value(key, value)
            elif key in self.custom_fields:
                changes[key] = self._custom_value(key, raw)
            elif (match := _MULTI_VALUE.fullmatch(key)) and match.group(1) in self.custom_fields:
                text = raw if isinstance(raw, str) else ",".join(raw)
                multi.setdefault(match.group(1), {})[int(match.group(2))] = text
        for name, parts in multi.items():
            changes[name] = self._custom_value(name, [parts[i] for i in sorted(parts)])
        return changes

    def check_email(self, email: str) -> str:
        email = email.strip()
        if len(email) > 255 or not _EMAIL.fullmatch(email):
            raise PardotError(INVALID_EMAIL)
        return email

    def check_fid(self, fid: str) -> str:
        if not _FID.fullmatch(fid):
            raise PardotError(INVALID_FID)
        return fid

    def check_business_unit(self, header: str | None) -> str:
        if header is None or not header.strip():
            raise PardotError(BUSINESS_UNIT_MISSING)
        header = header.strip()
        if not _BUSINESS_UNIT.fullmatch(header):
            raise PardotError(BUSINESS_UNIT_MALFORMED)
        if header not in self.business_unit_ids:
            raise PardotError(BUSINESS_UNIT_UNKNOWN)
        return header

    def use_access_token(self, authorization: str | None) -> None:
        """Charge one call to the bearer token, or refuse it with 184."""
        scheme, _, token = (authorization or "").partition(" ")
        info = self.access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        # The lifetime knob is read at each call, so setting it affects live tokens too.
        lifetime = self.token_lifetime_calls
        if info is None or info.revoked or (lifetime is not None and info.calls >= lifetime):
            raise PardotError(INVALID_ACCESS_TOKEN)
        info.calls += 1

    def render(
        self, record: ProspectRecord, output: str, *, related: bool = True
    ) -> dict[str, Any]:
        """A prospect as Pardot's JSON shows it for `output` (full, simple, mobile, bulk).

        `related=False` leaves out profile/visitors/activities/lists, as query answers do.
        """
        standard = self._standard_view(record)
        if output == "mobile":
            return {k: standard[k] for k in MOBILE_FIELDS}
        body = dict(standard)
        if output == "bulk":
            return body
        campaign_id = record.values.get("campaign_id")
        body["campaign"] = (
            None
            if campaign_id is None
            else {"id": campaign_id, "name": self.campaigns.get(int(campaign_id), "Campaign")}
        )
        for name in self.custom_fields_in_order(record):
            body[name] = self._render_custom(name, record.custom[name])
        if output == "full" and related:
            body["profile"] = {"id": 1, "name": "Default"}
            body["visitors"] = None
            body["visitor_activities"] = None
            body["lists"] = None
        return body

    def custom_fields_in_order(self, record: ProspectRecord) -> list[str]:
        return [name for name in record.custom if name in self.custom_fields]

    # ---- internals ----------------------------------------------------------------------

    def _touch(self, record: ProspectRecord) -> None:
        record.updated_at = self._stamp()
        self._seq += 1
        record.update_seq = self._seq

    def _stamp(self) -> datetime:
        """The clock in whole seconds, pushed forward so no two writes share a second.

        That keeps `updated_at` a strict order of writes, at the price of running ahead of
        the wall clock under bursts.
        """
        now = self.clock().replace(microsecond=0)
        if not self.distinct_seconds:
            return now
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(seconds=1)
        self._last_stamp = now
        return now

    def _is_multi_value_key(self, key: str) -> bool:
        match = _MULTI_VALUE.fullmatch(key)
        return bool(match and match.group(1) in self.custom_fields)

    def _standard_value(self, key: str, value: str) -> str | int | None:
        if key == "email":
            return self.check_email(value)
        if key in BOOLEAN_FIELDS:
            return 1 if value.strip().lower() in {"1", "true", "yes", "on"} else None
        if not value.strip():
            return 0 if key == "score" else None
        if key == "campaign_id":
            if not value.strip().isdigit():
                raise PardotError(INVALID_CAMPAIGN_ID)
            return int(value)
        if key == "score":
            try:
                return int(float(value))
            except ValueError:
                raise PardotError(INVALID_NUMBER) from None
        return value

    def _custom_value(self, name: str, raw: FieldValue) -> FieldValue | None:
        if isinstance(raw, list):
            values = [self._custom_scalar(name, v) for v in raw if v.strip()]
            return values or None
        return self._custom_scalar(name, raw) if raw.strip() else None

    def _custom_scalar(self, name: str, value: str) -> str:
        kind = self.custom_field_types.get(name, "text")
        if kind == "number":
            try:
                number = float(value)
            except ValueError:
                raise PardotError(INVALID_NUMBER) from None
            return str(int(number)) if number.is_integer() else str(number)
        if kind == "date":
            try:
                return _as_datetime(value).strftime("%Y-%m-%d")
            except ValueError:
                raise PardotError(INVALID_DATE) from None
        return value

    def _render_custom(self, name: str, value: FieldValue) -> Any:
        # Pardot's JSON comes from its XML: one value is plain, several are <value> children.
        if isinstance(value, list):
            rendered = [self._render_custom(name, v) for v in value]
            return rendered[0] if len(rendered) == 1 else {"value": rendered}
        if self.custom_field_types.get(name) == "number":
            number = float(value)
            return int(number) if number.is_integer() else number
        return value

    def _standard_view(self, record: ProspectRecord) -> dict[str, Any]:
        fid = record.salesforce_fid
        computed: dict[str, Any] = {
            "id": record.id,
            "password": None,  # write-only: never echoed back
            "grade": record.grade,
            "recent_interaction": "Never active.",
            "crm_lead_fid": fid if fid and fid.startswith("00Q") else None,
            "crm_contact_fid": fid if fid and fid.startswith("003") else None,
            "salesforce_fid": fid,
            "opted_out": 1 if record.opted_out else None,
            "created_at": record.created_at.strftime(_TIMESTAMP),
            "updated_at": record.updated_at.strftime(_TIMESTAMP),
        }
        return {
            name: computed[name] if name in computed else record.values.get(name)
            for name in STANDARD_FIELDS
        }


def _books() -> ModuleType:
    # Imported late: the bulk modules build on this one.
    import contracts.fake_pardot_bulk_books as books

    return books


def _apply(record: ProspectRecord, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        target: dict[str, Any] = record.values if key in WRITABLE_FIELDS else record.custom
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _text(value: Any) -> FieldValue:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, bool):
        return "1" if value else ""
    return "" if value is None else str(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(microsecond=0)
    text = str(value).strip().replace("T", " ")
    for pattern in (_TIMESTAMP, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(f"not a timestamp: {value!r}")


def parse_timestamp(value: str) -> datetime:
    """A query date parameter; Pardot takes GNU date syntax, the fake a practical subset."""
    keyword = value.strip().lower()
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if keyword == "today":
        return today
    if keyword == "yesterday":
        return today - timedelta(days=1)
    try:
        return _as_datetime(value)
    except ValueError:
        raise PardotError(INVALID_TIMESTAMP) from None
