"""The prospect operations of Pardot's legacy v3/v4 API, kept apart from HTTP.

Single calls and batch rows share the same create/update/upsert rules, so a batch row
fails exactly where the equivalent single call would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from contracts.fake_pardot_state import (
    BATCH_INVALID_JSON,
    BATCH_NOT_FLAT,
    BATCH_NOT_KEYED,
    BATCH_TOO_LARGE,
    CANNOT_USE_V4,
    EMAIL_EXISTS,
    ID_FID_MISMATCH,
    INVALID_ACTION,
    INVALID_DELETED,
    INVALID_EMAIL,
    INVALID_FID,
    INVALID_ID,
    INVALID_LIMIT,
    INVALID_METHOD,
    INVALID_OFFSET,
    INVALID_PROSPECT_ID,
    INVALID_SORT_BY,
    INVALID_SORT_ORDER,
    MUST_USE_V4,
    OUTPUTS,
    REQUIRED_PARAMETER_MISSING,
    UNSUPPORTED_VERSION,
    UPSERT_ID_NOT_FOUND_NO_EMAIL,
    AnsweredError,
    FakePardot,
    FieldValue,
    PardotError,
    ProspectRecord,
    parse_timestamp,
)

BATCH_LIMIT = 50
QUERY_LIMIT = 200
SINGLE_OPERATIONS = frozenset({"create", "read", "update", "upsert"})
BATCH_OPERATIONS = frozenset({"batchCreate", "batchUpdate", "batchUpsert"})
IDENTIFIERS = ("email", "id", "fid")
# Parameters that steer the call rather than name a prospect field.
CONTROL_PARAMS = frozenset(
    {"format", "output", "id", "fid", "prospects", "api_key", "user_key", "fields"}
)
SORTABLE = frozenset({"id", "created_at", "updated_at", "last_activity_at"})
# How `delete` may name its prospect, per version (PARDOT_API.md: v4 by id or fid, v3 by id or
# email), and the methods it accepts: any other is error 60, even a GET.
DELETE_KEYS = {3: ("id", "email"), 4: ("id", "fid")}
DELETE_METHODS = frozenset({"POST", "DELETE"})


@dataclass(frozen=True)
class Reply:
    """A successful (or per-row failed) answer before it is rendered as JSON or XML."""

    status: int
    payload: dict[str, Any] = field(default_factory=dict)
    stat: str = "ok"


def parse_path_identifiers(tail: str) -> dict[str, str]:
    """`email/a@b.c` or v4's `id/5/fid/00Q…` after the operation, as a mapping."""
    parts = [p for p in tail.split("/") if p]
    if len(parts) % 2 or any(key not in IDENTIFIERS for key in parts[::2]):
        raise PardotError(INVALID_ACTION)
    return dict(zip(parts[::2], parts[1::2], strict=True))


def dispatch(
    fake: FakePardot,
    version: int,
    operation: str,
    path_ids: Mapping[str, str],
    params: Mapping[str, str],
    method: str = "POST",
) -> Reply:
    if version not in (3, 4):
        raise PardotError(UNSUPPORTED_VERSION)
    if version != fake.version:
        raise PardotError(MUST_USE_V4 if fake.version == 4 else CANNOT_USE_V4)
    if operation == "query":
        return _query(fake, params)
    if operation == "delete":
        return _delete(fake, version, method, path_ids, params)
    if operation in BATCH_OPERATIONS:
        return _batch(fake, version, operation, params)
    if operation not in SINGLE_OPERATIONS:
        raise PardotError(INVALID_ACTION)
    ids = dict(path_ids)
    for key in ("id", "fid"):
        if key not in ids and params.get(key):
            ids[key] = params[key]
    fields: dict[str, FieldValue] = {k: v for k, v in params.items() if k not in CONTROL_PARAMS}
    output = params.get("output", "full")
    output = output if output in OUTPUTS else "full"
    if operation == "read":
        return _read(fake, ids, fields, output)
    if operation == "create":
        record, created = create(fake, version, ids, fields), True
    elif operation == "update":
        record, created = update(fake, version, ids, fields), False
    else:
        record, created = upsert(fake, version, ids, fields)
    return Reply(201 if created else 200, {"prospect": fake.render(record, output)})


# How the account's custom field types are named in Pardot's customField answers.
CUSTOM_FIELD_TYPE_NAMES = {"number": "Number", "date": "Date", "text": "Text"}


