"""Property tests of the door's rules from issue 26: the shape of a body, what a request may
become once stored, what no store can hold, and the budget unproven senders may hold."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from entrypoints.http import event_checks, ingest
from entrypoints.http.ingest import Arrival, ByteBudget, Refused
from tests.strategies import json_values

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
no_surrogates = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | no_surrogates,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(no_surrogates, inner, max_size=3),
    max_leaves=8,
)


@given(plain_values, st.sampled_from(ENCODINGS), st.sampled_from(["", " ", "\n\t"]))
@hsettings(max_examples=200, deadline=None)
def test_the_shape_is_decided_on_what_the_parser_reads(
    value: Any, encoding: str, space: str
) -> None:
    sent = (space + json.dumps(value)).encode(encoding)
    raw = ingest.utf8(sent)
    assert ingest.is_array(raw) == isinstance(value, list)
    assert ingest.decode_json(raw).value == value


def test_a_body_that_is_no_text_in_its_encoding_is_400() -> None:
    with pytest.raises(Refused) as refused:
        ingest.utf8(b"\xff\xfe[\x00{")  # UTF-16 by its BOM, cut in the middle of a character
    assert refused.value.status == 400


@st.composite
def events_with_a_nul(draw: st.DrawFn) -> dict[str, Any]:
    """An identify with U+0000 in one key or string value, anywhere."""
    event: dict[str, Any] = {
        "type": "identify",
        "userId": "u",
        "traits": draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    }
    spot = draw(st.sampled_from(["userId", "messageId", "trait", "key", "nested"]))
    text = draw(st.text(max_size=4)) + "\x00" + draw(st.text(max_size=4))
    if spot in ("userId", "messageId"):
        event[spot] = text
    elif spot == "trait":
        event["traits"]["t"] = text
    elif spot == "key":
        event["traits"][text] = 1
    else:
        event["context"] = {"a": [{"b": text}]}
    return event


@given(events_with_a_nul())
@hsettings(max_examples=150, deadline=None)
def test_a_nul_anywhere_is_refused_however_the_body_was_parsed(event: dict[str, Any]) -> None:
    raw = json.dumps(event).encode()
    decoded = ingest.decode_json(raw)
    assert event_checks.problem(decoded.value, plain=decoded.plain) is not None
    intake = ingest.single(decoded.value, None, Arrival.now(len(raw), plain=decoded.plain))
    assert intake.store == [] and len(intake.errors) == 1


@given(
    st.integers(0, 400),  # bytes of the shared context
    st.lists(st.integers(0, 60), min_size=1, max_size=40),  # bytes of each event's own traits
    st.integers(500, 6000),  # the limit, small so that it is reached
)
@hsettings(max_examples=150, deadline=None)
def test_a_batch_is_refused_exactly_when_it_would_be_stored_larger_than_the_limit(
    shared: int, sizes: list[int], limit: int
) -> None:
    events = [
        {"type": "identify", "userId": f"u{n}", "traits": {"p": "x" * size}}
        for n, size in enumerate(sizes)
    ]
    body = {"batch": events, "context": {"blob": "c" * shared}}
    raw = orjson.dumps(body)
    arrival = Arrival.now(len(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "MAX_STORED_BYTES", limit)
        try:
            intake = ingest.batch(body, arrival)
        except Refused as refused:
            assert refused.status == 413 and f"{limit // 1024} KB" in refused.message
            outcome = None
        else:
            outcome = intake
    merged = [{**e, "context": body["context"], "receivedAt": arrival.received_at} for e in events]
    stored = sum(len(orjson.dumps(e)) for e in merged)
    assert (outcome is None) == (stored > limit)
    if outcome is not None:
        assert len(outcome.store) == len(events)


# ---- the budget: what unproven senders hold never keeps out a proven one -------------------

operations = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.integers(1, 600)),  # enter?, proven?, size
    max_size=60,
)


@given(operations, st.integers(1, 600))
@hsettings(max_examples=300, deadline=None)
def test_unproven_senders_never_take_the_room_of_proven_ones(
    steps: list[tuple[bool, bool, int]], asked: int
) -> None:
    budget = ByteBudget(2000)
    held: list[tuple[ingest.Held, bool, int]] = []
    for enter, proven, size in steps:
        if enter or not held:
            hold = budget.hold(size, proven=proven)
            try:
                hold.__enter__()
            except Refused:
                continue
            held.append((hold, proven, size))
        else:
            hold, _, _ = held.pop(0)
            hold.__exit__()
        unproven = [s for _, p, s in held if not p]
        assert budget.unproven == sum(unproven)
        # The share is kept, but one body is always let in when no other unproven is read.
        assert budget.unproven <= budget.unproven_limit or len(unproven) == 1
    proven_in_use = sum(s for _, p, s in held if p)
    fits = proven_in_use + max(budget.unproven, budget.unproven_limit) + asked <= budget.limit
    if fits:
        budget.hold(asked, proven=True).__enter__()  # admitted whatever unproven ones hold
