"""The practice space: a learner's device through the real pipeline (broker, gateway, alert
engine, notifier, dashboard), its alerts reaching the learner's own webhook and never the
town's, nothing of it on any public path, and promotion with and without its history.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
from google.transit import gtfs_realtime_pb2

from jisaku.contract import protocol
from jisaku.device.config import load_device_config
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore

from .receivers import WebhookReceiver
from .test_browser import browser, offline_phone  # noqa: F401 (browser: the fixture)
from .town import KINDS, serving, wait_until

PRACTICE_ID, PRACTICE_NAME = "bus-learner", "Sato's practice bus"
GHOST = "bus-nobody"  # never registered: what a missing device gets, word for word
ADMIN_PW, LEARNER_PW = "correct horse battery staple", "another long passphrase"
SPEEDING = {"type": "above", "metric": "speed_kmh", "raise_at": 50, "clear_at": 40}


def _login(base_url: str, name: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=10)
    answer = client.post("/api/v1/operator/login", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def _drive(town, device_id: str, speeds: list[float], lat: float) -> None:
    """Readings a second apart, ending now, at a place near town (so they are on the maps)."""
    link = town.link(device_id)
    link.start()
    start = time.time() - len(speeds)
    try:
        for i, speed in enumerate(speeds):
            link.publish_reading({"speed_kmh": speed, "lat": lat, "lon": 137.25 + i / 1000}, ts=start + i)
        wait_until(lambda: town.store.reading_count(device_id) >= len(speeds), 20,
                   f"{device_id}'s {len(speeds)} readings are stored")
    finally:
        link.stop()


def _public_paths(openapi: dict) -> list[str]:
    """Every GET of the OpenAPI document outside the operators' API."""
    return [path for path, operations in openapi["paths"].items()
            if not path.startswith("/api/v1/operator") and "get" in operations]


def _fill(path: str, device_id: str) -> str:
    path = path.replace("{device_id}", device_id).replace("{version}", "1.0.0").replace("{name:path}", "x.jpg")
    return re.sub(r"\{[^}]+\}", "x", path)


QUERIES = {"/api/v1/devices/{device_id}/history": "?metric=speed_kmh",
           "/api/v1/export.csv": "?device={id}", "/api/v1/export.geojson": "?device={id}",
           "/api/v1/export-hourly.csv": "?device={id}", "/api/v1/devices/{device_id}/readings": ""}


def _get(client: httpx.Client, path: str) -> tuple[int, str]:
    if path.endswith("/api/v1/stream"):  # endless: its first event is every device
        with client.stream("GET", path) as response:
            text = ""
            for chunk in response.iter_text():
                text += chunk
                if "\n\n" in text and "event: latest" in text:
                    break
            return response.status_code, text
    response = client.get(path)
    return response.status_code, response.content.decode("utf-8", errors="replace")


def walk_public(town, app_routes: list[str], openapi: dict, device_id: str = PRACTICE_ID,
                name: str = PRACTICE_NAME, prefix: str = "") -> list[str]:
    """Ask every public path (and page) about the practice device and about a missing one; returns
    what leaked. A path naming a device must answer the practice one exactly as the missing one.
    ``prefix``: the town's own paths (``/t/<id>``), the same handlers."""
    leaks = []
    client = httpx.Client(base_url=town.base_url, timeout=10)
    for template in sorted(set(_public_paths(openapi)) | set(app_routes)):
        query = QUERIES.get(template, "")
        asked = {}
        for asked_id in (device_id, GHOST):
            asked[asked_id] = _get(client, prefix + _fill(template, asked_id) + query.replace("{id}", asked_id))
        (status, text), (ghost_status, ghost_text) = asked[device_id], asked[GHOST]
        if name in text:
            leaks.append(f"{template}: the practice device's name")
        if "{device_id}" in template or "{id}" in query:
            # Time-stamped answers (the stream, exports' headers) differ between two asks; a refusal does not.
            # (a page that answers any id alike, such as a staff page, echoes it: that tells nothing).
            if status != ghost_status:
                leaks.append(f"{template}: {status} for the practice device, {ghost_status} for a missing one")
            elif text.replace(device_id, "ID") == ghost_text.replace(GHOST, "ID"):
                continue
            elif status >= 400:
                leaks.append(f"{template}: the practice device's refusal differs from a missing one's")
            elif device_id in text.replace(f"={device_id}", ""):
                leaks.append(f"{template}: the practice device's id in a {status} answer")
        elif device_id in text:
            leaks.append(f"{template}: the practice device's id")
    return leaks


