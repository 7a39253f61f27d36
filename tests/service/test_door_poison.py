"""One bad event must not hurt others: what cannot be delivered is refused at the door.

Each poison event here was once accepted with 200 and then broke delivery for every event
leased with it. Now it gets a 400 naming the problem; in a batch its neighbours are stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from entrypoints.http.event_checks import MAX_DEPTH
from tests.service.door import AUTH, Door, identify, open_door


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with open_door() as opened:
        yield opened


def nested(levels: int) -> Any:
    """A value that adds `levels` levels of nesting: [[...[1]...]]."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def raw_event(traits_json: str, n: int = 1) -> bytes:
    """An identify whose traits are given as JSON text (for what json.dumps will not write)."""
    return (
        f'{{"type":"identify","messageId":"m{n}","userId":"u{n}","traits":{traits_json}}}'
    ).encode()


POISON_TRAITS = {
    "lone surrogate in a value": '{"email":"a@x.io","name":"\\ud800"}',
    "lone low surrogate": '{"email":"a@x.io","name":"ok \\udfff ok"}',
    "lone surrogate in a key": '{"email":"a@x.io","\\ud83d":"x"}',
    "surrogate deep inside": '{"email":"a@x.io","a":{"b":["\\ud800"]}}',
    "NaN": '{"email":"a@x.io","score":NaN}',
    "Infinity": '{"email":"a@x.io","score":Infinity}',
    "-Infinity": '{"email":"a@x.io","score":-Infinity}',
    "1e999": '{"email":"a@x.io","score":1e999}',
    "a number past a double's range": '{"email":"a@x.io","n":' + "9" * 400 + "}",
    "600 levels deep": '{"email":"a@x.io","deep":' + "[" * 600 + "]" * 600 + "}",
}


@pytest.mark.parametrize("traits", POISON_TRAITS.values(), ids=POISON_TRAITS.keys())
async def test_a_poison_event_alone_is_400_and_nothing_is_stored(door: Door, traits: str) -> None:
    answer = await door.client.post(
        "/v1/identify",
        content=raw_event(traits),
        auth=AUTH,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_event"
    assert await door.stored() == 0


@pytest.mark.parametrize("traits", POISON_TRAITS.values(), ids=POISON_TRAITS.keys())
async def test_in_a_batch_only_the_poison_event_is_refused(door: Door, traits: str) -> None:
    good = [json.dumps(identify(n)) for n in (1, 3)]
    body = f'{{"batch":[{good[0]},{raw_event(traits, 2).decode()},{good[1]}]}}'.encode()
    answer = await door.client.post(
        "/v1/batch", content=body, auth=AUTH, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    refusal = answer.json()
    assert refusal["accepted"] == 2
    assert [(e["index"], e["messageId"]) for e in refusal["errors"]] == [(1, "m2")]
    assert sorted(p["messageId"] for p in await door.payloads()) == ["m1", "m3"]


async def test_the_refusal_names_where_and_why_without_echoing_the_value(door: Door) -> None:
    body = raw_event('{"email":"a@x.io","secret":"top \\ud800 secret"}')
    answer = await door.client.post(
        "/v1/identify", content=body, auth=AUTH, headers={"Content-Type": "application/json"}
    )
    message = answer.json()["message"]
    assert "traits.secret" in message and "surrogate" in message
    assert "top" not in message


async def test_nesting_is_allowed_up_to_the_limit_and_refused_past_it(door: Door) -> None:
    # The event is level 1 and traits level 2: MAX_DEPTH - 2 more levels reach the limit.
    at_limit = identify(1, traits={"email": "a@x.io", "deep": nested(MAX_DEPTH - 2)})
    past = identify(2, traits={"email": "b@x.io", "deep": nested(MAX_DEPTH - 1)})
    answer = await door.client.post("/v1/batch", json={"batch": [at_limit, past]}, auth=AUTH)
    errors = answer.json()["errors"]
    assert [e["index"] for e in errors] == [1] and "deeper than 32" in errors[0]["reason"]
    assert [p["messageId"] for p in await door.payloads()] == ["m1"]


UNREPRESENTABLE = [
    "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:30:00+01:00",  # 1969 in UTC
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",  # before year 1 in UTC: datetime itself cannot hold it
    "1900-06-01",
]


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize("when", UNREPRESENTABLE)
async def test_a_time_that_cannot_be_represented_in_utc_is_refused(
    door: Door, field: str, when: str
) -> None:
    batch = [identify(1, **{field: when}), identify(2)]
    answer = await door.client.post("/v1/batch", json={"batch": batch}, auth=AUTH)
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error["index"] == 0 and field in error["reason"]
    side = "past the year 9999" if when.startswith("9999") else "before 1970"
    assert side in error["reason"]
    assert [p["messageId"] for p in await door.payloads()] == ["m2"]


ACCEPTED = [
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:30:00+01:00",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:30:00-01:00",
    "2014-03-09T13:29:56.123456789Z",  # nine fractional digits
    "2049-01-01T00:00:00+14:00",  # a client clock years ahead is accepted, not refused
    "2001-02-03T04:05:06",  # no zone: read as UTC
]


@pytest.mark.parametrize("when", ACCEPTED)
async def test_every_other_time_is_accepted(door: Door, when: str) -> None:
    answer = await door.client.post(
        "/v1/identify", json=identify(1, timestamp=when, sentAt=when), auth=AUTH
    )
    assert answer.status_code == 200, answer.text
    assert await door.stored() == 1


async def test_surrogate_pairs_and_other_unicode_are_fine(door: Door) -> None:
    body = raw_event('{"email":"a@x.io","name":"\\ud83d\\ude00 Zoë 東京"}')
    answer = await door.client.post(
        "/v1/identify", content=body, auth=AUTH, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200
    [payload] = await door.payloads()
    assert payload["traits"]["name"] == "\U0001f600 Zoë 東京"
