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

from .brokers import free_port
from .test_browser import ARTIFACTS, browser  # noqa: F401 (the fixture)
from .town import EXAMPLES, wait_until

PASSWORD = "a long browser passphrase"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_an_operator_changes_the_tray_threshold_in_the_browser(browser, make_town):  # noqa: F811
    town = make_town([load_device_config(EXAMPLES / "printer-tray")])
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
