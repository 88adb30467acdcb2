"""Two towns on one deployment, through the real pipeline: each town's public pages and API.

The first town (Takayama in the demo) answers the paths without a prefix; its neighbour (Hida)
answers under /t/hida/. Every collection a resident can reach (map, list, latest.geojson, the
live stream, the devices' list, open data, GTFS-Realtime, shelters) holds the town's own
devices only; a device's own page works without the prefix (ids are unique) but is 404 under
the other town's; disaster mode is each town's own. A real Chromium shows Hida's map.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.transit import gtfs_realtime_pb2

from jisaku.cli.demo_town import city_towns, load_city
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database, write
from jisaku.gateway.towns import Town, Towns

from .test_browser import browser, offline_phone  # noqa: F401  (a fixture, and the offline phone)
from .town import EXAMPLES, wait_until

CITY = EXAMPLES / "demo-city" / "city.toml"
FIRST = {"bus-1", "snow-1", "shelter-1"}
HIDA = {"hida-bus-1", "hida-snow-1", "hida-shelter-1"}


def two_towns(make_town):
    """The demo's Takayama and Hida devices on one deployment, Hida's moved into town ``hida``
    as city.toml says (before anything runs), and Hida with its own licence."""
    devices = [d for d in load_city(CITY) if d.id in FIRST | HIDA]
    town = make_town(devices)
    towns = city_towns(CITY)
    db = Database(town.db_path)
    hida = next(t for t in towns.others if t.id == "hida")
    Towns(db).add(Town(hida.id, name="Hida (test)", name_ja="飛騨市（テスト）", lat=hida.lat, lon=hida.lon,
                       zoom=hida.zoom, licence="CC0-1.0"))
    Towns(db).update("main", name="Takayama (test)", name_ja="高山市（テスト）")
    with write(db.connection) as connection:
        for device_id, town_id in towns.of_device.items():
            connection.execute("UPDATE devices SET town=? WHERE id=?", (town_id, device_id))
        connection.execute("UPDATE registry_version SET version = version + 1 WHERE id=1")
    assert {d.id for d in town.registry.devices(town="hida")} == HIDA
    town.start_dashboard(tiles="osm")
    town.run_devices()
    return town


def get(town, path: str) -> tuple[int, Any, bytes]:
    try:
        with urllib.request.urlopen(town.base_url + path, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def ids(town, path: str) -> set[str]:
    return {f["id"] for f in town.get_json(path)["features"]}


def stream_events(town, path: str, count: int) -> list[tuple[str, dict]]:
    """The first ``count`` events of a stream: the ``latest`` snapshot, then ``changes``."""
    events = []
    with urllib.request.urlopen(town.base_url + path, timeout=10) as response:
        name = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line.removeprefix("data: "))))
                if len(events) == count:
                    return events
    raise AssertionError(f"the stream ended after {len(events)} events")


def first_stream_event(town, path: str) -> dict:
    """The ``latest`` snapshot a stream starts with."""
    ((name, data),) = stream_events(town, path, 1)
    assert name == "latest"
    return data


def feed_ids(town, path: str) -> set[str]:
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.ParseFromString(get(town, path)[2])
    return {entity.vehicle.vehicle.id for entity in feed.entity}


def every_device_reported(town):
    def reported():
        return (ids(town, "/api/v1/latest.geojson") == FIRST and ids(town, "/t/hida/api/v1/latest.geojson") == HIDA
                and all(f["geometry"] and f["properties"]["values"] for path in ("", "/t/hida")
                        for f in town.get_json(path + "/api/v1/latest.geojson")["features"]))
    wait_until(reported, 30, "every device of both towns reports to its own town's latest.geojson")


def test_each_town_shows_its_own_devices_on_every_public_path(make_town):
    town = two_towns(make_town)
    every_device_reported(town)

    # The devices' list, the live stream's first snapshot: each town's own.
    assert {d["id"] for d in town.get_json("/api/v1/devices")} == FIRST
    assert {d["id"] for d in town.get_json("/t/hida/api/v1/devices")} == HIDA
    assert {f["id"] for f in first_stream_event(town, "/api/v1/stream")["features"]} == FIRST
    assert {f["id"] for f in first_stream_event(town, "/t/hida/api/v1/stream")["features"]} == HIDA
    # While both towns' buses drive, each stream's changes are its own town's devices only.
    for path, mine in (("/api/v1/stream", FIRST), ("/t/hida/api/v1/stream", HIDA)):
        changes = [data for name, data in stream_events(town, path, 4)[1:]]
        assert all(name for name in changes) and all(f["id"] in mine for c in changes for f in c["features"])
        assert any(c["features"] for c in changes)
    # /t/main/ is the first town by its name
    assert ids(town, "/t/main/api/v1/latest.geojson") == FIRST

    # The map: the first town's at /, Hida's at /t/hida/, each with its name, data and links.
    _, _, first_map = get(town, "/")
    _, _, hida_map = get(town, "/t/hida/?lang=en")
    assert "Takayama (test)" in first_map.decode() or "高山市（テスト）" in first_map.decode()
    hida_html = hida_map.decode()
    assert "Hida (test)" in hida_html and "Takayama" not in hida_html
    assert '"/t/hida/api/v1/stream"' in hida_html and '"/t/hida/api/v1/latest.geojson"' in hida_html
    assert 'href="/t/hida/list"' in hida_html

    # The list: its own devices, with links that stay in the town.
    status, _, body = get(town, "/t/hida/list?lang=en")
    listed = body.decode()
    assert status == 200 and all(f'data-device-id="{d}"' in listed for d in HIDA)
    assert not any(f'data-device-id="{d}"' in listed for d in FIRST)
    assert 'href="/t/hida/devices/hida-snow-1"' in listed and 'href="/t/hida/"' in listed
    _, _, body = get(town, "/list")
    assert not any(d in body.decode() for d in HIDA)

    # A device's own page: without the prefix wherever it is; under another town's, as missing.
    assert get(town, "/devices/hida-snow-1")[0] == 200
    status, _, body = get(town, "/t/hida/devices/hida-snow-1?lang=en")
    assert status == 200 and '"api": "/t/hida/api/v1"' in body.decode() and "Hida (test)" in body.decode()
    for path in ("/t/hida/devices/snow-1", "/t/hida/api/v1/devices/snow-1/readings",
                 "/t/hida/api/v1/devices/snow-1/history?metric=depth_cm", "/t/hida/api/v1/devices/bus-1/track",
                 "/t/hida/api/v1/export.csv?device=snow-1", "/devices/hida-nope"):
        assert get(town, path)[0] == 404, path
    wrong_town = get(town, "/t/hida/api/v1/devices/snow-1/readings")[2]
    assert wrong_town == get(town, "/api/v1/devices/snow-0/readings")[2].replace(b"snow-0", b"snow-1")
    assert get(town, "/api/v1/devices/hida-snow-1/readings")[0] == 200

    # Open data: each town's devices, under its own licence and name.
    status, headers, body = get(town, "/t/hida/api/v1/export.csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert status == 200 and rows and {r["device_id"] for r in rows} <= HIDA
    assert "</t/hida/api/v1/open-data.json>" in headers["Link"] and "publicdomain/zero" in headers["Link"]
    rows = list(csv.DictReader(io.StringIO(get(town, "/api/v1/export.csv")[2].decode())))
    assert rows and {r["device_id"] for r in rows} <= FIRST
    terms = town.get_json("/t/hida/api/v1/open-data.json")
    assert terms["licence"]["id"] == "CC0-1.0" and terms["licence"]["attribution"] == "Hida (test) / 飛騨市（テスト）"
    assert terms["shelters"]["csv"] == "/t/hida/api/v1/shelters.csv"
    assert town.get_json("/api/v1/open-data.json")["licence"]["id"] == "CC-BY-4.0"
    exported = json.loads(get(town, "/t/hida/api/v1/export.geojson")[2])
    assert {f["properties"]["device_id"] for f in exported["features"]} <= HIDA
    assert exported["license"]["id"] == "CC0-1.0"

    # Shelters, the list and the export: the town's own.
    assert "古川小学校" in get(town, "/t/hida/api/v1/shelters.csv")[2].decode("utf-8-sig")
    assert "古川小学校" not in get(town, "/api/v1/shelters.csv")[2].decode("utf-8-sig")
    _, _, body = get(town, "/t/hida/shelters?lang=en")
    assert "Furukawa" in body.decode() and "Nishi elementary" not in body.decode()

    # GTFS-Realtime: each town's buses.
    wait_until(lambda: feed_ids(town, "/t/hida/gtfs-rt/vehicle-positions.pb") == {"hida-bus-1"}, 20,
               "Hida's bus is in Hida's feed")
    assert feed_ids(town, "/gtfs-rt/vehicle-positions.pb") == {"bus-1"}

    # A town that is not there, and operators' paths under a town: 404.
    for path in ("/t/nowhere/", "/t/nowhere/api/v1/latest.geojson", "/t/hida/operator", "/t/hida/api/v1/operator/devices"):
        assert get(town, path)[0] == 404, path
    assert town.get_json("/t/hida/api/v1/town")["name"] == "Hida (test)"


def test_disaster_mode_is_each_towns_own(make_town):
    town = two_towns(make_town)
    town.changes.set_disaster_mode("tester", True, "hida")
    assert town.get_json("/t/hida/api/v1/town")["disaster_mode"] is not None
    assert town.get_json("/api/v1/town")["disaster_mode"] is None
    _, _, body = get(town, "/t/hida/list")
    assert 'id="jisaku-disaster"' in body.decode() and 'href="/t/hida/shelters"' in body.decode()
    assert 'id="jisaku-disaster"' not in get(town, "/list")[2].decode()
    # Only Hida's shelter was opened, and the audit log says it was Hida's.
    assert town.store.config_state("hida-shelter-1")["settings"]["open"] == 1
    assert (town.store.config_state("shelter-1") or {}).get("settings", {}).get("open") != 1
    (entry,) = [e for e in AuditLog(town.registry.db).entries() if e["action"] == "town.disaster_mode"]
    assert entry["town"] == "hida"
    town.changes.set_disaster_mode("tester", False, "hida")
    assert town.get_json("/t/hida/api/v1/town")["disaster_mode"] is None


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_phone_shows_the_second_towns_map_with_its_name_and_markers(browser, make_town):  # noqa: F811
    town = two_towns(make_town)
    every_device_reported(town)
    page = offline_phone(browser)
    page.goto(town.base_url + "/t/hida/")
    page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 3", timeout=15000)
    assert set(page.evaluate("Object.keys(window.jisakuMarkers)")) == HIDA
    assert "Hida (test)" in page.locator("h1").inner_text()
    assert "Hida (test)" in page.title()
    # The map opened where Hida is, not in Takayama 15 km away.
    centre = page.evaluate("window.jisakuMap.getCenter()")
    assert abs(centre["lat"] - 36.239) < 0.02 and abs(centre["lng"] - 137.186) < 0.02
    # Its list link and a marker's page stay in the town.
    assert page.locator("a.jisaku-skip").get_attribute("href") == "/t/hida/list"
    page.goto(town.base_url + "/t/hida/list")
    page.locator('a[href="/t/hida/devices/hida-snow-1"]').click()
    page.wait_for_url("**/t/hida/devices/hida-snow-1")
    page.wait_for_selector("#jisaku-charts canvas, #jisaku-charts .uplot", timeout=15000)
    assert not page.outside, f"requests left the machine: {page.outside}"


def test_an_operator_turns_their_own_towns_disaster_mode_and_a_joint_account_names_the_town(make_town):
    import httpx

    from jisaku.dashboard.operator.auth import CSRF_HEADER
    from jisaku.gateway.accounts import Accounts

    town = two_towns(make_town)
    accounts = Accounts(Database(town.db_path))
    accounts.add("sato", "hida-password-1", "operator", town="hida")
    accounts.add("joint", "joint-password-1", "admin", town=None)

    def client(name: str, password: str) -> httpx.Client:
        session = httpx.Client(base_url=town.base_url, timeout=10)
        answer = session.post("/api/v1/operator/login", json={"name": name, "password": password})
        assert answer.status_code == 200, answer.text
        session.headers[CSRF_HEADER] = answer.json()["csrf_token"]
        return session

    sato, joint = client("sato", "hida-password-1"), client("joint", "joint-password-1")
    try:
        answer = sato.put("/api/v1/operator/disaster-mode", json={"on": True})
        assert answer.status_code == 200 and answer.json()["town"] == "hida"
        assert town.get_json("/t/hida/api/v1/town")["disaster_mode"] and not town.get_json("/api/v1/town")["disaster_mode"]
        assert sato.get("/api/v1/operator/shelters").json()["disaster_mode"] is not None
        # Another town is answered word for word as a town that does not exist.
        other = sato.put("/api/v1/operator/disaster-mode", json={"on": True, "town": "main"})
        missing = sato.put("/api/v1/operator/disaster-mode", json={"on": True, "town": "nowhere"})
        assert other.status_code == missing.status_code == 404
        assert other.json()["detail"].replace("main", "X") == missing.json()["detail"].replace("nowhere", "X")
        assert not town.get_json("/api/v1/town")["disaster_mode"]
        # A joint-body account names the town; without one, the first town.
        assert joint.put("/api/v1/operator/disaster-mode", json={"on": True}).json()["town"] == "main"
        assert town.get_json("/api/v1/town")["disaster_mode"]
        assert joint.put("/api/v1/operator/disaster-mode", json={"on": False, "town": "hida"}).json()["town"] == "hida"
        assert not town.get_json("/t/hida/api/v1/town")["disaster_mode"] and town.get_json("/api/v1/town")["disaster_mode"]
        # On the operator page, a joint-body account picks the town; the form turns that town's.
        page = joint.get("/operator/shelters?town=hida").text
        assert 'href="/operator/shelters?town=hida" aria-current="page"' in page and 'name="town" value="hida"' in page
        answer = joint.post("/operator/shelters/disaster-mode", data={"confirm": "yes", "on": "1", "town": "hida"})
        assert answer.status_code == 303 and answer.headers["location"] == "/operator/shelters?town=hida"
        assert town.get_json("/t/hida/api/v1/town")["disaster_mode"]
        # A town operator's page has no such choice and is their own town's.
        page = sato.get("/operator/shelters?town=main").text
        assert 'name="town" value="hida"' in page and "?town=main" not in page
    finally:
        sato.close()
        joint.close()
