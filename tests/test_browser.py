"""The residents' pages in a real browser (Debian's Chromium driven by Playwright), offline.

Every request that would leave this machine is refused and recorded: the pages must
draw their markers, charts and Japanese text with nothing from a CDN. Map tiles are the
one exception (they come from the tile server the operator chooses). Screenshots of
the phone view are saved in test-artifacts/.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from jisaku.cli.demo_town import load_city
from jisaku.device.config import load_device_config
from jisaku.contract.protocol import Reading
from jisaku.gateway.store import Batch

from .pmtiles_files import write_raster_pmtiles
from .town import EXAMPLES, KINDS, REPO, wait_until

ARTIFACTS = REPO / "test-artifacts"
TILE_HOSTS = {"tile.openstreetmap.org", "cyberjapandata.gsi.go.jp"}
PHONE = {"width": 360, "height": 740}


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


def offline_phone(browser, locale="en-US"):
    """A 360 px phone whose requests may reach only this machine; the others are listed in ``outside``."""
    context = browser.new_context(viewport=PHONE, locale=locale, device_scale_factor=2, has_touch=True)
    page = context.new_page()
    page.outside = []
    page.fetched = []
    page.tile_servers = []

    def only_localhost(route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            page.fetched.append(route.request.url)
            return route.continue_()
        (page.tile_servers if host in TILE_HOSTS else page.outside).append(route.request.url)
        return route.abort()

    page.route("**/*", only_localhost)
    return page


def private_car():
    """A vehicle registered as private: it reports like the others and must never be shown."""
    return load_device_config(KINDS / "vehicle_tracker", {
        "device": {"id": "mayor-car", "kind": "bus", "name": "Mayor's car (private)", "public": False}})


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_live_map_on_a_phone_moves_a_bus_hides_private_devices_and_speaks_both_languages(browser, make_town):
    city = [d for d in load_city(EXAMPLES / "demo-city" / "city.toml") if d.id in ("bus-1", "snow-1", "tray-1")]
    # bus-7 is driven by this test itself, to a place it chooses.
    bus_7 = load_device_config(KINDS / "vehicle_tracker", {"device": {"id": "bus-7", "name": "Test bus 7"}})
    town = make_town([*city, bus_7, private_car()])
    town.start_dashboard()
    town.run_devices([*city, town.devices[-1]])
    link = town.link("bus-7")
    link.start()
    try:
        link.publish_reading({"lat": 36.1400, "lon": 137.2500, "speed_kmh": 18.0, "heading": 90.0})
        wait_until(lambda: all(f["geometry"] and f["properties"]["values"] for f in town.features().values())
                   and len(town.features()) == 4, 20, "the four public devices report")
        wait_until(lambda: town.store.readings("mayor-car"), 20, "the private car reports too")

        page = offline_phone(browser)
        page.goto(town.base_url + "/")
        page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 4", timeout=15000)

        # Every public device is on the map, with the snow depth the gauge sent written on its marker.
        for device_id in ("bus-1", "bus-7", "snow-1", "tray-1"):
            assert page.locator(f'.jisaku-marker[data-device-id="{device_id}"]').count() == 1
        label = page.locator('[data-device-id="snow-1"]').inner_text()
        sent = {f"{round(r['v']['depth_cm'])} cm" for r in town.store.readings("snow-1")}
        assert label.strip() in sent, f"the snow marker says {label!r}; the gauge sent {sent}"
        chips = page.locator(".jisaku-chip")
        assert "Buses 2" in " ".join(chips.all_inner_texts()).replace("\n", " ")

        # The private car is nowhere: not on the map, not in the page, not in the list.
        assert "mayor-car" not in page.evaluate("Object.keys(window.jisakuMarkers)")
        assert "mayor" not in page.content().lower()

        # A position the bus publishes reaches the open page without a reload.
        page.evaluate("window.jisakuLoads = performance.getEntriesByType('navigation').length")
        published = time.monotonic()
        link.publish_reading({"lat": 36.1412, "lon": 137.2533, "speed_kmh": 21.0, "heading": 45.0})
        page.wait_for_function(
            "() => { const p = window.jisakuMarkers['bus-7'].getLatLng(); return p.lat === 36.1412 && p.lng === 137.2533; }",
            timeout=10000)
        print(f"bus-7's new position reached the open page {time.monotonic() - published:.2f} s after publishing")
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "the page reloaded"

        # The simulated bus drives along its route on its own.
        start = page.evaluate("window.jisakuMarkers['bus-1'].getLatLng()")
        page.wait_for_function(
            "start => { const p = window.jisakuMarkers['bus-1'].getLatLng(); return p.lat !== start.lat || p.lng !== start.lng; }",
            arg=start, timeout=20000)

        # A kind can be switched off and on again.
        bus_chip = page.locator('.jisaku-chip[data-kind="bus"]')
        bus_chip.tap()
        assert page.locator('.jisaku-marker[data-device-id="bus-1"]').count() == 0
        assert bus_chip.get_attribute("aria-pressed") == "false"
        bus_chip.tap()
        assert page.locator('.jisaku-marker[data-device-id="bus-1"]').count() == 1

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live-map-360px-en.png"))

        # The visible switch turns the page Japanese, and the choice sticks for the next page.
        page.locator("[data-lang-switch]").tap()
        page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 4", timeout=15000)
        assert page.locator("html").get_attribute("lang") == "ja"
        assert page.locator("h1").inner_text() == "まちのライブマップ"
        assert "バス 2" in " ".join(page.locator(".jisaku-chip").all_inner_texts()).replace("\n", " ")
        # Japanese is drawn in Noto Sans JP from this server, not as empty boxes.
        page.evaluate("document.fonts.ready")
        assert page.evaluate("document.fonts.check('16px \"Noto Sans JP\"', 'まちのライブマップ')")
        assert any("noto-sans-jp" in url and url.endswith(".woff2") for url in page.fetched)
        # What a resident sees first (Japanese is the default for a Japanese phone).
        page.screenshot(path=str(ARTIFACTS / "live-map-360px.png"))
        page.locator('.jisaku-marker[data-device-id="bus-7"]').tap()
        popup = page.locator(".jisaku-popup")
        popup.wait_for()
        assert "Test bus 7" in popup.inner_text() and "前に更新" in popup.inner_text()
        page.screenshot(path=str(ARTIFACTS / "live-map-360px-popup.png"))

        # A device an operator makes private leaves the open map (the stream says it was removed).
        tray = town.registry.get("tray-1")
        tray.public = False
        town.registry.update_device(tray)
        page.wait_for_function("!('tray-1' in window.jisakuMarkers)", timeout=10000)
        assert page.locator('.jisaku-marker[data-device-id="tray-1"]').count() == 0
        tray.public = True
        town.registry.update_device(tray)

        page.goto(town.base_url + "/list")
        listed = page.locator(".jisaku-item")
        assert sorted(listed.evaluate_all("items => items.map(i => i.dataset.deviceId)")) == [
            "bus-1", "bus-7", "snow-1", "tray-1"]
        assert "積雪" in page.locator('[data-device-id="snow-1"]').inner_text()
        assert "mayor" not in page.content().lower()

        # A private device's page answers word for word like a device that never existed.
        private = page.goto(town.base_url + "/devices/mayor-car")
        private_text = page.locator("main").inner_text().replace("mayor-car", "<id>")
        missing = page.goto(town.base_url + "/devices/no-such-car")
        assert private.status == missing.status == 404
        assert private_text == page.locator("main").inner_text().replace("no-such-car", "<id>")
        assert "Mayor" not in page.content()

        assert page.outside == [], f"the pages tried to load from outside this machine: {page.outside}"
    finally:
        link.stop()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_device_pages_chart_a_week_of_snow_and_draw_the_route_a_bus_drove(browser, make_town):
    town = make_town([d for d in load_city(EXAMPLES / "demo-city" / "city.toml") if d.id in ("bus-1", "snow-1")])
    town.start_dashboard()
    # A week of snow depth every minute, and the last hour of a bus driving north-east.
    now = time.time()
    snow = [("snow-1", Reading(now - i * 60, i, {"depth_cm": 20 + (i % 1440) / 48})) for i in range(7 * 1440)]
    drive = [("bus-1", Reading(now - i * 5, 100000 + i, {"lat": 36.15 - i * 2e-5, "lon": 137.26 - i * 2e-5,
                                                           "speed_kmh": 20.0, "heading": 45.0})) for i in range(720)]
    town.store.write(Batch(readings=snow + drive))

    page = offline_phone(browser)
    page.goto(town.base_url + "/devices/snow-1")
    page.wait_for_function("document.body.dataset.drawn === '24h'", timeout=15000)
    chart = page.locator('.jisaku-chart[data-metric="depth_cm"]')
    assert chart.locator("canvas").count() == 1, "uPlot drew the chart"
    assert "Lowest" in chart.inner_text() and "highest" in chart.inner_text()
    page.locator('[data-range="7d"]').tap()
    page.wait_for_function("document.body.dataset.drawn === '7d'", timeout=15000)
    assert "Last 7 days" in page.locator(".jisaku-chart h2").inner_text()
    page.screenshot(path=str(ARTIFACTS / "device-snow-360px.png"), full_page=True)

    page.goto(town.base_url + "/devices/bus-1")
    page.wait_for_function("document.body.dataset.drawn === '24h'", timeout=15000)
    points = int(page.locator("#jisaku-track-map").get_attribute("data-points"))
    assert points > 50, f"the route of the last hour is drawn as a line, not {points} points"
    assert page.locator("#jisaku-track-map .leaflet-overlay-pane path").count() == 1
    assert page.outside == [], f"the pages tried to load from outside this machine: {page.outside}"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_pmtiles_file_is_the_whole_base_map_on_a_closed_network(browser, make_town, tmp_path):
    # A town's extract that stops at zoom 14, as many do; the map opens at zoom 16 on one gauge.
    base_map = write_raster_pmtiles(tmp_path / "takayama.pmtiles", 36.12, 137.22, 36.17, 137.29,
                                    range(0, 15), (214, 234, 210))
    town = make_town([d for d in load_city(EXAMPLES / "demo-city" / "city.toml") if d.id == "snow-1"])
    town.start_dashboard(tiles=str(base_map))
    town.store.write(Batch(readings=[("snow-1", Reading(time.time(), 1, {"depth_cm": 31.0}))]))

    page = offline_phone(browser)
    answers = []
    page.on("response", lambda r: answers.append((r.status, r.request.headers.get("range")))
            if r.url.endswith("/tiles/base.pmtiles") else None)
    page.goto(town.base_url + "/")
    page.wait_for_function("window.jisakuMarkers && window.jisakuMarkers['snow-1']", timeout=15000)
    # Every tile of the level on show has its picture (Leaflet keeps the previous level's
    # tiles on screen while it waits, so those do not count). At zoom 16 one zoom-14 tile,
    # enlarged four times, may fill the whole phone screen.
    page.wait_for_function("""() => {
        const map = window.jisakuMarkers['snow-1']._map, shown = [];
        map.eachLayer(layer => { if (layer.createTile && layer._tiles) Object.values(layer._tiles)
            .filter(tile => tile.coords.z === layer._tileZoom).forEach(tile => shown.push(tile.el)); });
        return shown.length > 0 && shown.every(img => img.src.startsWith('blob:') && img.complete
                                                     && img.naturalWidth === 256);
    }""", timeout=15000)
    zoom = page.evaluate("window.jisakuMarkers['snow-1']._map.getZoom()")
    assert zoom > 14, f"the map opened at zoom {zoom}: this test is about zooming in past the file's 14"
    page.screenshot(path=str(ARTIFACTS / "map-pmtiles-360px.png"))

    assert answers and all(status == 206 and rng for status, rng in answers), \
        f"the PMTiles reader asks for byte ranges and gets them: {answers}"
    assert page.tile_servers == [] and page.outside == [], "with a .pmtiles file nothing leaves this machine"
    assert "takayama.pmtiles" in page.locator(".leaflet-control-attribution").inner_text(), \
        "with no tiles_attribution set, the credit names the file"