def custom_field_query(fake: FakePardot, version: int, operation: str) -> Reply:
    """`/api/customField/version/N/do/query`: every custom field of the account at once."""
    if version not in (3, 4):
        raise PardotError(UNSUPPORTED_VERSION)
    if version != fake.version:
        raise PardotError(MUST_USE_V4 if fake.version == 4 else CANNOT_USE_V4)
    if operation != "query":
        raise PardotError(INVALID_ACTION)
    rows = [
        {
            "id": 500 + position,
            "name": name.replace("_", " ").title(),
            "field_id": name,
            "type": CUSTOM_FIELD_TYPE_NAMES.get(fake.custom_field_types.get(name, "text"), "Text"),
            "type_id": 1,
            "is_record_multiple_responses": False,
            "crm_id": None,
            "is_use_values": False,
            "is_analytics_synced": False,
            "created_at": "2024-01-01 00:00:00",
            "updated_at": "2024-01-01 00:00:00",
        }
        for position, name in enumerate(sorted(fake.custom_fields))
    ]
    result: dict[str, Any] = {"total_results": len(rows)}
    if rows:
        result["customField"] = _one_or_many(rows)
    return Reply(200, {"result": result})


def create(
    fake: FakePardot, version: int, ids: Mapping[str, str], fields: Mapping[str, FieldValue]
) -> ProspectRecord:
    email = ids.get("email") or _text(fields.get("email"))
    if not email:
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    email = fake.check_email(email)
    if version == 3 and fake.find_by_email(email):
        raise PardotError(EMAIL_EXISTS)
    fid = ids.get("fid")
    if fid:
        fake.check_fid(fid)
    record = fake.create_record({**fields, "email": email})
    record.salesforce_fid = fid or None
    return record


def update(
    fake: FakePardot, version: int, ids: Mapping[str, str], fields: Mapping[str, FieldValue]
) -> ProspectRecord:
    if "id" in ids or "fid" in ids:
        record = _locate(fake, ids)
    elif "email" in ids:
        if version == 4:
            raise PardotError(INVALID_ACTION)  # v4 has no update by email
        matches = fake.find_by_email(ids["email"])
        if not matches:
            raise PardotError(INVALID_EMAIL)
        record = matches[0]
    else:
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    fake.update_record(record, fields)
    return record


def upsert(
    fake: FakePardot, version: int, ids: Mapping[str, str], fields: Mapping[str, FieldValue]
) -> tuple[ProspectRecord, bool]:
    """Returns the prospect and whether it was created."""
    email = ids.get("email") or _text(fields.get("email"))
    if "id" in ids or "fid" in ids:
        record = _find_by_id_or_fid(fake, ids, include_archived=True)
        if record is not None:
            changes = {**fields, "email": ids["email"]} if "email" in ids else fields
            fake.update_record(record, changes)
            record.archived = False
            return record, False
        if not email:
            raise PardotError(UPSERT_ID_NOT_FOUND_NO_EMAIL if "id" in ids else INVALID_FID)
    if not email:
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    if version == 3:
        matches = fake.find_by_email(fake.check_email(email))
        if matches:
            fake.update_record(matches[0], fields)
            return matches[0], False
    # v4: an email alone never matches; it always creates.
    new_ids = {"email": email} | ({"fid": ids["fid"]} if "fid" in ids else {})
    return create(fake, version, new_ids, fields), True


def _read(
    fake: FakePardot, ids: Mapping[str, str], fields: Mapping[str, FieldValue], output: str
) -> Reply:
    if "id" in ids or "fid" in ids:
        return Reply(200, {"prospect": fake.render(_locate(fake, ids), output)})
    email = ids.get("email") or _text(fields.get("email"))
    if not email:
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    matches = [fake.render(r, output) for r in fake.find_by_email(email)]
    if not matches:
        raise PardotError(INVALID_EMAIL)
    return Reply(200, {"prospect": _one_or_many(matches)})