def public_page_routes(base_url: str) -> list[str]:
    """The page routes of the app (``app.routes``) outside /operator, /static and the API docs."""
    from fastapi.routing import iter_route_contexts

    from jisaku.dashboard.app import create_app

    routes = []
    probe = create_app(_probe_db(), tiles="osm")
    for route in iter_route_contexts(probe.routes):
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None) or set()
        if "GET" in methods and not path.startswith(("/operator", "/api/v1/operator", "/docs", "/redoc")):
            routes.append(path)
    return routes


def _probe_db():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "routes.db"


def test_a_practice_device_goes_through_the_pipeline_but_only_to_its_learner(make_town):
    town_hook, learner_hook = WebhookReceiver(), WebhookReceiver()
    bus = load_device_config(KINDS / "vehicle_tracker")  # bus-1, the town's own
    learner_bus = load_device_config(KINDS / "vehicle_tracker", {"device": {"id": PRACTICE_ID, "name": PRACTICE_NAME}})
    try:
        town = make_town([bus, learner_bus], notify={
            "webhook": [{"name": "office", "url": town_hook.url + "/town"}], "retry_first_s": 0.2})
        accounts = Accounts(Database(town.db_path))
        accounts.add("admin", ADMIN_PW, role="admin")
        accounts.add("sato", LEARNER_PW, role="operator")
        town.start_dashboard(tiles="osm")
        sato, admin = _login(town.base_url, "sato", LEARNER_PW), _login(town.base_url, "admin", ADMIN_PW)

        # The learner marks the device practice, sets their own target, and writes a practice rule.
        marked = sato.patch(f"/api/v1/operator/devices/{PRACTICE_ID}", json={"practice": True})
        assert marked.status_code == 200 and marked.json()["practice"] is True, marked.text
        mine = sato.put("/api/v1/operator/me/notify", json={"webhook_url": learner_hook.url + "/mine"})
        assert mine.json() == {"kind": "webhook", "to": "http://127.0.0.1/…", "webhook_format": "generic",
                               "language": "ja"}, mine.text
        rule = sato.post("/api/v1/operator/rules", json={
            "name": "Too fast (practice)", "device_id": PRACTICE_ID, "practice": True, "owner": "admin",
            "condition": SPEEDING})
        assert rule.status_code == 201, rule.text
        assert (rule.json()["practice"], rule.json()["owner"]) == (True, "sato"), "the owner is who made it"
        # The town's own rule for every bus, by the admin (who has no target of their own).
        town_rule = admin.post("/api/v1/operator/rules", json={
            "name": "Too fast", "kind": "bus", "condition": {**SPEEDING, "raise_at": 80, "clear_at": 60}})
        assert town_rule.status_code == 201 and town_rule.json()["practice"] is False

        _drive(town, PRACTICE_ID, [30, 60, 90, 30], lat=36.15)
        _drive(town, "bus-1", [30, 90, 30], lat=36.14)

        # Raised and cleared: the practice rule's to the learner, the town rule's for bus-1 to the town.
        wait_until(lambda: len(learner_hook.delivered("/mine")) == 2, 20, "the learner's webhook gets two messages")
        wait_until(lambda: len(town_hook.delivered("/town")) == 2, 20, "the town's webhook gets two messages")
        connection = Database(town.db_path).connection
        wait_until(lambda: connection.execute("SELECT count(*) FROM notify_outbox WHERE fanned_out = 0")
                   .fetchone()[0] == 0 and len(town.alerts.alerts()) == 3
                   and all(a.state == "cleared" for a in town.alerts.alerts()), 20, "every alert is fanned out")

        learned = learner_hook.delivered("/mine")
        assert [(m["event"], m["device_id"], m["rule"]) for m in learned] == [
            ("raised", PRACTICE_ID, "Too fast (practice)"), ("cleared", PRACTICE_ID, "Too fast (practice)")]
        told = town_hook.delivered("/town")
        assert [(m["event"], m["device_id"], m["rule"]) for m in told] == [
            ("raised", "bus-1", "Too fast"), ("cleared", "bus-1", "Too fast")]
        assert all("route" not in m for m in learned + told), "whose it is stays inside"
        # The town rule fired for the practice device too: its owner (admin) has no target, so
        # it is on the alerts page only, never on the town's webhook.
        assert {(a.rule_name, a.device_id) for a in town.alerts.alerts()} == {
            ("Too fast (practice)", PRACTICE_ID), ("Too fast", PRACTICE_ID), ("Too fast", "bus-1")}
        channels = {d["channel"] for d in town.alerts.notifier.deliveries()}
        assert channels == {"office", "user:sato"}
        page = admin.get("/operator/alerts").text
        assert "Too fast" in page and PRACTICE_ID in page
        # Operators can tell which alerts are practice ones: a practice rule's, or any for a practice device.
        assert {(a["rule_name"], a["device_id"], a["practice"]) for a in admin.get("/api/v1/operator/alerts").json()} == {
            ("Too fast (practice)", PRACTICE_ID, True), ("Too fast", PRACTICE_ID, True), ("Too fast", "bus-1", False)}

        # Stored and charted for operators, on the practice map and its feed.
        assert town.store.reading_count(PRACTICE_ID) == 4
        feed = sato.get("/api/v1/operator/practice.geojson").json()
        assert [f["id"] for f in feed["features"]] == [PRACTICE_ID]
        practice_page = sato.get("/operator/practice")
        assert practice_page.status_code == 200 and PRACTICE_ID in practice_page.text
        assert '"/api/v1/operator/practice.geojson"' in practice_page.text and "bus-1" not in practice_page.text
        chart = sato.get(f"/api/v1/operator/devices/{PRACTICE_ID}/history", params={"metric": "speed_kmh"})
        assert chart.status_code == 200 and max(b["max"] for b in chart.json()["buckets"]) == 90
        device_page = sato.get(f"/operator/devices/{PRACTICE_ID}").text
        assert 'id="promote-form"' in device_page and 'id="practice-chart"' in device_page

        # Nothing of it on any public path, page, export or feed.
        openapi = httpx.get(town.base_url + "/openapi.json").json()
        pages = public_page_routes(town.base_url)
        assert walk_public(town, pages, openapi) == []
        assert walk_public(town, pages, openapi, prefix="/t/main") == []  # the town's own paths
        # The same walk does see a town device: it would notice the practice one.
        seen = walk_public(town, pages, openapi, "bus-1", "Town loop bus 1")
        assert len(seen) >= 10, seen
        assert len(walk_public(town, pages, openapi, "bus-1", "Town loop bus 1", prefix="/t/main")) >= 10
        feed = gtfs_realtime_pb2.FeedMessage()
        feed.ParseFromString(httpx.get(town.base_url + "/gtfs-rt/vehicle-positions.pb").content)
        assert PRACTICE_ID not in str(feed) and PRACTICE_NAME not in str(feed)
        assert "bus-1" in str(feed), "the town's own bus is in the feed"

        # Promotion keeping its history: the same readings, now on the residents' map; audited.
        promoted = admin.post(f"/api/v1/operator/devices/{PRACTICE_ID}/promote", json={"keep_history": True})
        assert promoted.status_code == 200, promoted.text
        assert (promoted.json()["device"]["practice"], promoted.json()["deleted"]) == (False, {})
        assert town.store.reading_count(PRACTICE_ID) == 4
        wait_until(lambda: PRACTICE_ID in town.features(), 10, "the promoted bus is on the residents' map")
        assert town.features()[PRACTICE_ID]["properties"]["values"]["speed_kmh"] == 30
        (entry,) = AuditLog(Database(town.db_path)).entries(target=PRACTICE_ID, limit=1)
        assert (entry["actor"], entry["action"], entry["before"], entry["after"]) == (
            "admin", "device.promote", {"practice": True}, {"practice": False, "keep_history": True, "deleted": {}})
        again = admin.post(f"/api/v1/operator/devices/{PRACTICE_ID}/promote", json={"keep_history": True})
        assert again.status_code == 400 and "not a practice device" in again.json()["detail"]
        # Its practice rule stays practice, and still notifies only the learner.
        assert {r["name"]: r["practice"] for r in admin.get("/api/v1/operator/rules").json()} == {
            "Too fast (practice)": True, "Too fast": False}
    finally:
        town_hook.close()
        learner_hook.close()


