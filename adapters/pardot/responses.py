"""Reading Pardot's answers defensively: JSON envelopes, XML errors, object-or-array quirks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeXml

from domain.prospect import FieldValue, Prospect

# Keys of a prospect that are not fields we write or compare.
_NOT_FIELDS = frozenset(
    {"id", "email", "created_at", "updated_at", "campaign", "profile", "visitors",
     "visitor_activities", "lists", "assigned_to", "last_activity", "recent_interaction",
     "grade", "opted_out", "last_activity_at", "salesforce_fid", "crm_lead_fid",
     "crm_contact_fid", "crm_owner_fid", "crm_account_fid", "crm_last_sync", "crm_url"}
)  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """One decoded response: ok, or Pardot's error code and message."""

    ok: bool
    body: Mapping[str, Any]
    code: int | None = None
    message: str = ""


def decode(status: int, content: bytes, content_type: str) -> Answer:
    """Decode a response body whatever format Pardot chose to answer in.

    Only Pardot's envelope counts (PARDOT_API.md): `stat="ok"` is a success, `stat="fail"`
    with `err_code` is Pardot's refusal, and a batch's `stat="fail"` with per-row `errors`
    is an answer too. Anything else (an empty body, a proxy's or firewall's page, a gateway's
    JSON) came from something in between and carries no code: the caller retries it.
    """
    text = content.decode("utf-8", errors="replace").strip()
    if text.startswith("<"):
        return _decode_xml(status, text, content_type)
    try:
        body = json.loads(text) if text else None
    except (json.JSONDecodeError, ValueError, RecursionError):
        body = None
    attributes = body.get("@attributes") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(attributes, dict):
        return Answer(False, {}, None, _not_pardot(status, content, content_type))
    stat = attributes.get("stat")
    code = _int(attributes.get("err_code"))
    if stat == "fail" and "errors" in body and code is None:
        return Answer(status < 400, body, None, f"HTTP {status}")  # a batch's row errors
    if stat == "fail" and code is not None:
        return Answer(False, body, code, str(body.get("err") or f"HTTP {status}"))
    if stat == "ok" and status < 400:
        return Answer(True, body)
    return Answer(False, {}, None, _not_pardot(status, content, content_type))


def _not_pardot(status: int, content: bytes, content_type: str) -> str:
    # The body is not quoted: a proxy's page may echo the request's URL, which holds an email.
    kind = content_type.split(";")[0].strip() or "no content type"
    return f"HTTP {status}: not a Pardot answer ({kind}, {len(content)} bytes)"


def _decode_xml(status: int, text: str, content_type: str) -> Answer:
    try:
        root = SafeXml.fromstring(text)
    except (ParseError, ValueError) as exc:
        return Answer(False, {}, None, f"HTTP {status}: unreadable XML answer ({exc})")
    err = root.find("err")
    code = _int(err.get("code")) if err is not None else None
    if root.tag == "rsp" and root.get("stat") == "fail" and code is not None:
        message = (err.text or "").strip() if err is not None else ""
        return Answer(False, {}, code, message or f"HTTP {status}")
    # We always ask for JSON: an XML success cannot be read (its prospect would look absent),
    # and XML that is not Pardot's <rsp> is a page from something in between.
    return Answer(False, {}, None, _not_pardot(status, text.encode(), content_type))


def as_list(value: Any) -> list[Any]:
    """Pardot sends one row as an object and several as an array; absent means none."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def row_errors(body: Mapping[str, Any]) -> dict[str, str]:
    """Per-row batch errors, keyed by row index (v4) or by the identifier sent (v3)."""
    errors = body.get("errors")
    if isinstance(errors, dict):
        return {str(key): str(message) for key, message in errors.items()}
    if isinstance(errors, list):
        return {str(index): str(message) for index, message in enumerate(errors)}
    return {}


def to_prospect(raw: Mapping[str, Any]) -> Prospect:
    fid = raw.get("salesforce_fid") or raw.get("crm_contact_fid") or raw.get("crm_lead_fid")
    fields: dict[str, FieldValue] = {}
    for name, value in raw.items():
        if isinstance(value, dict) and "value" in value:
            value = value["value"]  # several values of a multi-value field, XML-style
        if name in _NOT_FIELDS or value is None or isinstance(value, dict):
            continue
        fields[name] = _field_text(value)
    return Prospect(
        id=int(raw["id"]),
        email=raw.get("email"),
        fid=str(fid) if fid else None,
        updated=(str(raw.get("updated_at") or ""), 0),
        fields=fields,
        created_at=str(raw.get("created_at") or ""),
    )


def _field_text(value: Any) -> FieldValue:
    if isinstance(value, list):
        return tuple(_field_text_scalar(item) for item in value)
    return _field_text_scalar(value)


def _field_text_scalar(value: Any) -> str:
    # Pardot may wrap multi-value entries as {"value": ...}; take the value.
    if isinstance(value, dict):
        value = value.get("value", "")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
