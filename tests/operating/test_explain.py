"""`explain` names the Pardot id on v3 and v4, and `explain --live` compares what the service
wrote with what Pardot holds now (the fake, over HTTP): the answer to "why does Pardot say X"."""

from __future__ import annotations

import json
import re
import socket

from tests.operating.conftest import Operator, identify

ADA = {"email": "ada@example.com", "firstName": "Ada", "org_id": "acme"}


def _closed_port() -> int:
    """A port nothing listens on: bound by the system, then let go."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_explain_names_the_pardot_id_on_v4(v4: Operator) -> None:
    await _names_the_pardot_id(v4, version=4)


async def test_explain_names_the_pardot_id_on_v3_from_the_index(v3: Operator) -> None:
    await _names_the_pardot_id(v3, version=3)


async def _names_the_pardot_id(operator: Operator, *, version: int) -> None:
    await operator.enqueue(identify(1, "ada", 0, **ADA))
    await operator.deliver()
    [ada] = operator.fake.prospects_by_email("ada@example.com")
    rebuilt = await operator.run("index", "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output

    told = await operator.run("explain", "ada")
    assert told.exit_code == 0, told.output
    assert f"Pardot prospect {ada['id']}" in told.stdout
    as_json = json.loads((await operator.run("explain", "ada@example.com", "--json")).stdout)
    [prospect] = as_json["prospects"]
    assert prospect["prospect_id"] == int(ada["id"])
    # Under v3 the store keys the prospect by its email; the index knew the id.
    key = "email:ada@example.com" if version == 3 else str(ada["id"])
    assert prospect["prospect"] == key


async def test_explain_on_v3_says_when_the_index_does_not_know_the_id_and_live_finds_it(
    v3: Operator,
) -> None:
    await v3.enqueue(identify(1, "ada", 0, **ADA))
    await v3.deliver()
    [ada] = v3.fake.prospects_by_email("ada@example.com")
    told = await v3.run("explain", "ada")
    assert told.exit_code == 0, told.output
    assert "its id is not in the prospect index" in told.stdout
    calls = v3.fake.total_calls
    live = json.loads((await v3.run("explain", "ada", "--live", "--json")).stdout)
    assert v3.fake.total_calls == calls + 1  # one read, by email
    assert live["prospects"][0]["live"]["prospect_id"] == int(ada["id"])


async def test_explain_live_marks_the_field_a_marketer_changed_in_pardot(v4: Operator) -> None:
    await v4.enqueue(identify(1, "ada", 0, **ADA, is_do_not_email=True))
    await v4.deliver()
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    agrees = await v4.run("explain", "ada", "--live")
    assert agrees.exit_code == 0, agrees.output
    assert "Pardot holds every value the service wrote" in agrees.stdout

    # The marketer renames her in Pardot, after the service wrote "Ada".
    v4.fake.update_record(v4.fake.records[int(ada["id"])], {"first_name": "Augusta"})
    calls = v4.fake.total_calls
    told = await v4.run("explain", "ada", "--live")
    assert v4.fake.total_calls == calls + 1  # one read, by id
    assert told.exit_code == 4, told.output
    assert re.search(
        r"first_name\s+│ Ada\s+│ 2026-03-01 10:00:00 .*│ Augusta\s+│ DIFFERS", told.stdout
    )
    assert re.search(r"org_id\s+│ acme\s+│ .*│ acme\s+│ same", told.stdout)
    assert "1 field(s) differ" in told.stdout

    as_json = json.loads((await v4.run("explain", "ada", "--live", "--json")).stdout)
    fields = as_json["prospects"][0]["live"]["fields"]
    assert fields["first_name"] == {
        **fields["first_name"],
        "written": "Ada",
        "pardot": "Augusta",
        "differs": True,
    }
    assert fields["first_name"]["event_time"].startswith("2026-03-01T10:00:00")
    assert fields["first_name"]["written_at"] is not None  # when the service wrote it
    assert fields["org_id"]["differs"] is False
    # Written "true", read back 1: the same value, as the sync compares it.
    assert fields["is_do_not_email"]["written"] == "true"
    assert fields["is_do_not_email"]["differs"] is False


async def test_explain_live_says_pardot_no_longer_has_the_prospect(v4: Operator) -> None:
    await v4.enqueue(identify(1, "ada", 0, **ADA))
    await v4.deliver()
    [ada] = v4.fake.prospects_by_email("ada@example.com")
    v4.fake.delete_prospect(int(ada["id"]))  # by a marketer: to the recycle bin
    told = await v4.run("explain", "ada", "--live")
    assert told.exit_code == 4, told.output
    assert f"Pardot has no prospect with id {ada['id']}" in told.stdout
    assert "deleted or merged in Pardot" in told.stdout
    live = json.loads((await v4.run("explain", "ada", "--live", "--json")).stdout)
    assert live["prospects"][0]["live"]["state"] == "missing"


async def test_explain_live_says_when_pardot_cannot_be_reached(v4: Operator) -> None:
    await v4.enqueue(identify(1, "ada", 0, **ADA))
    await v4.deliver()
    away = f"http://127.0.0.1:{_closed_port()}"
    told = await v4.run("explain", "ada", "--live", PARDOT_BASE_URL=away)
    assert told.exit_code == 3, told.output
    assert "Pardot could not be read" in told.stdout
    # What the service wrote is still shown.
    assert "first_name" in told.stdout and "Ada" in told.stdout
    as_json = await v4.run("explain", "ada", "--live", "--json", PARDOT_BASE_URL=away)
    assert as_json.exit_code == 3
    assert json.loads(as_json.stdout)["prospects"][0]["live"]["state"] == "unreachable"
