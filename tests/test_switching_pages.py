"""Switching from the operator pages, in Debian's Chromium, through the real broker and gateway.

A switcher switches the road heater on (with the confirmation step) and sees "done"
without reloading; a refusal shows the device's reason; a command the device never
answers reads "no answer" once it expired; a plain operator has no button and the
API tells them which role it takes.
"""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn

from jisaku.dashboard.app import create_app
from jisaku.gateway.accounts import Accounts

from .brokers import free_port
from .switch_device import SwitchBox
from .test_browser import ARTIFACTS, browser  # noqa: F401 (the fixture)
from .town import wait_until

PASSWORD = "a long switching passphrase"
OUTPUTS = {"heater": "Road heater", "pump_1": "Pump 1", "pump_2": "Pump 2"}


@pytest.fixture
def switching_town(make_town):
    """A town with a switch box, a switcher (sato), a plain operator (tanaka), and a dashboard."""
    town = make_town()
    box = SwitchBox.in_town(town, "heater-1", OUTPUTS, interlocks=[("pump_1", "pump_2")])
    box.start()
    accounts = Accounts(town.registry.db)
    accounts.add("sato", PASSWORD, role="switcher")
    accounts.add("tanaka", PASSWORD, role="operator")
    app = create_app(town.db_path, tiles="osm", config_publisher=town.settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="dashboard").start()
    wait_until(lambda: server.started, 10, "the dashboard starts")
    wait_until(lambda: town.store.reading_count("heater-1") >= 1, 15, "the box reports its outputs")
    yield town, box, app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    box.stop()


def _log_in(page, base: str, name: str, device: str = "heater-1") -> None:
    page.goto(f"{base}/operator/login?next=/operator/devices/{device}")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/operator/devices/{device}")


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_switcher_switches_and_sees_done_refused_and_no_answer(browser, switching_town):  # noqa: F811
    town, box, app, base = switching_town
    page = browser.new_page(viewport={"width": 1000, "height": 900}, locale="en-GB")
    outside: list[str] = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base + "/")
               else (outside.append(route.request.url), route.abort()))
    _log_in(page, base, "sato")
    heater = page.locator('#outputs-table tr[data-output="heater"]')
    assert heater.locator(".output-state").inner_text() == "off"

    heater.locator("button.switch-button").click()
    page.wait_for_selector("#switch-confirm")
    assert "Switch ON “Road heater”" in page.locator("#switch-confirm").inner_text()
    assert box.commands == [], "nothing is sent before the confirmation"
    page.click("#switch-yes")
    page.wait_for_url("**/operator/devices/heater-1?command=*")
    # static/switch.js follows the command: no reload from here on
    page.wait_for_selector("#command-progress .command-done")
    assert "done" in page.locator("#command-progress").inner_text()
    assert heater.locator(".output-state").inner_text() == "on"
    assert box.states["heater"] == 1

    # A refusal shows the device's reason: pump 2 may not run while pump 1 does.
    page.locator('#outputs-table tr[data-output="pump_1"] button.switch-button').click()
    page.click("#switch-yes")
    page.wait_for_selector("#command-progress .command-done")
    page.locator('#outputs-table tr[data-output="pump_2"] button.switch-button').click()
    page.click("#switch-yes")
    page.wait_for_selector("#command-progress .command-refused")
    refused = page.locator("#command-progress").inner_text()
    assert "refused" in refused and "interlock" in refused
    assert "pump_1 is on: pump_1 and pump_2 may never be on together" in refused

    # The device's own word on what happened is on its page: heater and pump 1 switched by command.
    wait_until(lambda: len([e for e in town.store.events("heater-1") if e["event"] == "switched"]) >= 2, 15,
               "the box's switched events are stored")
    page.goto(base + "/operator/devices/heater-1")
    events = page.locator("#device-events").inner_text()
    assert "switched" in events and "output: heater" in events and "by: command" in events
    assert "output: pump_1" in events

    # A box that never answers: "no answer" once the command expired.
    app.state.command_expiry_s = 1.5
    box.silent = True
    page.locator('#outputs-table tr[data-output="heater"] button.switch-button').click()
    page.click("#switch-yes")
    page.wait_for_url("**/operator/devices/heater-1?command=*")
    page.evaluate("window.stillThisPage = true")
    page.wait_for_selector("#command-progress .command-no_answer", timeout=15000)
    assert page.evaluate("window.stillThisPage === true"), "the answer came without a reload"
    assert box.states["heater"] == 1, "the silent box did nothing"

    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#outputs").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "operator-switching.png"))
    entries = [e for e in town.changes.audit.entries(target="heater-1") if e["action"] == "device.switch"]
    assert {e["actor"] for e in entries} == {"sato"}
    assert outside == [], f"the page tried to load from outside this machine: {outside}"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_plain_operator_sees_the_outputs_but_cannot_switch(browser, switching_town):  # noqa: F811
    town, box, app, base = switching_town
    page = browser.new_page(viewport={"width": 360, "height": 740}, locale="ja-JP")
    _log_in(page, base, "tanaka")
    assert page.locator("#outputs-table tr[data-output=heater] .output-state").inner_text() == "切"
    assert page.locator("button.switch-button").count() == 0
    assert "切り替えられるのは切替担当者と管理者だけです" in page.locator("main").inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the device page is {width} px wide on a 360 px phone"

    with httpx.Client(base_url=base) as client:
        csrf = client.post("/api/v1/operator/login", json={"name": "tanaka", "password": PASSWORD}).json()["csrf_token"]
        answer = client.post("/api/v1/operator/devices/heater-1/outputs/heater", json={"on": True, "confirm": True},
                             headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 403
        assert "needs the role switcher or admin" in answer.json()["detail"]
        form = client.post("/operator/devices/heater-1/outputs/heater", data={"csrf_token": csrf, "on": "1",
                                                                            "confirm": "yes"})
        assert form.status_code == 403
    assert box.commands == [], "nothing reached the device"

    with httpx.Client(base_url=base) as client:  # a switcher over the API: confirm first, then 202
        csrf = client.post("/api/v1/operator/login", json={"name": "sato", "password": PASSWORD}).json()["csrf_token"]
        unconfirmed = client.post("/api/v1/operator/devices/heater-1/outputs/heater", json={"on": True},
                                  headers={"X-CSRF-Token": csrf})
        assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.json()["detail"]
        sent = client.post("/api/v1/operator/devices/heater-1/outputs/heater", json={"on": True, "confirm": True},
                           headers={"X-CSRF-Token": csrf})
        assert sent.status_code == 202, sent.text
        command = sent.json()["command"]
        wait_until(lambda: client.get(f"/api/v1/operator/commands/{command['id']}").json()["command"]["status"]
                   == "done", 15, "the box answers")
        listed = client.get("/api/v1/operator/devices/heater-1/commands").json()
        assert [c["id"] for c in listed] == [command["id"]]
        assert client.get("/api/v1/operator/commands/c-none").status_code == 404
