"""The live map in a real browser (Debian's Chromium driven by Playwright), offline.

Every request that would leave this machine is refused and recorded: the page
must draw its markers with nothing from a CDN. Map tiles are the one exception
(they come from the tile server the operator chooses).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from jisaku.demo import load_city

from .town import EXAMPLES, REPO, wait_until

ARTIFACTS = REPO / "test-artifacts"
TILE_HOSTS = {"tile.openstreetmap.org"}


@pytest.fixture
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_live_map_shows_the_town_and_moves_a_bus_with_no_internet(browser, make_town):
    devices = [d for d in load_city(EXAMPLES / "demo-city" / "city.toml") if d.id in ("bus-1", "snow-1", "tray-1")]
    town = make_town(devices)
    town.start_dashboard()
    town.run_devices()
    wait_until(lambda: all(f["geometry"] and f["properties"]["values"] for f in town.features().values()),
               20, "all three devices report")

    page = browser.new_page(viewport={"width": 360, "height": 740})
    outside: list[str] = []

    def only_localhost(route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            return route.continue_()
        if host not in TILE_HOSTS:
            outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_localhost)
    page.goto(town.base_url + "/")

    page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 3", timeout=15000)
    for device_id in ("bus-1", "snow-1", "tray-1"):
        assert page.locator(f'.jisaku-marker[data-device-id="{device_id}"]').count() == 1
    label = page.locator('[data-device-id="snow-1"]').inner_text()
    sent = {f"{round(r['v']['depth_cm'])} cm" for r in town.store.readings("snow-1")}
    assert label.strip() in sent, f"the snow marker says {label!r}; the gauge sent {sent}"
    assert "bus" in page.locator("#jisaku-summary").inner_text()

    start = page.evaluate("window.jisakuMarkers['bus-1'].getLatLng()")
    page.wait_for_function(
        "start => { const p = window.jisakuMarkers['bus-1'].getLatLng(); return p.lat !== start.lat || p.lng !== start.lng; }",
        arg=start, timeout=20000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-map-360px.png"))
    assert outside == [], f"the page tried to load from outside this machine: {outside}"
