"""What every EventQueue does, checked against the in-memory and the SQLite queue alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain.ports import QueueFull, Settlement
from tests.queue.conftest import Clock, QueueFactory, identify


def ids(events: list[Any]) -> list[int]:
    return [event.id for event in events]


async def test_put_lease_settle_round_trip(queue: Any, clock: Clock) -> None:
    payload = identify("m1", traits={"email": "ada@example.com", "nested": {"ok": [1, 2]}})
    assert await queue.put([payload]) == 1

    [event] = await queue.lease(10, 30)
    assert event.payload == payload
    assert event.attempts == 1
    assert event.received_at == clock.now
    assert (await queue.counts())["leased"] == 1

    await queue.settle({event.id: Settlement("delivered", "created prospect 7")})
    assert await queue.lease(10, 30) == []
    counts = await queue.counts()
    assert counts == {
        "pending": 0,
        "leased": 0,
        "retry": 0,
        "delivered": 1,
        "skipped": 0,
        "rejected": 0,
        "dead": 0,
    }


async def test_lease_hands_out_oldest_first_up_to_the_limit(queue: Any) -> None:
    await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(5)])
    first = await queue.lease(2, 30)
    rest = await queue.lease(10, 30)
    assert [e.payload["messageId"] for e in first] == ["m0", "m1"]
    assert [e.payload["messageId"] for e in rest] == ["m2", "m3", "m4"]


async def test_duplicates_by_message_id_are_stored_once_in_any_state(queue: Any) -> None:
    assert await queue.put([identify("m1"), identify("m1"), identify("m2")]) == 2
    assert await queue.put([identify("m2", traits={"changed": True})]) == 0
    events = await queue.lease(10, 30)
    await queue.settle({e.id: Settlement("delivered", "ok") for e in events})
    assert await queue.put([identify("m1")]) == 0
    assert sum((await queue.counts()).values()) == 2


async def test_events_without_a_message_id_are_never_deduplicated(queue: Any) -> None:
    assert await queue.put([identify(None), identify(None)]) == 2
    assert await queue.put([identify(None, messageId="")]) == 1
    assert (await queue.counts())["pending"] == 3


async def test_an_expired_lease_makes_the_event_available_again(queue: Any, clock: Clock) -> None:
    await queue.put([identify("m1")])
    [first] = await queue.lease(10, 30)
    clock.advance(29)
    assert await queue.lease(10, 30) == []
    clock.advance(2)
    [again] = await queue.lease(10, 30)
    assert again.id == first.id
    assert again.attempts == 2


async def test_retry_waits_for_not_before(queue: Any, clock: Clock) -> None:
    await queue.put([identify("m1"), identify("m2", user="u2")])
    first, second = await queue.lease(10, 30)
    await queue.settle(
        {
            first.id: Settlement("retry", "122", not_before=clock.now + timedelta(minutes=5)),
            second.id: Settlement("retry", "dropped connection"),
        }
    )
    assert (await queue.counts())["retry"] == 2
    assert ids(await queue.lease(10, 30)) == [second.id]  # no not_before: due at once
    await queue.settle({second.id: Settlement("delivered", "ok")})
    clock.advance(299)
    assert await queue.lease(10, 30) == []
    clock.advance(1)
    [back] = await queue.lease(10, 30)
    assert (back.id, back.attempts) == (first.id, 2)


async def test_a_retry_that_spent_nothing_hands_its_leases_attempt_back(
    queue: Any, clock: Clock
) -> None:
    await queue.put([identify("m1"), identify("m2", user="u2")])
    first, second = await queue.lease(10, 30)
    await queue.settle(
        {
            first.id: Settlement("retry", "the store went away", lease=first.lease, spent=False),
            second.id: Settlement("retry", "502", lease=second.lease),
        }
    )
    again = {event.id: event.attempts for event in await queue.lease(10, 30)}
    assert again == {first.id: 1, second.id: 2}
    # A settlement under a lease since taken over changes nothing, its refund neither.
    clock.advance(31)
    [taken] = [e for e in await queue.lease(10, 30) if e.id == first.id]
    late = Settlement("retry", "late", lease=first.lease, spent=False)
    assert await queue.settle({first.id: late}) == set()
    await queue.settle({first.id: Settlement("retry", "502", lease=taken.lease)})
    [back] = [e for e in await queue.lease(10, 30) if e.id == first.id]
    assert (taken.attempts, back.attempts) == (2, 3)


async def test_one_person_is_never_leased_twice_at_once(queue: Any, clock: Clock) -> None:
    await queue.put([identify("a1", user="ada")])
    [a1] = await queue.lease(1, 30)
    await queue.put([identify("a2", user="ada"), identify("b1", user="bob")])

    assert [e.payload["messageId"] for e in await queue.lease(10, 30)] == ["b1"]
    await queue.settle({a1.id: Settlement("delivered", "ok")})
    assert [e.payload["messageId"] for e in await queue.lease(10, 30)] == ["a2"]


async def test_anonymous_id_orders_events_when_there_is_no_user_id(queue: Any) -> None:
    await queue.put([identify("a1", user=None, anonymousId="anon-1")])
    await queue.lease(10, 30)
    await queue.put([identify("a2", user=None, anonymousId="anon-1")])
    assert await queue.lease(10, 30) == []


async def test_one_persons_due_events_are_leased_together(queue: Any) -> None:
    users = ["ada", "bob", "ada", "bob", "ada"]
    await queue.put([identify(f"m{i}", user=user) for i, user in enumerate(users)])
    ada = await queue.lease(3, 30)
    assert [e.payload["messageId"] for e in ada] == ["m0", "m2", "m4"]
    bob = await queue.lease(10, 30)
    assert [e.payload["messageId"] for e in bob] == ["m1", "m3"]


async def test_a_limit_cuts_a_person_short_and_holds_back_the_rest(queue: Any) -> None:
    users = ["ada", "ada", "ada", "bob"]
    await queue.put([identify(f"m{i}", user=user) for i, user in enumerate(users)])
    first = await queue.lease(2, 30)
    assert [e.payload["messageId"] for e in first] == ["m0", "m1"]
    assert [e.payload["messageId"] for e in await queue.lease(10, 30)] == ["m3"]
    await queue.settle({e.id: Settlement("delivered", "ok") for e in first})
    assert [e.payload["messageId"] for e in await queue.lease(10, 30)] == ["m2"]


async def test_final_states_are_counted_and_listed(queue: Any, clock: Any) -> None:
    await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(4)])
    arrived = clock.now
    clock.advance(90)
    events = await queue.lease(10, 30)
    outcomes: list[Any] = ["delivered", "skipped", "rejected", "dead"]
    await queue.settle(
        {
            e.id: Settlement(state, f"because {state}")
            for e, state in zip(events, outcomes, strict=True)
        }
    )
    counts = await queue.counts()
    assert [counts[state] for state in outcomes] == [1, 1, 1, 1]
    [dead] = await queue.recent("dead")
    assert dead == {
        "id": events[3].id,
        "messageId": "m3",
        "reason": "because dead",
        "attempts": 1,
        "payload": identify("m3", user="u3"),
        "settled_at": clock.now,  # the last try
        "received_at": arrived,
    }


async def test_recent_lists_newest_first(queue: Any) -> None:
    await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(5)])
    listed = await queue.recent("pending", limit=2)
    assert [row["messageId"] for row in listed] == ["m4", "m3"]
    with pytest.raises(ValueError, match="unknown state"):
        await queue.recent("lost")


async def test_requeue_dead_gives_dead_events_a_fresh_start(queue: Any) -> None:
    await queue.put([identify("m1"), identify("m2", user="u2")])
    first, second = await queue.lease(10, 30)
    await queue.settle(
        {first.id: Settlement("dead", "bad config"), second.id: Settlement("delivered", "ok")}
    )
    assert await queue.requeue_dead() == 1
    [again] = await queue.lease(10, 30)
    assert (again.id, again.attempts) == (first.id, 1)
    assert await queue.requeue_dead() == 0


async def test_pause_is_stored_and_lifted(queue: Any, clock: Clock) -> None:
    assert await queue.paused_until() is None
    midnight = clock.now + timedelta(hours=12)
    await queue.pause_until(midnight)
    assert await queue.paused_until() == midnight
    await queue.pause_until(None)
    assert await queue.paused_until() is None


async def test_a_full_queue_refuses_new_events(make_queue: QueueFactory) -> None:
    queue = await make_queue(max_pending=2)
    await queue.put([identify("m1"), identify("m2", user="u2")])
    with pytest.raises(QueueFull):
        await queue.put([identify("m3", user="u3")])
    [first, _] = await queue.lease(1, 30) + await queue.lease(1, 30)
    with pytest.raises(QueueFull):  # leased events still await delivery
        await queue.put([identify("m3", user="u3")])
    await queue.settle({first.id: Settlement("delivered", "ok")})
    assert await queue.put([identify("m3", user="u3")]) == 1


async def test_a_late_settlement_wins_over_an_earlier_one(queue: Any, clock: Clock) -> None:
    await queue.put([identify("m1")])
    [slow] = await queue.lease(1, 30)
    clock.advance(31)
    [fast] = await queue.lease(1, 30)
    await queue.settle({fast.id: Settlement("delivered", "ok")})
    await queue.settle({slow.id: Settlement("retry", "timed out")})
    counts = await queue.counts()
    assert (counts["retry"], counts["delivered"]) == (1, 0)


async def test_settling_as_pending_is_refused(queue: Any) -> None:
    await queue.put([identify("m1")])
    [event] = await queue.lease(1, 30)
    with pytest.raises(ValueError, match="cannot settle"):
        await queue.settle({event.id: Settlement("pending", "?")})  # type: ignore[arg-type]


async def test_a_leased_payload_is_a_copy(queue: Any) -> None:
    payload = identify("m1")
    await queue.put([payload])
    payload["traits"]["email"] = "changed@example.com"
    [event] = await queue.lease(1, 30)
    assert event.payload["traits"]["email"] == "u1@example.com"


async def test_nothing_to_do_is_cheap_and_harmless(queue: Any) -> None:
    assert await queue.put([]) == 0
    assert await queue.lease(10, 30) == []
    await queue.settle({})
    async with queue as same:
        assert same is queue


async def test_purge_forgets_finished_events_but_keeps_open_and_dead_ones(
    queue: Any, clock: Clock
) -> None:
    await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(5)])
    leased = await queue.lease(10, 60)
    states = ["delivered", "skipped", "rejected", "dead", "retry"]
    await queue.settle(
        {e.id: Settlement(state, "x") for e, state in zip(leased, states, strict=True)}
    )
    assert await queue.purge(clock.now) == 0  # settled at `now`: not before the cutoff
    clock.advance(10)
    assert await queue.purge(clock.now) == 3
    counts = {state: n for state, n in (await queue.counts()).items() if n}
    assert counts == {"dead": 1, "retry": 1}
    assert await queue.put([identify("m0", user="u0")]) == 1  # its messageId is free again
    assert await queue.put([identify("m3", user="u3")]) == 0  # a dead letter still dedupes


async def _two_dead(queue: Any, clock: Clock) -> list[Any]:
    await queue.put([identify("d1", user="u1"), identify("d2", user="u2"), identify("ok", "u3")])
    leased = await queue.lease(10, 30)
    states = ["dead", "dead", "delivered"]
    await queue.settle(
        {e.id: Settlement(s, f"why {s}") for e, s in zip(leased, states, strict=True)}
    )
    return leased


async def test_a_dead_letter_is_shown_by_id_and_only_if_dead(queue: Any, clock: Clock) -> None:
    first, _, delivered = await _two_dead(queue, clock)
    shown = await queue.dead_letter(first.id)
    assert shown["messageId"] == "d1" and shown["reason"] == "why dead"
    assert shown["attempts"] == 1 and shown["settled_at"] == clock.now
    assert await queue.dead_letter(delivered.id) is None
    assert await queue.dead_letter(999_999) is None


async def test_replay_requeues_only_the_named_dead_events_keeping_their_arrival(
    queue: Any, clock: Clock
) -> None:
    arrived = clock.now
    first, second, delivered = await _two_dead(queue, clock)
    clock.advance(3600)
    assert await queue.replay([first.id, delivered.id, 999_999]) == [first.id]
    [again] = await queue.lease(10, 30)
    assert again.id == first.id and again.attempts == 1 and again.received_at == arrived
    assert [row["id"] for row in await queue.recent("dead")] == [second.id]


async def test_purge_dead_forgets_only_old_dead_letters(queue: Any, clock: Clock) -> None:
    await _two_dead(queue, clock)
    assert await queue.purge_dead(clock.now) == 0  # settled at this very moment: not before
    clock.advance(60)
    assert await queue.purge_dead(clock.now) == 2
    counts = await queue.counts()
    assert counts["dead"] == 0 and counts["delivered"] == 1


async def test_oldest_pending_is_the_arrival_of_the_oldest_open_event(
    queue: Any, clock: Clock
) -> None:
    assert await queue.oldest_pending() is None
    first_arrival = clock.now
    await queue.put([identify("a", user="u1")])
    clock.advance(10)
    await queue.put([identify("b", user="u2")])
    assert await queue.oldest_pending() == first_arrival
    [a, b] = await queue.lease(10, 30)
    await queue.settle({a.id: Settlement("delivered", "ok")})
    assert await queue.oldest_pending() == first_arrival + timedelta(seconds=10)
    await queue.settle({b.id: Settlement("retry", "later")})
    assert await queue.oldest_pending() == first_arrival + timedelta(seconds=10)


async def test_a_heartbeat_keeps_a_lease_held_past_its_first_expiry(
    queue: Any, clock: Clock
) -> None:
    await queue.put([identify("m1")])
    [event] = await queue.lease(10, 10)
    for _ in range(5):  # 40 s of work, a beat every 8 s
        clock.advance(8)
        assert await queue.renew(event.lease, 10) == 1
        assert await queue.lease(10, 10) == []
    clock.advance(11)  # the beats stopped (the worker died): the event comes back
    [again] = await queue.lease(10, 10)
    assert again.id == event.id and again.lease != event.lease


async def test_a_stale_lease_can_neither_renew_nor_settle_what_another_took_over(
    queue: Any, clock: Clock
) -> None:
    await queue.put([identify("m1")])
    [stale] = await queue.lease(10, 10)
    clock.advance(11)
    [fresh] = await queue.lease(10, 10)
    assert await queue.renew(stale.lease, 10) == 0
    settled = await queue.settle(
        {stale.id: Settlement("dead", "stale worker gave up", lease=stale.lease)}
    )
    assert settled == set()
    assert (await queue.counts())["leased"] == 1
    ok = Settlement("delivered", "ok", lease=fresh.lease)
    assert await queue.settle({fresh.id: ok}) == {fresh.id}
    assert (await queue.counts())["delivered"] == 1
    # A settlement with its lease settles only once: a repeat finds the lease gone.
    assert await queue.settle({fresh.id: ok}) == set()


async def test_settle_names_exactly_the_events_it_settled(queue: Any, clock: Clock) -> None:
    await queue.put([identify("m1"), identify("m2", user="u2")])
    first, second = await queue.lease(10, 10)
    clock.advance(11)
    [taken] = await queue.lease(1, 10)  # another worker took the oldest one over
    settled = await queue.settle(
        {e.id: Settlement("delivered", "ok", lease=first.lease) for e in (first, second)}
    )
    assert settled == {first.id, second.id} - {taken.id}
