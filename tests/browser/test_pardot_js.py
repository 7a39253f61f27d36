"""Pardot's tracking code in a real browser: the plain <script> and the analytics.js plugin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Page

from entrypoints.config import TrackingConfig
from tests.browser.conftest import ACCOUNT_ID, CAMPAIGN_ID, Tracker

pytestmark = pytest.mark.browser

COOKIE_SUFFIX = int(ACCOUNT_ID) - 1000
LOAD_PLUGIN = """async () => {
  window.plugin = PardotDestination.createPlugin();
  await plugin.load();
}"""


async def test_sets_the_pardot_globals_and_loads_pd_js_from_the_tracker(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/")

    assert await page.evaluate("[piAId, piCId, piHostname]") == [
        ACCOUNT_ID,
        CAMPAIGN_ID,
        tracker.url.removeprefix("http://"),
    ]
    assert len(tracker.hits("/pd.js")) == 1
    assert await page.evaluate("pardotViews") == [site + "/"]


async def test_included_twice_and_loaded_again_by_the_plugin_pd_js_loads_once(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/twice")
    await page.evaluate(LOAD_PLUGIN)

    assert len(tracker.hits("/pd.js")) == 1
    assert await page.evaluate("pardotViews.length") == 1


async def test_pi_campaign_id_on_the_page_url_overrides_the_campaign(page: Page, site: str) -> None:
    await page.goto(site + "/?pi_campaign_id=42")

    assert await page.evaluate("piCId") == "42"


async def test_manual_autoload_leaves_loading_to_the_plugin(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/manual")
    assert tracker.hits("/pd.js") == []

    await page.evaluate(LOAD_PLUGIN)

    assert len(tracker.hits("/pd.js")) == 1
    assert await page.evaluate("plugin.isLoaded()") is True


async def test_the_readme_analytics_js_snippet_registers_the_plugin_and_loads_pd_js_once(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/segment")
    await page.wait_for_function("window.registered && registered.isLoaded()")

    assert await page.evaluate("registered.name") == "Pardot"
    assert len(tracker.hits("/pd.js")) == 1
    assert await page.evaluate("pardotViews") == [site + "/segment"]


async def test_plugin_has_the_shape_analytics_js_expects(page: Page, site: str) -> None:
    await page.goto(site + "/")

    shape = await page.evaluate(
        """() => {
      const p = PardotDestination.createPlugin();
      return [p.name, p.type, typeof p.version, typeof p.load, typeof p.isLoaded,
              typeof p.page, typeof p.identify, PardotDestination.plugin.name];
    }"""
    )
    assert shape == ["Pardot", "destination", "string", *["function"] * 4, "Pardot"]


async def test_first_page_call_does_not_count_the_landing_page_twice_then_spa_pages_count(
    page: Page, site: str
) -> None:
    await page.goto(site + "/")
    await page.evaluate(LOAD_PLUGIN)

    await page.evaluate("plugin.page(segmentContext('page'))")
    await page.evaluate("history.pushState({}, '', '/pricing?plan=pro')")
    await page.evaluate("plugin.page(segmentContext('page', {properties: {url: location.href}}))")

    assert await page.evaluate("pardotViews") == [site + "/", site + "/pricing?plan=pro"]


async def test_first_page_call_after_an_spa_navigation_is_reported(page: Page, site: str) -> None:
    await page.goto(site + "/")
    await page.evaluate("history.pushState({}, '', '/docs')")
    await page.evaluate(LOAD_PLUGIN)

    await page.evaluate("plugin.page(segmentContext('page'))")

    assert await page.evaluate("pardotViews") == [site + "/", site + "/docs"]


@pytest.mark.parametrize(
    ("integrations", "reported"),
    [
        ({"Pardot": False}, False),
        ({"All": False}, False),
        ({"All": False, "Pardot": True}, True),
        ({"All": False, "Pardot": {}}, True),
        ({"Other": False}, True),
    ],
)
async def test_page_respects_the_integrations_object(
    page: Page, site: str, integrations: dict[str, object], reported: bool
) -> None:
    await page.goto(site + "/")
    await page.evaluate(LOAD_PLUGIN)
    await page.evaluate("plugin.page(segmentContext('page'))")
    await page.evaluate("history.pushState({}, '', '/next')")

    await page.evaluate(
        "integrations => plugin.page(segmentContext('page', {integrations}))", integrations
    )

    views = await page.evaluate("pardotViews")
    assert views == ([site + "/", site + "/next"] if reported else [site + "/"])


async def _set_pardot_cookies(page: Page, opt_in: str) -> None:
    await page.evaluate(
        """([suffix, optIn]) => {
      document.cookie = "visitor_id" + suffix + "=123456";
      document.cookie = "pi_opt_in" + suffix + "=" + optIn;
    }""",
        [COOKIE_SUFFIX, opt_in],
    )


async def test_identify_with_an_email_reports_it_for_the_visitor(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/")
    await page.evaluate(LOAD_PLUGIN)
    await _set_pardot_cookies(page, "true")

    await page.evaluate(
        "plugin.identify(segmentContext('identify', {userId: 'u1', traits: {email: 'a@b.co'}}))"
    )

    assert await tracker.wait_for("/analytics") == [
        {
            "account_id": ACCOUNT_ID,
            "campaign_id": CAMPAIGN_ID,
            "visitor_id": "123456",
            "pi_opt_in": "true",
            "ver": "3",
            "pi_email": "a@b.co",
        }
    ]


async def test_identify_sends_nothing_without_email_after_opt_out_or_when_disabled(
    page: Page, site: str, tracker: Tracker
) -> None:
    await page.goto(site + "/")
    await page.evaluate(LOAD_PLUGIN)
    identify = "fields => plugin.identify(segmentContext('identify', fields))"

    await page.evaluate(identify, {"userId": "u1", "traits": {"name": "No Email"}})
    await page.evaluate(
        identify, {"traits": {"email": "off@b.co"}, "integrations": {"Pardot": False}}
    )
    await page.evaluate(identify, {"traits": {"email": "all@b.co"}, "integrations": {"All": False}})
    await _set_pardot_cookies(page, "false")
    await page.evaluate(identify, {"traits": {"email": "opted-out@b.co"}})
    # A call that must get through, so the ones above had time to show up if they were sent.
    await _set_pardot_cookies(page, "true")
    await page.evaluate(identify, {"traits": {"email": "control@b.co"}})

    hits = await tracker.wait_for("/analytics")
    assert [hit["pi_email"] for hit in hits] == ["control@b.co"]


async def test_without_an_account_id_the_script_only_logs_an_error(
    page: Page, start_site: Callable[[TrackingConfig], Awaitable[str]], tracker: Tracker
) -> None:
    site = await start_site(TrackingConfig(account_id=None, tracker_url=tracker.url))

    await page.goto(site + "/")

    errors = [m.text for m in await page.console_messages() if m.type == "error"]
    assert any("PARDOT_ACCOUNT_ID is not set" in text for text in errors)
    assert await page.evaluate("typeof piAId") == "undefined"
    assert tracker.requests == []