def _practice_db(tmp_path, device_id: str = "snow-9") -> Database:
    """A practice snow gauge with readings, an event, an hourly figure and its latest row."""
    db = Database(tmp_path / "jisaku.db")
    Registry(db).add_device(DeviceRecord(device_id, "snow_gauge", name="Practice gauge", lat=36.1, lon=137.2,
                                         practice=True))
    now = time.time()
    SQLiteStore(db).write(Batch(
        readings=[(device_id, protocol.Reading(ts=now - 10 + i, seq=i, values={"depth_cm": 10 + i})) for i in range(5)],
        events=[(device_id, protocol.Event(ts=now - 5, seq=9, name="boot"))]))
    db.connection.execute("INSERT INTO readings_hourly (device_id, hour, metric, n, min, max, sum)"
                          " VALUES (?, 0, 'depth_cm', 1, 1, 1, 1)", (device_id,))
    return db


def _counts(db: Database, device_id: str) -> dict[str, int]:
    return {table: db.connection.execute(f"SELECT count(*) FROM {table} WHERE device_id=?", (device_id,)).fetchone()[0]
            for table in ("readings", "events", "readings_hourly", "latest")}


def test_promotion_without_history_deletes_what_it_recorded_from_the_page_and_the_command(tmp_path):
    """The button on the device page (keep_history=0), then `jisaku devices promote --drop-history`."""
    from fastapi.testclient import TestClient

    from jisaku.dashboard.app import create_app

    db = _practice_db(tmp_path)
    Registry(db).add_device(DeviceRecord("snow-10", "snow_gauge", practice=True))
    SQLiteStore(db).write(Batch(readings=[("snow-10", protocol.Reading(ts=time.time(), seq=1, values={"depth_cm": 3}))]))
    Accounts(db).add("admin", ADMIN_PW, role="admin")
    assert _counts(db, "snow-9") == {"readings": 5, "events": 1, "readings_hourly": 1, "latest": 1}
    client = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm"))
    token = client.post("/api/v1/operator/login", json={"name": "admin", "password": ADMIN_PW}).json()["csrf_token"]
    page = client.get("/operator/devices/snow-9").text
    assert 'id="practice-badge"' in page and 'id="promote-form"' in page
    unconfirmed = client.post("/operator/devices/snow-9/promote", data={"csrf_token": token, "keep_history": "0"})
    assert unconfirmed.status_code == 400 and Registry(db).get("snow-9").practice
    answer = client.post("/operator/devices/snow-9/promote", follow_redirects=False,
                         data={"csrf_token": token, "keep_history": "0", "confirm": "yes"})
    assert answer.status_code == 303, answer.text
    assert not Registry(db).get("snow-9").practice
    assert _counts(db, "snow-9") == {"readings": 0, "events": 0, "readings_hourly": 0, "latest": 0}
    (entry,) = AuditLog(db).entries(target="snow-9", limit=1)
    assert (entry["actor"], entry["action"], entry["after"]["keep_history"], entry["after"]["deleted"]["readings"]) == (
        "admin", "device.promote", False, 5)
    assert "promote-form" not in client.get("/operator/devices/snow-9").text

    # The command line, as the workshop's trainer types it.
    env = {**os.environ, "JISAKU_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "jisaku.cli", "devices", "promote", "snow-10", "--drop-history"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "snow-10: promoted to a town device" in done.stdout and "1 readings" in done.stdout
    assert _counts(db, "snow-10")["readings"] == 0 and not Registry(db).get("snow-10").practice
    (entry,) = AuditLog(db).entries(target="snow-10", limit=1)
    assert entry["action"] == "device.promote" and entry["actor"].startswith("cli:")
    twice = subprocess.run([sys.executable, "-m", "jisaku.cli", "devices", "promote", "snow-10"],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert twice.returncode != 0 and "not a practice device" in twice.stderr


def test_practice_devices_and_rules_from_the_pages_and_the_command(tmp_path):
    from fastapi.testclient import TestClient

    from jisaku.dashboard.app import create_app

    db = Database(tmp_path / "jisaku.db")
    Accounts(db).add("sato", LEARNER_PW, role="operator")
    env = {**os.environ, "JISAKU_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "jisaku.cli", "devices", "add", "snow-7", "--kind", "snow_gauge",
                           "--practice"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "as a practice device" in done.stdout and Registry(db).get("snow-7").practice
    listed = subprocess.run([sys.executable, "-m", "jisaku.cli", "devices", "list"], env=env, capture_output=True,
                            text=True, cwd=tmp_path).stdout
    assert re.search(r"snow-7\s+main\s+snow_gauge\s+practice", listed), listed

    client = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm"))
    token = client.post("/api/v1/operator/login", json={"name": "sato", "password": LEARNER_PW}).json()["csrf_token"]
    form = client.get("/operator/devices/new").text
    assert 'name="practice"' in form
    added = client.post("/operator/devices/new", data={"csrf_token": token, "id": "snow-8", "kind": "snow_gauge",
                                                       "public": "1", "practice": "1"})
    assert added.status_code == 200 and Registry(db).get("snow-8").practice
    # Saving its details keeps it practice; leaving practice is promotion's alone.
    saved = client.post("/operator/devices/snow-8", follow_redirects=False,
                        data={"csrf_token": token, "kind": "snow_gauge", "name": "Mine", "practice": "1"})
    assert saved.status_code == 303 and Registry(db).get("snow-8").practice
    refused = client.patch("/api/v1/operator/devices/snow-8", json={"practice": False},
                           headers={"X-CSRF-Token": token})
    assert refused.status_code == 400 and "promote" in refused.json()["detail"]

    rule = client.post("/operator/rules", follow_redirects=False, data={
        "csrf_token": token, "name": "Practice depth", "scope_is": "device", "scope": "snow-8", "type": "above",
        "metric": "depth_cm", "raise_at": "5", "enabled": "1", "practice": "1"})
    assert rule.status_code == 303, rule.text
    (saved_rule,) = client.get("/api/v1/operator/rules").json()
    assert (saved_rule["practice"], saved_rule["owner"]) == (True, "sato")
    edit = client.get(f"/operator/rules?edit={saved_rule['id']}").text
    assert re.search(r'name="practice" value="1" checked', edit)

    # My notifications: a page and the API; an e-mail needs a mail server, which this one lacks.
    page = client.get("/operator/notify")
    assert page.status_code == 200 and 'id="notify-form"' in page.text
    no_mail = client.put("/api/v1/operator/me/notify", json={"email": "sato@town.example.jp"},
                         headers={"X-CSRF-Token": token})
    assert no_mail.status_code == 400 and "mail server" in no_mail.json()["detail"]
    bad = client.post("/operator/notify", data={"csrf_token": token, "webhook_url": "ftp://x"})
    assert bad.status_code == 400
    good = client.post("/operator/notify", follow_redirects=False,
                       data={"csrf_token": token, "webhook_url": "https://hooks.example.jp/services/SECRET",
                             "webhook_format": "slack"})
    assert good.status_code == 303
    assert client.get("/api/v1/operator/me/notify").json()["to"] == "https://hooks.example.jp/…"
    (entry,) = AuditLog(db).entries(target="sato", limit=1)
    assert entry["action"] == "user.notify" and "SECRET" not in json.dumps(entry)
    removed = client.put("/api/v1/operator/me/notify", json={}, headers={"X-CSRF-Token": token})
    assert removed.json()["kind"] is None


def test_the_practice_map_shows_the_learners_device_in_a_browser(tmp_path, browser):  # noqa: F811
    """live.js on /operator/practice: the practice device's marker, linking to its operator page."""
    from jisaku.dashboard.app import create_app

    db = _practice_db(tmp_path)
    Registry(db).add_device(DeviceRecord("snow-1", "snow_gauge", name="Town gauge", lat=36.2, lon=137.3))
    SQLiteStore(db).write(Batch(readings=[("snow-1", protocol.Reading(ts=time.time(), seq=1, values={"depth_cm": 7}))]))
    Accounts(db).add("sato", LEARNER_PW, role="operator")
    with serving(create_app(tmp_path / "jisaku.db", tiles="osm")) as address:
        page = offline_phone(browser)  # as in the other browser tests: the base map's tiles are not needed
        page.goto(f"{address}/operator/practice")
        page.fill("#name", "sato")
        page.fill("#password", LEARNER_PW)
        page.click("button[type=submit]")
        page.wait_for_url("**/operator/practice")
        page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length > 0")
        assert page.evaluate("Object.keys(window.jisakuMarkers)") == ["snow-9"]
        assert page.locator("#practice-devices").inner_text().startswith("Practice gauge")
        page.evaluate("window.jisakuMarkers['snow-9'].openPopup()")
        link = page.locator(".leaflet-popup-content a").first.get_attribute("href")
        assert link == "/operator/devices/snow-9"
