"""The door's JSON reading: orjson first, the standard library for what orjson refuses.

Two promises are tested on any JSON: the values are exactly what the standard library
reads (an integer past 64 bits stays an integer, NaN stays NaN), and a body called `plain`
holds nothing `event_checks` would refuse, so skipping its walk hides no poison.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoints.http import event_checks, ingest

# Everything the standard library writes and reads back, poison included: lone surrogates,
# NaN and Infinity, integers of any size, and nesting up to past the depth limit.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "a\udfff", "\U0001f600", "é"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
deep = st.integers(min_value=20, max_value=40).map(lambda n: "[" * n + "1" + "]" * n)


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here


@given(values, st.booleans())
def test_values_are_what_the_standard_library_reads(value: Any, ascii_only: bool) -> None:
    text = json.dumps({"type": "identify", "traits": {"t": value}}, ensure_ascii=ascii_only)
    raw = text.encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):  # surrogates written raw: not UTF-8
        with pytest.raises(ingest.Refused):
            ingest.decode_json(raw)
        return
    decoded = ingest.decode_json(raw)
    assert same(decoded.value, expected)
    assert type(decoded.value["traits"]["t"]) is type(expected["traits"]["t"])


@given(values | deep.map(json.loads))
def test_a_plain_body_holds_nothing_the_checks_refuse(value: Any) -> None:
    raw = json.dumps({"type": "identify", "traits": {"t": value}}).encode()
    decoded = ingest.decode_json(raw)
    if decoded.plain:
        assert event_checks.problem(decoded.value) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"identify","traits":{"n":NaN}}',
        b'{"type":"identify","traits":{"n":1e999}}',
        b'{"type":"identify","traits":{"s":"\\ud800"}}',
        b'{"type":"identify","traits":{"n":123456789012345678901234}}',
        b'{"type":"identify","traits":' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_poison_is_never_plain(body: bytes) -> None:
    assert not ingest.decode_json(body).plain


def test_an_ordinary_identify_is_plain_and_its_values_exact() -> None:
    body = b'{"type":"identify","userId":"u1","traits":{"n":922337203685477580,"x":0.1}}'
    decoded = ingest.decode_json(body)
    assert decoded.plain
    assert decoded.value["traits"] == {"n": 922337203685477580, "x": 0.1}
    # 19 digits may be past 64 bits: read the standard way, exactly, and walked.
    decoded = ingest.decode_json(b'{"n":-9999999999999999999}')
    assert (decoded.value, decoded.plain) == ({"n": -9999999999999999999}, False)
