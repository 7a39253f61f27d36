"""A repeated messageId is skipped only within its sender's scope, as the queue keys it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.events import IdentifyEvent, parse_event
from domain.matching import DEFAULT_DESTINATION_KEYS
from domain.settings import DestinationSettings
from domain.sync.grouping import plan_events
from tests.strategies import events, settings

SENDERS = ["", "webhook-signature", "key:aaaa", "key:bbbb"]
SHARED_IDS = ["m1", "m2", "m3"]  # few, so senders collide often


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[IdentifyEvent]:
    """Events of several senders interleaved, their messageIds drawn from one small pool."""
    batch: list[IdentifyEvent] = []
    for payload in draw(st.lists(events(), min_size=1, max_size=12)):
        event: dict[str, Any] = dict(payload)
        choice = draw(st.sampled_from([*SHARED_IDS, None, "own"]))
        if choice is None:
            del event["messageId"]
        elif choice != "own":
            event["messageId"] = choice
        batch.append(parse_event(event, sender=draw(st.sampled_from(SENDERS))))
    return batch


def outcomes_of(batch: list[IdentifyEvent], config: DestinationSettings) -> list[Any]:
    planned = plan_events(
        batch, config, destination_keys=DEFAULT_DESTINATION_KEYS, create_campaign_id=None
    )
    written = dict(planned.writes)
    return [written.get(i, outcome) for i, outcome in enumerate(planned.outcomes)]


@given(mixed_batches(), settings())
@hsettings(max_examples=80, deadline=None)
def test_each_senders_events_are_decided_as_if_sent_alone(
    batch: list[IdentifyEvent], config: DestinationSettings
) -> None:
    mixed = outcomes_of(batch, config)
    for sender in SENDERS:
        mine = [i for i, event in enumerate(batch) if event.sender == sender]
        alone = outcomes_of([batch[i] for i in mine], config)
        assert [mixed[i] for i in mine] == alone, sender


def test_another_senders_message_id_does_not_skip_an_event() -> None:
    payload = {"type": "identify", "userId": "b", "messageId": "m", "traits": {"email": "b@x.io"}}
    config = DestinationSettings(api_version=3, account_id="1", business_unit_id="0Uv" + "0" * 15)
    first = parse_event({**payload, "userId": "a"}, sender="key:a")
    theirs = parse_event(payload, sender="key:b")
    again = parse_event(payload, sender="key:b")
    assert [type(o).__name__ for o in outcomes_of([first, theirs, again], config)] == [
        "UpsertByEmail",
        "UpsertByEmail",
        "Skipped",
    ]


def test_the_sender_is_never_read_from_the_payload() -> None:
    event = parse_event({"type": "identify", "userId": "u", "_sender": "key:b", "sender": "x"})
    assert event.sender == ""