def _delete(
    fake: FakePardot,
    version: int,
    method: str,
    path_ids: Mapping[str, str],
    params: Mapping[str, str],
) -> Reply:
    """`do/delete/...`: to the recycle bin, answered 204 with no body."""
    if method.upper() not in DELETE_METHODS:
        raise PardotError(INVALID_METHOD)
    allowed = DELETE_KEYS[version]
    ids = dict(path_ids)
    for key in allowed:
        if key not in ids and params.get(key):
            ids[key] = params[key]
    if any(key not in allowed for key in ids):
        raise PardotError(INVALID_ACTION)
    if "id" in ids or "fid" in ids:
        record = _locate(fake, ids)
    elif "email" in ids:
        matches = fake.find_by_email(ids["email"])
        if not matches:
            raise PardotError(INVALID_EMAIL)
        record = matches[0]
    else:
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    fake.move_to_recycle_bin(record)
    return Reply(204)


def _locate(fake: FakePardot, ids: Mapping[str, str]) -> ProspectRecord:
    record = _find_by_id_or_fid(fake, ids, include_archived=False)
    if record is None:
        raise PardotError(INVALID_PROSPECT_ID if "id" in ids else INVALID_FID)
    return record


def _find_by_id_or_fid(
    fake: FakePardot, ids: Mapping[str, str], *, include_archived: bool
) -> ProspectRecord | None:
    by_id = by_fid = None
    if "id" in ids:
        text = ids["id"].strip()
        if not text.isdigit():
            raise PardotError(INVALID_PROSPECT_ID)
        by_id = fake.records.get(int(text))
    if "fid" in ids:
        by_fid = fake.find_by_fid(fake.check_fid(ids["fid"].strip()))
    if "id" in ids and "fid" in ids and (by_id or by_fid) and by_id is not by_fid:
        raise PardotError(ID_FID_MISMATCH)
    record = by_id or by_fid
    if record is not None and record.archived and not include_archived:
        return None
    return record


def _batch(fake: FakePardot, version: int, operation: str, params: Mapping[str, str]) -> Reply:
    rows = _batch_rows(version, params.get("prospects"))
    errors: dict[str, str] = {}
    created = False
    for key, row in rows:
        fields = {k: _coerce(v) for k, v in row.items()}
        try:
            if version == 4:
                created |= _batch_row_v4(fake, operation, fields)
            else:
                created |= _batch_row_v3(fake, operation, key, fields)
        except PardotError as err:
            errors[key] = err.message
            fake.row_errors.append(AnsweredError(err.code, err.message))
    status = 201 if created else 200
    if errors:
        return Reply(status, {"errors": errors}, stat="fail")
    return Reply(status)


