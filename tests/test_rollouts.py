"""Offering an update to devices, a few first: the server's side (gateway/updates.py, the operator API).

A real broker, the real gateway and dashboard. The devices here are MQTT clients with the
devices' own accounts that say what the wire contract says a device says (docs/updates.md):
the update's steps as `update` events. The device runtimes themselves are tested updating
in test_updates.py and test_firmware_updates.py, and with the rollout end to end in
test_rollout_end_to_end.py.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import time

import httpx
import pytest

from jisaku.cli import main
from jisaku.contract import protocol
from jisaku.contract.bundles import read_header
from jisaku.contract.mqtt import BrokerAddress, new_client
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.updates import UpdateBook, offer_payload

from .switch_device import register
from .test_browser import browser  # noqa: F401 (the fixture)
from .town import REPO, wait_until

PASSWORD = "correct horse battery staple"
TRAYS = ["tray-1", "tray-2", "tray-3", "tray-4"]


class StandInBoard:
    """A device as the gateway sees it: its own account, its status, its update events, its offers."""

    def __init__(self, town, device_id: str):
        self.device_id = device_id
        self.offers: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self.seq = 0
        self.client = new_client(f"stand-in-{device_id}", device_id, town.secrets[device_id],
                                 BrokerAddress.parse(town.broker_url))
        self.client.on_message = self._on_message
        subscribed = queue.SimpleQueue()
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        address = BrokerAddress.parse(town.broker_url)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        self.client.subscribe(protocol.topic(device_id, "update"), qos=1)
        subscribed.get(timeout=10)
        self.client.publish(protocol.topic(device_id, "status"),
                            protocol.encode_status("online", {"runs_on": "board", "version": "1.3.0", "fw": "0.9"}),
                            qos=1, retain=True).wait_for_publish(10)

    def _on_message(self, client, userdata, message) -> None:
        self.offers.put(json.loads(message.payload) if message.payload else None)

    def next_offer(self) -> dict:
        offer = self.offers.get(timeout=15)
        assert offer is not None, f"{self.device_id} was sent an empty offer"
        return offer

    def report(self, offer: dict, state: str, **values) -> None:
        self.seq += 1
        payload = protocol.encode_event(self.seq, "update", {"offer": offer["offer"], "version": offer["version"],
                                                             "state": state, **values}, ts=time.time())
        self.client.publish(protocol.topic(self.device_id, "event"), payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class UpdateTown:
    """Four printer trays on boards, an admin and an operator, the town's key and one bundle."""

    def __init__(self, town):
        self.town = town
        make_keys(town.directory)
        db = Database(town.db_path)
        Accounts(db).add("admin", PASSWORD, role="admin")
        Accounts(db).add("suzuki", PASSWORD, role="operator")
        self.audit = AuditLog(db)
        self.book = UpdateBook(db)
        for device_id in TRAYS:
            register(town, device_id, "printer_tray")
        self.url = town.start_dashboard(tiles="osm")
        self.bundle = town.directory / "printer_tray-1.4.0.bundle"
        build_bundle(REPO / "kinds" / "printer_tray" / "board", "1.4.0", "printer_tray", "board",
                     load_private_key(town.directory), self.bundle)
        self.admin, self.admin_token = self.login("admin")
        answer = self.admin.post("/api/v1/operator/bundles", files={"bundle": ("b.bundle", self.bundle.read_bytes())},
                                 headers={"X-CSRF-Token": self.admin_token})
        assert answer.status_code == 201, answer.text
        self.boards = {device_id: StandInBoard(town, device_id) for device_id in TRAYS}
        wait_until(lambda: all(self.book.software(d) for d in TRAYS), 10, "the trays' status is stored")

    def login(self, name: str) -> tuple[httpx.Client, str]:
        client = httpx.Client(base_url=self.url, timeout=10)
        answer = client.post("/api/v1/operator/login", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return client, answer.json()["csrf_token"]

    def start(self, **body) -> httpx.Response:
        return self.admin.post("/api/v1/operator/rollouts", json={"kind": "printer_tray", "version": "1.4.0", **body},
                               headers={"X-CSRF-Token": self.admin_token})

    def states(self, rollout_id: int) -> dict[str, str]:
        rollout = self.admin.get(f"/api/v1/operator/rollouts/{rollout_id}").json()
        return {d["device_id"]: d["state"] for d in rollout["devices"]}

    def wait_for(self, rollout_id: int, device_id: str, state: str) -> None:
        wait_until(lambda: self.states(rollout_id)[device_id] == state, 15, f"{device_id} is {state}")

    def retained_offer(self, device_id: str) -> bytes | None:
        """The retained offer a device would get on connecting now (None: none)."""
        got: queue.SimpleQueue = queue.SimpleQueue()
        client = new_client("retained-check", "_tester", self.town.tester_secret, BrokerAddress.parse(self.town.broker_url))
        client.on_message = lambda c, u, message: got.put((message.topic, message.payload))
        address = BrokerAddress.parse(self.town.broker_url)
        client.connect(address.host, address.port)
        client.loop_start()
        try:
            # Retained messages come right after the subscription is granted, before the marker
            # published after it; so "the marker first" means "nothing retained".
            subscribed = queue.SimpleQueue()
            client.on_subscribe = lambda *args: subscribed.put(True)
            client.subscribe([(protocol.topic(device_id, "update"), 1), ("jisaku/_mark", 1)])
            subscribed.get(timeout=10)
            client.publish("jisaku/_mark", b"x", qos=1)
            topic, payload = got.get(timeout=10)
            return None if topic == "jisaku/_mark" or not payload else payload
        finally:
            client.disconnect()
            client.loop_stop()

    def close(self) -> None:
        for board in self.boards.values():
            board.close()


@pytest.fixture
def update_town(make_town):
    town = UpdateTown(make_town())
    yield town
    town.close()


def manifest_sha256(path) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(read_header(stream).manifest_bytes).hexdigest()


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"], indirect=True)
def test_a_staged_rollout_goes_to_the_rest_once_the_first_tray_runs_it(update_town):
    town = update_town
    operator, operator_token = town.login("suzuki")
    refused = operator.post("/api/v1/operator/rollouts", json={"kind": "printer_tray", "version": "1.4.0"},
                            headers={"X-CSRF-Token": operator_token})
    assert refused.status_code == 403, "only admins offer updates"

    answer = town.start(first=1)
    assert answer.status_code == 201, answer.text
    rollout = answer.json()
    assert rollout["state"] == "running" and rollout["counts"] == {"offered": 1, "waiting": 3}
    town.town.gateway.update_round()
    offer = town.boards["tray-1"].next_offer()
    assert offer == {"offer": offer["offer"], "version": "1.4.0", "runs_on": "board",
                     "bytes": town.bundle.stat().st_size, "manifest_sha256": manifest_sha256(town.bundle),
                     "path": "/api/v1/devices/tray-1/bundles/1.4.0", "trial_s": 300}
    # What the offer points at is what the device may download with its own secret.
    download = httpx.get(town.url + offer["path"], auth=("tray-1", town.town.secrets["tray-1"]), timeout=10)
    assert download.status_code == 200 and download.content == town.bundle.read_bytes()
    assert all(town.boards[d].offers.empty() for d in TRAYS[1:]), "the rest wait for the first"
    # On a cluster whose nodes keep retained messages each for itself (RabbitMQ), the gateway sends
    # an offer not yet taken up again when the device says it is online.
    town.town.gateway._resend("tray-1")
    assert town.boards["tray-1"].next_offer() == offer

    board = town.boards["tray-1"]
    for state in ("downloading", "verified", "switched"):
        board.report(offer, state)
    town.wait_for(rollout["id"], "tray-1", "switched")
    assert town.book.waiting_offer("tray-1") is None, "taken up: not sent again"
    town.town.gateway.update_round()
    assert all(town.boards[d].offers.empty() for d in TRAYS[1:]), "switched is not yet back and running"
    board.report(offer, "running")
    town.wait_for(rollout["id"], "tray-1", "running")
    town.town.gateway.update_round()  # tray-1 runs it: now the rest
    town.town.gateway.update_round()
    offers = {d: town.boards[d].next_offer() for d in TRAYS[1:]}
    assert {o["version"] for o in offers.values()} == {"1.4.0"}
    assert len({o["offer"] for o in offers.values()} | {offer["offer"]}) == 4, "each device its own offer id"

    town.boards["tray-2"].report(offers["tray-2"], "refused", reason="no_space",
                                 detail="the bundle needs 23 kB and 12 kB are free")
    for device_id in ("tray-3", "tray-4"):
        town.boards[device_id].report(offers[device_id], "running")
    # A step that comes late (QoS 1 redelivers) does not move a device back.
    town.boards["tray-3"].report(offers["tray-3"], "downloading")
    wait_until(lambda: town.states(rollout["id"]) == {"tray-1": "running", "tray-2": "refused",
                                                      "tray-3": "running", "tray-4": "running"},
               15, "every tray has answered")
    town.town.gateway.update_round()
    done = town.admin.get(f"/api/v1/operator/rollouts/{rollout['id']}").json()
    assert done["state"] == "done" and done["counts"] == {"running": 3, "refused": 1}
    tray_2 = next(d for d in done["devices"] if d["device_id"] == "tray-2")
    assert (tray_2["reason"], tray_2["detail"]) == ("no_space", "the bundle needs 23 kB and 12 kB are free")

    # What each device runs, as operators see it.
    software = town.admin.get("/api/v1/operator/devices/tray-1/updates").json()
    assert software["software"]["version"] == "1.4.0" and software["updates"][0]["state"] == "running"
    assert town.admin.get("/api/v1/operator/devices/tray-2/updates").json()["software"]["version"] == "1.3.0"
    page = town.admin.get("/operator/devices/tray-2?lang=en").text
    assert "refused" in page and "no room on the device" in page and "the bundle needs 23 kB" in page
    page = town.admin.get(f"/operator/updates/{rollout['id']}?lang=en").text
    assert re.search(r'id="rollout-state">done<', page)

    # Over: no device is offered it again when it reconnects.
    assert town.retained_offer("tray-1") is None
    actions = [(e["actor"], e["action"]) for e in town.audit.entries() if e["action"].startswith("update.")]
    assert ("admin", "update.start") in actions and ("tray-2", "update.refused") in actions
    assert sorted(a for a in actions if a[1] == "update.running") == [
        ("tray-1", "update.running"), ("tray-3", "update.running"), ("tray-4", "update.running")]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_rollout_stops_when_a_first_device_goes_back_and_the_rest_are_never_offered_it(update_town):
    town = update_town
    rollout = town.start(first=2).json()
    town.town.gateway.update_round()
    first = {d: town.boards[d].next_offer() for d in ("tray-1", "tray-2")}
    town.boards["tray-1"].report(first["tray-1"], "running")
    town.boards["tray-2"].report(first["tray-2"], "switched", **{"from": "1.3.0"})
    town.boards["tray-2"].report(first["tray-2"], "rolled_back", reason="crash",
                                 detail="the new version stopped 3 times on start")
    town.wait_for(rollout["id"], "tray-2", "rolled_back")
    town.town.gateway.update_round()

    stopped = town.admin.get(f"/api/v1/operator/rollouts/{rollout['id']}").json()
    assert stopped["state"] == "stopped"
    assert stopped["reason"] == "tray-2 went back to its old version (crash: the new version stopped 3 times on start)"
    assert town.states(rollout["id"]) == {"tray-1": "running", "tray-2": "rolled_back",
                                          "tray-3": "withdrawn", "tray-4": "withdrawn"}
    town.town.gateway.update_round()
    assert town.retained_offer("tray-3") is None and town.boards["tray-3"].offers.empty()
    stop = [e for e in town.audit.entries() if e["action"] == "update.stop"]
    assert stop and stop[0]["actor"] == "gateway" and "tray-2 went back" in stop[0]["after"]["reason"]
    page = town.admin.get(f"/operator/updates/{rollout['id']}?lang=en").text
    assert "tray-2 went back to its old version" in page and "the new version kept failing to start" in page

    # The devices that never got it can be offered it again once the fault is fixed: not
    # while another rollout is still at them.
    again = town.start(devices=["tray-3", "tray-1"])
    assert again.status_code == 201 and again.json()["counts"] == {"offered": 2}
    busy = town.start(devices=["tray-3"])
    assert busy.status_code == 400 and "tray-3 is being updated to 1.4.0" in busy.json()["detail"]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_first_device_that_stays_silent_stops_the_rollout_after_the_wait(update_town):
    town = update_town
    rollout = town.start(first=1, wait_min=30).json()
    town.town.gateway.update_round()
    offer = town.boards["tray-1"].next_offer()
    town.boards["tray-1"].report(offer, "downloading")
    town.wait_for(rollout["id"], "tray-1", "downloading")
    town.book.advance(now=time.time() + 29 * 60)
    assert town.admin.get(f"/api/v1/operator/rollouts/{rollout['id']}").json()["state"] == "running"
    town.book.advance(now=time.time() + 31 * 60)
    stopped = town.admin.get(f"/api/v1/operator/rollouts/{rollout['id']}").json()
    assert stopped["state"] == "stopped"
    assert stopped["reason"] == "tray-1 was not back and running within 30 min (last heard: downloading)"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_what_cannot_be_offered_is_refused_with_what_to_do(update_town):
    town = update_town
    answer = town.start(version="9.9")
    assert answer.status_code == 404 and "no bundle printer_tray 9.9 is published" in answer.json()["detail"]
    cam = town.town.registry.add_device(DeviceRecord("cam-1", "snow_camera", name="cam"))
    assert cam
    answer = town.start(devices=["cam-1"])
    assert answer.status_code == 400 and "cam-1 is a snow_camera" in answer.json()["detail"]
    answer = town.start(devices=["nobody"])
    assert answer.status_code == 400 and "no device 'nobody'" in answer.json()["detail"]
    # An admin stops a rollout by hand: the devices not yet offered it are not.
    rollout = town.start(first=1).json()
    stopped = town.admin.post(f"/api/v1/operator/rollouts/{rollout['id']}/stop",
                              headers={"X-CSRF-Token": town.admin_token}).json()
    assert stopped["state"] == "stopped" and stopped["reason"] == "stopped by an operator"
    assert stopped["counts"] == {"withdrawn": 4}
    town.town.gateway.update_round()
    assert all(town.boards[d].offers.empty() for d in TRAYS)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_the_command_line_offers_follows_and_stops_a_rollout(update_town, monkeypatch, capsys, tmp_path):
    town = update_town
    monkeypatch.setenv("JISAKU_DATA", str(town.town.directory))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "jisaku.toml"))
    main(["updates", "offer", "printer_tray", "1.4.0", "--first", "1"])
    out = capsys.readouterr().out
    assert "rollout 1: printer_tray 1.4.0 for boards, running; offered 1, waiting 3" in out
    town.town.gateway.update_round()
    town.boards["tray-1"].report(town.boards["tray-1"].next_offer(), "downloading")
    town.wait_for(1, "tray-1", "downloading")
    main(["updates", "show", "1"])
    assert re.search(r"tray-1 +group 1 +downloading", capsys.readouterr().out)
    main(["updates", "stop", "1"])
    assert "stopped (stopped by an operator)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no bundle printer_tray 2.0 is published"):
        main(["updates", "offer", "printer_tray", "2.0"])
    stop = [e for e in town.audit.entries() if e["action"] == "update.stop"]
    assert stop[0]["actor"].startswith("cli:")


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_an_admin_uploads_offers_and_follows_an_update_in_the_browser(update_town, browser):  # noqa: F811
    town = update_town
    bundle = town.town.directory / "printer_tray-1.5.0.bundle"
    build_bundle(REPO / "kinds" / "printer_tray" / "board", "1.5.0", "printer_tray", "board",
                 load_private_key(town.town.directory), bundle)
    page = browser.new_page(viewport={"width": 360, "height": 740}, locale="en-US")
    outside: list[str] = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(town.url + "/")
               else (outside.append(route.request.url), route.abort()))
    page.goto(f"{town.url}/operator/login?lang=en")
    page.fill("#name", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/operator/devices")
    page.click("text=Updates")
    page.set_input_files("#bundle-file", str(bundle))
    page.click("#upload ~ form button[type=submit]")
    page.wait_for_selector("text=The bundle was checked and published.")
    assert "1.5.0" in page.locator("#bundle-list").inner_text()

    page.select_option("#offer-bundle", "printer_tray/1.5.0")
    page.check("input[name=target][value=devices]")
    page.fill("#offer-devices", "tray-1, tray-2")
    page.fill("#offer-first", "1")
    page.click("#offer ~ form button[type=submit]")
    page.wait_for_url("**/operator/updates/*")
    rows = page.locator("#rollout-devices tbody tr")
    assert rows.nth(0).inner_text().split("\t")[:3] == ["tray-1", "1", "offered"]
    assert rows.nth(1).inner_text().split("\t")[:3] == ["tray-2", "2", "waiting for the first group"]

    town.town.gateway.update_round()
    board = town.boards["tray-1"]
    offer = board.next_offer()
    board.report(offer, "rolled_back", reason="no_report", detail="not back within 300 s after switching")
    town.wait_for(1, "tray-1", "rolled_back")
    town.town.gateway.update_round()
    page.reload()
    assert page.locator("#rollout-state").inner_text() == "stopped"
    assert "tray-1 went back to its old version" in page.locator("#rollout-reason").inner_text()
    assert "not back online in time: not back within 300 s" in rows.nth(0).inner_text()
    assert "not offered (stopped)" in rows.nth(1).inner_text()
    page.click("#rollout-devices a:text-is(\"tray-1\")")
    assert "went back" in page.locator("#device-updates").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert outside == [], f"the page tried to load from outside this machine: {outside}"


def test_an_offer_of_the_jisaku_package_says_so_in_its_path():
    """A version of jisaku itself may share its number with an app's: the offer names the package."""
    rollout = {"version": "0.6", "runs_on": "pi", "bytes": 100, "manifest_sha256": "0" * 64, "trial_s": 300}
    package = json.loads(offer_payload(7, "tray-1", {**rollout, "kind": "jisaku"}))
    app = json.loads(offer_payload(8, "tray-1", {**rollout, "kind": "printer_tray"}))
    assert package["path"] == "/api/v1/devices/tray-1/bundles/0.6?kind=jisaku"
    assert app["path"] == "/api/v1/devices/tray-1/bundles/0.6"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_device_away_for_a_whole_rollout_can_be_offered_the_next_one(update_town):
    town = update_town
    first = town.start(devices=["tray-1", "tray-2"], wait_min=30).json()
    town.town.gateway.update_round()
    town.boards["tray-1"].report(town.boards["tray-1"].next_offer(), "running")
    town.wait_for(first["id"], "tray-1", "running")
    town.book.advance(now=time.time() + 31 * 60)  # tray-2 never answered: the rollout is over without it
    assert town.admin.get(f"/api/v1/operator/rollouts/{first['id']}").json()["state"] == "done"
    again = town.start(devices=["tray-2"])
    assert again.status_code == 201, again.text
    assert town.states(first["id"])["tray-2"] == "withdrawn", "the new offer replaces the old one"
