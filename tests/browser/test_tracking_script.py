"""/pardot.js over HTTP, no browser needed: caching, a missing account id, safe settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from entrypoints.config import TrackingConfig
from entrypoints.http.tracking import _js_literal, add_tracking_routes, build_script

CONFIG = TrackingConfig("77777", "99", tracker_url="https://go.example.com/")


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_tracking_routes(app, CONFIG)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_serves_the_script_with_its_settings_and_cache_headers(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/pardot.js")

    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    assert response.headers["ETag"].startswith('"')
    body = await response.text()
    assert '{"accountId": "77777", "campaignId": "99", "trackerUrl": "https://go.example.com"}' in (
        body
    )


@pytest.mark.parametrize("tag", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_a_matching_if_none_match_gets_a_304(
    client: TestClient[web.Request, web.Application], tag: str
) -> None:
    etag = (await client.get("/pardot.js")).headers["ETag"]

    response = await client.get("/pardot.js", headers={"If-None-Match": tag.format(etag=etag)})

    assert response.status == 304
    assert response.headers["ETag"] == etag
    assert await response.read() == b""


async def test_a_stale_etag_gets_the_script(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/pardot.js", headers={"If-None-Match": '"stale"'})

    assert response.status == 200


async def test_without_an_account_id_the_script_is_one_console_error() -> None:
    for account_id in (None, ""):
        script = build_script(TrackingConfig(account_id))

        assert script.startswith('console.error("pardot-destination: PARDOT_ACCOUNT_ID is not set')
        assert "pd.js" not in script


@pytest.mark.parametrize(
    "config",
    [
        {"account_id": "77a77"},
        {"account_id": "\u0667\u0667"},  # Arabic-Indic digits: str.isdigit() says yes
        {"account_id": "1", "campaign_id": "4 2"},
        {"account_id": "1", "tracker_url": "pi.pardot.com"},
        {"account_id": "1", "tracker_url": "ftp://pi.pardot.com"},
        {"account_id": "1", "tracker_url": "https://pi.pardot.com/pd.js"},
        {"account_id": "1", "tracker_url": "https://x.example?</script>"},
    ],
)
def test_rejects_settings_that_cannot_work(config: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        TrackingConfig(**config)


def test_settings_cannot_close_an_inline_script_tag() -> None:
    literal = _js_literal({"a": "</script><!-- & \u2028"})

    assert "<" not in literal
    assert ">" not in literal
    assert "&" not in literal
    assert "\u2028" not in literal