def _batch_rows(version: int, raw: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Validate the `prospects` form field; v4 wants an array, v3 an object keyed by id/email."""
    if raw is None or not raw.strip():
        raise PardotError(REQUIRED_PARAMETER_MISSING)
    try:
        data = json.loads(raw)
    except ValueError:
        raise PardotError(BATCH_INVALID_JSON) from None
    if not isinstance(data, dict) or "prospects" not in data:
        raise PardotError(BATCH_INVALID_JSON)
    rows = data["prospects"]
    if isinstance(rows, list | dict) and len(rows) > BATCH_LIMIT:
        raise PardotError(BATCH_TOO_LARGE)
    if version == 4 and not isinstance(rows, list):
        raise PardotError(BATCH_NOT_FLAT)
    if version == 3 and not isinstance(rows, dict):
        raise PardotError(BATCH_NOT_KEYED)
    items = list(enumerate(rows)) if isinstance(rows, list) else list(rows.items())
    for _, row in items:
        if not isinstance(row, dict) or not all(_is_flat(v) for v in row.values()):
            raise PardotError(BATCH_NOT_FLAT)
    return [(str(key), row) for key, row in items]


def _batch_row_v4(fake: FakePardot, operation: str, fields: dict[str, FieldValue]) -> bool:
    ids: dict[str, str] = {}
    for key in ("id", "fid"):
        if value := _text(fields.pop(key, None)):
            ids[key] = value
    if operation == "batchCreate":
        create(fake, 4, {"fid": ids["fid"]} if "fid" in ids else {}, fields)
        return True
    if operation == "batchUpdate":
        if not ids:
            raise PardotError(REQUIRED_PARAMETER_MISSING)
        update(fake, 4, ids, fields)
        return False
    return upsert(fake, 4, ids, fields)[1]


def _batch_row_v3(
    fake: FakePardot, operation: str, key: str, fields: dict[str, FieldValue]
) -> bool:
    ids = {"id": key} if key.isdigit() else {"email": key}
    if operation == "batchCreate":
        if "id" in ids:
            raise PardotError(INVALID_EMAIL)
        create(fake, 3, ids, fields)
        return True
    if operation == "batchUpdate":
        update(fake, 3, ids, fields)
        return False
    return upsert(fake, 3, ids, fields)[1]


def _query(fake: FakePardot, params: Mapping[str, str]) -> Reply:
    """Only id/date ranges, paging and sorting: like Pardot, no email or custom filters."""
    output = params.get("output") or "full"
    output = output if output in OUTPUTS else "full"
    limit = _int_param(params, "limit", QUERY_LIMIT, INVALID_LIMIT)
    if not 1 <= limit <= QUERY_LIMIT:
        raise PardotError(INVALID_LIMIT)
    offset = _int_param(params, "offset", 0, INVALID_OFFSET)
    if offset < 0:
        raise PardotError(INVALID_OFFSET)
    sort_by = params.get("sort_by") or "id"
    if sort_by not in SORTABLE:
        raise PardotError(INVALID_SORT_BY)
    sort_order = params.get("sort_order") or ("ascending" if sort_by == "id" else "descending")
    if sort_order not in ("ascending", "descending"):
        raise PardotError(INVALID_SORT_ORDER)
    deleted = _deleted_param(params)
    tests = _filters(params)
    records = [
        r for r in fake.records.values() if r.archived == deleted and all(test(r) for test in tests)
    ]
    records.sort(key=lambda r: _sort_key(r, sort_by), reverse=sort_order == "descending")
    page = [fake.render(r, output, related=False) for r in records[offset : offset + limit]]
    if wanted := [name.strip() for name in params.get("fields", "").split(",") if name.strip()]:
        # `fields=a,b` returns only `id` and those fields, custom ones too (PARDOT_API.md).
        page = [{k: v for k, v in row.items() if k == "id" or k in wanted} for row in page]
    # Bulk output skips counting, which is what makes it fast on Pardot's side.
    result: dict[str, Any] = {} if output == "bulk" else {"total_results": len(records)}
    if page:
        result["prospect"] = _one_or_many(page)
    return Reply(200, {"result": result})


def _deleted_param(params: Mapping[str, str]) -> bool:
    """`deleted=true` reads the recycle bin instead of the live prospects (never both)."""
    raw = params.get("deleted", "").strip().lower()
    if raw not in ("", "true", "false"):
        raise PardotError(INVALID_DELETED)
    return raw == "true"


# Query range parameters: (parameter, record attribute, keep values above the bound?).
RANGES = (
    ("id_greater_than", "id", True),
    ("id_less_than", "id", False),
    ("created_after", "created_at", True),
    ("created_before", "created_at", False),
    ("updated_after", "updated_at", True),
    ("updated_before", "updated_at", False),
)


def _filters(params: Mapping[str, str]) -> list[Callable[[ProspectRecord], bool]]:
    """Parsed once per query, so a bad bound fails even when nothing is stored."""
    tests: list[Callable[[ProspectRecord], bool]] = []
    for name, attribute, above in RANGES:
        if raw := params.get(name):
            bound = _int(raw) if attribute == "id" else parse_timestamp(raw)
            tests.append(partial(_within, attribute=attribute, bound=bound, above=above))
    return tests


def _within(record: ProspectRecord, *, attribute: str, bound: Any, above: bool) -> bool:
    value = getattr(record, attribute)
    return bool(value > bound if above else value < bound)


def _sort_key(record: ProspectRecord, sort_by: str) -> tuple[Any, ...]:
    if sort_by == "created_at":
        return (record.created_at, record.id)
    if sort_by == "updated_at":
        return (record.updated_at, record.update_seq)
    return (record.id,)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise PardotError(INVALID_ID) from None


def _int_param(params: Mapping[str, str], name: str, default: int, code: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise PardotError(code) from None


def _one_or_many(items: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """Pardot's XML-born JSON: a lone element is an object, repeated ones an array."""
    return items[0] if len(items) == 1 else items


def _is_flat(value: Any) -> bool:
    if isinstance(value, list):
        return all(not isinstance(v, list | dict) for v in value)
    return not isinstance(value, dict)


def _coerce(value: Any) -> FieldValue:
    """JSON batch values to the text a form field would carry."""
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: FieldValue | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else (value[0] if value else "")
