"""/status, /status.json and /metrics through `serve`: the admin key, the figures, the metrics."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import timedelta

import httpx

from adapters.sqlite.stores import SQLiteStores
from domain.ports import IndexState
from tests.child_server import start_server
from tests.service.conftest import WRITE_KEY, Stack

ADMIN_KEY = "status-admin-key"
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:x".encode()).decode()


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()


def _identify(n: int, user: str, minute: int, **traits: object) -> dict[str, object]:
    return {
        "type": "identify",
        "messageId": f"s-{n}",
        "userId": user,
        "timestamp": f"2026-03-01T10:{minute:02d}:00Z",
        "traits": {"email": f"{user}@example.com", **traits},
    }


async def test_with_the_admin_key_status_and_metrics_need_it(v4_stack: Stack) -> None:
    service = await v4_stack.service(DESTINATION_ADMIN_KEY=ADMIN_KEY)
    async with httpx.AsyncClient(base_url=service.url) as http:
        for path in ("/status", "/status.json", "/metrics"):
            refused = await http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
            wrong = await http.get(path, headers={"Authorization": "Bearer not-it"})
            assert wrong.status_code == 401
            assert (
                await http.get(path, headers={"Authorization": _basic("nope")})
            ).status_code == 401
            bearer = await http.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert bearer.status_code == 200, path
            basic = await http.get(path, headers={"Authorization": _basic(ADMIN_KEY)})
            assert basic.status_code == 200, path
        page = await http.get("/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert "status/assets/uPlot.iife.min.js" in page.text and "cdn" not in page.text.lower()
        # The chart library is not a secret; the door and the health checks are unchanged.
        asset = await http.get("/status/assets/uPlot.iife.min.js")
        assert asset.status_code == 200 and "uPlot" in asset.text[:200]
        assert (await http.get("/status/assets/other.js")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
        event = _identify(1, "ada", 0)
        sent = await http.post("/v1/identify", json=event, headers={"Authorization": BASIC})
        assert sent.status_code == 200
    assert not any(ADMIN_KEY in line for line in service.log)


async def test_without_the_admin_key_they_stay_open_with_one_warning_off_loopback(
    v4_stack: Stack,
) -> None:
    local = await v4_stack.service()
    async with httpx.AsyncClient(base_url=local.url) as http:
        assert (await http.get("/status")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
    warning = "DESTINATION_ADMIN_KEY is not set"
    assert not any(warning in line for line in local.log)
    wide = await start_server(
        "-m", "entrypoints.cli.main", "serve", "--host", "0.0.0.0", "--port", "0",
        env=v4_stack.env(),
    )  # fmt: skip
    try:
        assert sum(warning in line for line in wide.log) == 1
    finally:
        await wide.stop()
    keyed = await start_server(
        "-m", "entrypoints.cli.main", "serve", "--host", "0.0.0.0", "--port", "0",
        env=v4_stack.env(DESTINATION_ADMIN_KEY=ADMIN_KEY),
    )  # fmt: skip
    try:
        assert not any(warning in line for line in keyed.log)
    finally:
        await keyed.stop()


async def test_metrics_and_figures_after_deliveries(v4_stack: Stack) -> None:
    service = await v4_stack.service()
    async with httpx.AsyncClient(base_url=service.url) as http:
        batch = {"batch": [_identify(1, "ada", 5, plan="new"), _identify(2, "bob", 0)]}
        assert (
            await http.post("/v1/batch", json=batch, headers={"Authorization": BASIC})
        ).is_success
        await v4_stack.wait_until(service.url, lambda n: n("delivered") == 2)
        # Older than what ada's prospect holds: delivered, and unchanged.
        older = _identify(3, "ada", 0, plan="old")
        assert (
            await http.post("/v1/identify", json=older, headers={"Authorization": BASIC})
        ).is_success
        await v4_stack.wait_until(service.url, lambda n: n("delivered") == 3)
        metrics = (await http.get("/metrics")).text
        figures = (await http.get("/status.json")).json()
    assert 'pardot_destination_deliveries_total{outcome="delivered"} 2.0' in metrics
    assert 'pardot_destination_deliveries_total{outcome="unchanged"} 1.0' in metrics
    assert re.search(
        r'pardot_destination_pardot_calls_total\{code="ok",operation="read_by_email"\} [1-9]',
        metrics,
    )
    assert re.search(
        r'pardot_destination_pardot_calls_total\{code="ok",operation="create"\} 2\.0', metrics
    )
    assert "pardot_destination_token_refreshes_total 1.0" in metrics
    assert "pardot_destination_queue_oldest_pending_seconds 0.0" in metrics
    assert 'pardot_destination_events_received_total{type="identify"} 3.0' in metrics
    assert "python_info{" in metrics and "process_" in metrics  # the default registry too
    assert figures["queue"]["delivered"] == 3 and figures["depth"] == 0
    assert sum(figures["chart"]["delivered"]) == 3 and figures["ready"] is True
    assert figures["token"]["state"] == "ok" and figures["token"]["refreshes"] == 1
    assert figures["deliveries_per_minute"] == 0.3


def _figure(metrics: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return None if found is None else float(found[1])


async def test_the_index_age_and_refreshes_in_status_json_and_metrics(v4_stack: Stack) -> None:
    # No refresh has completed yet: no age to export, and nothing counted.
    service = await v4_stack.service(DESTINATION_INDEX_REFRESH_SECONDS="3600")
    async with httpx.AsyncClient(base_url=service.url) as http:
        metrics = (await http.get("/metrics")).text
        index = (await http.get("/status.json")).json()["index"]
    assert _figure(metrics, "pardot_destination_index_age_seconds") is None
    assert _figure(metrics, "pardot_destination_index_refreshes_total") == 0
    assert index["age_seconds"] is None and index["refreshes_last_minute"] == 0
    await service.terminate()

    # A complete index whose watermark's refresh began 130 s ago on the store's clock.
    async with SQLiteStores.opened(v4_stack.tmp / "queue.db") as stores:
        store_index = stores.prospect_index()
        now = await store_index.clock()
        await store_index.save_state(
            IndexState(
                complete=True,
                high_water="2026-03-01 10:00:00",
                watermark_began=now - timedelta(seconds=130),
                recent_refreshes=(now - timedelta(seconds=130), now - timedelta(seconds=20)),
            )
        )
    service = await v4_stack.service(DESTINATION_INDEX_REFRESH_SECONDS="3600")
    async with httpx.AsyncClient(base_url=service.url) as http:
        metrics = (await http.get("/metrics")).text
        index = (await http.get("/status.json")).json()["index"]
        age = _figure(metrics, "pardot_destination_index_age_seconds")
        assert age is not None and 130 <= age < 160
        assert 130 <= index["age_seconds"] < 160 and index["refreshes_last_minute"] == 1
        assert _figure(metrics, "pardot_destination_index_refreshes_total") == 0

        # An event that arrived after that refresh began: the keeper refreshes before deciding.
        sent = await http.post(
            "/v1/identify", json=_identify(1, "ada", 0), headers={"Authorization": BASIC}
        )
        assert sent.is_success
        await v4_stack.wait_until(service.url, lambda n: n("delivered") == 1)
        metrics = (await http.get("/metrics")).text
        index = (await http.get("/status.json")).json()["index"]
    refreshes = _figure(metrics, "pardot_destination_index_refreshes_total")
    assert refreshes is not None and refreshes >= 1
    age = _figure(metrics, "pardot_destination_index_age_seconds")
    assert age is not None and age < 60
    assert index["age_seconds"] < 60 and index["refreshes_last_minute"] >= 2


async def test_the_slots_busy_ratio_while_calls_are_in_flight_and_when_idle(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service()
    name = "pardot_destination_pardot_slots_busy_ratio"
    async with httpx.AsyncClient(base_url=service.url) as http:
        idle = _figure((await http.get("/metrics")).text, name)
        assert idle is not None and idle < 0.01  # start-up's calls answered at once, if any
        figures = (await http.get("/status.json")).json()
        assert figures["pardot_slots_busy_ratio"] < 0.01 and figures["pardot_slots"] == 5

        v4_stack.fake.latency = 1.5  # a slow Pardot: calls stay in flight
        batch = {"batch": [_identify(n, f"slow{n}", 0) for n in range(3)]}
        assert (
            await http.post("/v1/batch", json=batch, headers={"Authorization": BASIC})
        ).is_success
        busy, stored = 0.0, 0.0
        deadline = asyncio.get_running_loop().time() + 15
        while (busy <= 0.0 or stored <= 0.0) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            busy = max(busy, _figure((await http.get("/metrics")).text, name) or 0.0)
            stored = max(stored, (await http.get("/status.json")).json()["pardot_slots_busy_ratio"])
        assert busy > 0.0, "/metrics never showed a busy slot while calls were in flight"
        assert stored > 0.0, "/status.json never showed the busy time recorded in the store"
        page = (await http.get("/status")).text
    assert 'id="slots-busy"' in page
