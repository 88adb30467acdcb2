"""An operator in a real browser (Debian's Chromium, phone-sized, offline) logs in and
changes the printer tray's threshold; the running simulated tray applies it."""

from __future__ import annotations

import json
import threading

import pytest
import uvicorn

from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import ConfigPublisher
from jisaku.device.config import load_device_config
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.alerts import AlertBook
from jisaku.gateway.areas import parse_area
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry

from .brokers import free_port
from .test_browser import ARTIFACTS, browser  # noqa: F401 (the fixture)
from .town import KINDS, wait_until

PASSWORD = "a long browser passphrase"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_an_operator_changes_the_tray_threshold_in_the_browser(browser, make_town):  # noqa: F811
    town = make_town([load_device_config(KINDS / "printer_tray")])
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="operator")
    publisher = ConfigPublisher(town.broker_url, "_tester", town.tester_secret)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(town.db_path, tiles="osm", config_publisher=publisher),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="dashboard").start()
    try:
        wait_until(lambda: server.started, 10, "the dashboard starts")
        town.run_devices()
        wait_until(lambda: town.store.reading_count("tray-1") >= 1, 15, "the tray reports")

        page = browser.new_page(viewport={"width": 360, "height": 740}, locale="ja-JP")
        outside: list[str] = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            f"http://127.0.0.1:{port}/") else (outside.append(route.request.url), route.abort()))
        page.goto(f"http://127.0.0.1:{port}/operator/devices/tray-1")
        assert "/operator/login" in page.url, "without a session the page sends you to log in"
        assert page.locator("h1").inner_text() == "ログイン"
        page.fill("#name", "tanaka")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/operator/devices/tray-1")

        page.fill("#setting-left_after_s", "45")
        page.click("#settings-form button[type=submit]")
        page.wait_for_selector("text=新しい設定を機器に送りました。")
        for _ in range(50):  # the device answers within a second or two; a reload shows it
            if "適用済み" in page.locator("#config-state").inner_text():
                break
            page.wait_for_timeout(200)
            page.reload()
        assert "第 1 版: 適用済み" in page.locator("#config-state").inner_text()
        assert json.loads((town.directory / "devices" / "tray-1" / "settings.json").read_text()) == {
            "left_after_s": 45}
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the device page is {width} px wide on a 360 px phone"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "operator-device-360px.png"), full_page=True)
        assert outside == [], f"the page tried to load from outside this machine: {outside}"
    finally:
        server.should_exit = True
        publisher.stop()


def test_an_operator_draws_an_alert_area_on_the_map(browser, tmp_path):  # noqa: F811
    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    db = Database(tmp_path / "jisaku.db")
    Accounts(db).add("tanaka", PASSWORD, role="operator")
    Registry(db).add_device(DeviceRecord("snow-1", "snow_gauge", name="City hall", lat=36.1454, lon=137.2531))
    Registry(db).add_device(DeviceRecord("bus-1", "bus", name="Loop bus 1"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="dashboard").start()
    try:
        wait_until(lambda: server.started, 10, "the dashboard starts")
        base = f"http://127.0.0.1:{port}"
        page = browser.new_page(viewport={"width": 1000, "height": 900}, locale="en-GB")
        outside: list[str] = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base + "/")
                   else (outside.append(route.request.url), route.abort()))
        page.goto(base + "/operator/login?next=/operator/rules")
        page.fill("#name", "tanaka")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/operator/rules")
        page.wait_for_function("window.jisakuArea && window.jisakuArea.map")
        assert page.locator("#rule-area-drawing").is_visible()

        def pixel(lat: float, lon: float) -> tuple[float, float]:
            """Where a place is on the screen."""
            page.locator("#rule-area-map").scroll_into_view_if_needed()
            box = page.locator("#rule-area-map").bounding_box()
            p = page.evaluate(f"window.jisakuArea.map.latLngToContainerPoint([{lat}, {lon}])")
            return box["x"] + p["x"], box["y"] + p["y"]

        # A triangle round the city hall gauge, drawn with the polygon button.
        x, y = pixel(36.1454, 137.2531)
        page.locator(".leaflet-pm-icon-polygon").click()
        corners = [(x - 90, y - 70), (x + 100, y - 60), (x + 10, y + 90)]
        for cx, cy in [*corners, corners[0]]:  # the first corner again closes it
            page.mouse.click(cx, cy)
        area = json.loads(page.input_value("#rule-area"))
        assert area["type"] == "Feature" and area["geometry"]["type"] == "Polygon"
        assert len(area["geometry"]["coordinates"][0]) == 4  # three corners, closed

        page.fill("#rule-name", "Bus at city hall")
        page.check("input[name=scope_is][value=device]")
        page.fill("#rule-scope", "bus-1")
        page.select_option("#rule-type", "area")
        page.click("form[action='/operator/rules'] button.primary")
        page.wait_for_selector("tr[data-rule-id]")
        (rule,) = AlertBook(db).rules()
        drawn = parse_area(rule.condition.area)
        assert drawn.contains(36.1454, 137.2531), "the gauge the triangle was drawn round is inside it"
        assert not drawn.contains(36.20, 137.30)

        # Editing the rule shows its area on the map; a circle drawn now replaces it.
        page.goto(base + f"/operator/rules?edit={rule.id}")
        page.wait_for_function("window.jisakuArea && window.jisakuArea.layer() !== null")
        x, y = pixel(36.1454, 137.2531)
        page.locator(".leaflet-pm-icon-circle").click()
        page.mouse.click(x, y)
        page.mouse.click(x + 60, y)
        circle = json.loads(page.input_value("#rule-area"))
        assert circle["type"] == "circle" and circle["radius_m"] > 0
        assert abs(circle["lat"] - 36.1454) < 0.001 and abs(circle["lon"] - 137.2531) < 0.001
        assert page.evaluate("window.jisakuArea.map.pm.getGeomanDrawLayers().length") == 1, "one area at a time"
        page.screenshot(path=str(ARTIFACTS / "operator-rule-area.png"))
        assert [u for u in outside if "openstreetmap" not in u] == [], "only the base map's tiles come from outside"
    finally:
        server.should_exit = True
