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
    """Decode a response body whatever format Pardot chose to answer in."""
    text = content.decode("utf-8", errors="replace").strip()
    if text.startswith("<"):
        return _decode_xml(status, text)
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        snippet = text[:200] or f"empty body ({content_type or 'no content type'})"
        return Answer(False, {}, None, f"HTTP {status}: unreadable answer: {snippet}")
    if not isinstance(body, dict):
        return Answer(False, {}, None, f"HTTP {status}: unexpected answer shape")
    attributes = body.get("@attributes") or {}
    if attributes.get("stat") == "fail" and "errors" not in body:
        code = _int(attributes.get("err_code"))
        return Answer(False, body, code, str(body.get("err") or f"HTTP {status}"))
    if status >= 400:
        return Answer(False, body, _int(attributes.get("err_code")), f"HTTP {status}")
    return Answer(True, body)


def _decode_xml(status: int, text: str) -> Answer:
    try:
        root = SafeXml.fromstring(text)
    except (ParseError, ValueError) as exc:
        return Answer(False, {}, None, f"HTTP {status}: unreadable XML answer ({exc})")
    if root.get("stat") == "fail" or status >= 400:
        err = root.find("err")
        code = _int(err.get("code")) if err is not None else None
        message = (err.text or "").strip() if err is not None else f"HTTP {status}"
        return Answer(False, {}, code, message or f"HTTP {status}")
    return Answer(True, {})


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
