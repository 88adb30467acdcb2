"""Device names in Japanese and English: a Japanese page shows a device's Japanese name,
an English page its English one, and a database made before names had a Japanese half
keeps working."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from jisaku import cli
from jisaku.cli import flash
from jisaku.dashboard.app import create_app
from jisaku.dashboard.stream import Broadcaster
from jisaku.cli.demo_town import load_city, register
from jisaku.contract.protocol import Reading
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore

from .brokers import free_port
from .test_browser import browser, offline_phone  # noqa: F401 (browser: a fixture, used by name)
from .test_operator import csrf_of, page_login
from .town import EXAMPLES, wait_until

# The devices table as jisaku made it before name_ja, word for word.
OLD_DEVICES_TABLE = """
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    public      INTEGER NOT NULL DEFAULT 1,
    interval_s  REAL,
    lat         REAL,
    lon         REAL,
    secret_hash TEXT,
    created     REAL NOT NULL
);
"""


def old_database(path: Path, *devices: tuple[str, str, str]) -> Path:
    """A database file as an older jisaku left it, holding ``(id, kind, name)`` devices."""
    connection = sqlite3.connect(path)
    connection.executescript(OLD_DEVICES_TABLE)
    connection.executemany("INSERT INTO devices (id, kind, name, lat, lon, created) VALUES (?, ?, ?, 36.1, 137.2, 0)",
                           devices)
    connection.commit()
    connection.close()
    return path


@pytest.fixture
def app(tmp_path):
    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    registry = Registry(Database(tmp_path / "jisaku.db"))
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", name="Snow gauge, city hall car park",
                                     lat=36.14, lon=137.25, name_ja="積雪計（市役所駐車場）"))
    registry.add_device(DeviceRecord("snow-2", "snow_gauge", name="Snow gauge, north school", lat=36.15, lon=137.25))
    return app


# ---------------------------------------------------------------- the database


def test_a_database_made_before_japanese_names_gets_the_column_and_keeps_its_devices(tmp_path):
    path = old_database(tmp_path / "jisaku.db", ("snow-1", "snow_gauge", "Snow gauge, city hall"))
    registry = Registry(Database(path))
    assert registry.get("snow-1") == DeviceRecord("snow-1", "snow_gauge", "Snow gauge, city hall",
                                                  lat=36.1, lon=137.2, name_ja="", town="main")

    registry.update_device(DeviceRecord("snow-1", "snow_gauge", "Snow gauge, city hall", lat=36.1, lon=137.2,
                                        name_ja="積雪計（市役所）"))
    registry.add_device(DeviceRecord("bus-1", "bus", "Loop bus 1", name_ja="循環バス 1号"))
    again = Registry(Database(path))  # opening it a second time adds nothing twice
    assert again.get("snow-1").name_ja == "積雪計（市役所）"
    assert {d["id"]: d["name_ja"] for d in SQLiteStore(Database(path)).latest()} == {
        "bus-1": "循環バス 1号", "snow-1": "積雪計（市役所）"}


def test_the_residents_pages_work_on_a_database_made_before_japanese_names(tmp_path):
    path = old_database(tmp_path / "jisaku.db", ("snow-1", "snow_gauge", "Snow gauge, city hall"))
    client = TestClient(create_app(path, tiles="osm"), cookies={"lang": "ja"})
    assert client.get("/api/v1/latest.geojson").json()["features"][0]["properties"]["name_ja"] == ""
    assert "Snow gauge, city hall" in client.get("/list").text


# ---------------------------------------------------------------- the public API


def test_the_public_api_carries_both_names(app):
    client = TestClient(app)
    features = {f["id"]: f["properties"] for f in client.get("/api/v1/latest.geojson").json()["features"]}
    assert (features["snow-1"]["name"], features["snow-1"]["name_ja"]) == (
        "Snow gauge, city hall car park", "積雪計（市役所駐車場）")
    assert (features["snow-2"]["name"], features["snow-2"]["name_ja"]) == ("Snow gauge, north school", "")
    devices = {d["id"]: d for d in client.get("/api/v1/devices").json()}
    assert devices["snow-1"]["name_ja"] == "積雪計（市役所駐車場）" and devices["snow-2"]["name_ja"] == ""
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "name_ja" in schema["DeviceSummary"]["properties"] and "name_ja" in schema["FeatureProperties"]["properties"]


def test_the_live_stream_carries_the_japanese_name_and_a_new_one(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    registry, store = Registry(db), SQLiteStore(db)
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", "City hall", lat=36.1, lon=137.2, name_ja="市役所"))

    async def scenario():
        hub = Broadcaster(store, registry, poll_s=0.05)
        subscriber = hub.subscribe()
        try:
            snapshot = (await hub.next_event(subscriber, 10)).plain
            assert json.loads(snapshot.split(b"data: ", 1)[1])["features"][0]["properties"]["name_ja"] == "市役所"
            registry.update_device(DeviceRecord("snow-1", "snow_gauge", "City hall", lat=36.1, lon=137.2,
                                                name_ja="市役所駐車場"))
            changes = (await hub.next_event(subscriber, 10)).plain
            assert changes.startswith(b"event: changes\n")
            renamed = json.loads(changes.split(b"data: ", 1)[1])["features"][0]["properties"]
            assert renamed["name_ja"] == "市役所駐車場"
        finally:
            hub.unsubscribe(subscriber)

    asyncio.run(scenario())


# ---------------------------------------------------------------- the residents' pages


def list_names(html: str) -> list[str]:
    return re.findall(r'class="jisaku-item-name" href="[^"]+">([^<]+)</a>', html)


def test_the_japanese_list_shows_japanese_names_and_the_english_list_english_ones(app):
    assert list_names(TestClient(app, cookies={"lang": "ja"}).get("/list").text) == [
        "積雪計（市役所駐車場）", "Snow gauge, north school"]  # no Japanese name: the English one
    browser_in_japanese = TestClient(app, headers={"Accept-Language": "ja-JP,ja;q=0.9"})
    assert list_names(browser_in_japanese.get("/list").text)[0] == "積雪計（市役所駐車場）"
    assert list_names(TestClient(app, cookies={"lang": "en"}).get("/list").text) == [
        "Snow gauge, city hall car park", "Snow gauge, north school"]


def test_the_device_page_is_titled_with_the_name_in_the_pages_language(app):
    ja = TestClient(app, cookies={"lang": "ja"}).get("/devices/snow-1").text
    assert "<h1>積雪計（市役所駐車場）</h1>" in ja and "<title>積雪計（市役所駐車場） · " in ja
    assert "Snow gauge, city hall car park" not in ja
    en = TestClient(app, cookies={"lang": "en"}).get("/devices/snow-1").text
    assert "<h1>Snow gauge, city hall car park</h1>" in en and "積雪計" not in en


@pytest.fixture
def server(app, tmp_path):
    """The dashboard of ``app`` on a real port, both gauges having reported once."""
    now = time.time()
    SQLiteStore(Database(tmp_path / "jisaku.db")).write(Batch(readings=[
        ("snow-1", Reading(now, 1, {"depth_cm": 12.0})), ("snow-2", Reading(now, 1, {"depth_cm": 30.0}))]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the dashboard starts")
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def marker_label(page, device_id: str) -> str:
    return page.locator(f'.jisaku-marker[data-device-id="{device_id}"]').get_attribute("aria-label")


def test_the_japanese_map_names_markers_and_popups_in_japanese(browser, server, app):  # noqa: F811
    page = offline_phone(browser, locale="ja-JP")
    page.goto(server + "/")
    page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 2", timeout=15000)
    assert marker_label(page, "snow-1").startswith("積雪計（市役所駐車場）, ")
    assert marker_label(page, "snow-2").startswith("Snow gauge, north school, "), "no Japanese name: the English one"
    page.locator('.jisaku-marker[data-device-id="snow-1"]').tap()
    assert page.locator(".jisaku-popup strong").inner_text() == "積雪計（市役所駐車場）"

    # A Japanese name given later reaches the open map without a reload.
    app.state.registry.update_device(DeviceRecord("snow-2", "snow_gauge", name="Snow gauge, north school",
                                                  lat=36.15, lon=137.25, name_ja="積雪計（北小学校）"))
    page.wait_for_function("""() => (document.querySelector('.jisaku-marker[data-device-id="snow-2"]')
        .getAttribute('aria-label') || '').startsWith('積雪計（北小学校）')""", timeout=10000)

    page.goto(server + "/?lang=en")
    page.wait_for_function("window.jisakuMarkers && Object.keys(window.jisakuMarkers).length === 2", timeout=15000)
    assert marker_label(page, "snow-1").startswith("Snow gauge, city hall car park, ")
    assert page.outside == [], f"the map tried to load from outside this machine: {page.outside}"


# ---------------------------------------------------------------- setting the name


def test_the_operator_edit_form_round_trips_the_japanese_name(app, tmp_path):
    from jisaku.gateway.accounts import Accounts

    Accounts(Database(tmp_path / "jisaku.db")).add("admin", "correct horse battery staple", role="admin")
    client = TestClient(app)
    token = page_login(client)
    form = client.get("/operator/devices/snow-2?lang=ja").text
    assert "名前（日本語）" in form and 'name="name_ja" value=""' in form
    saved = client.post("/operator/devices/snow-2", follow_redirects=False, data={
        "csrf_token": csrf_of(form), "kind": "snow_gauge", "name": "Snow gauge, north school",
        "name_ja": " 積雪計（北小学校） ", "public": "1", "lat": "36.15", "lon": "137.25"})
    assert saved.status_code == 303, saved.text
    assert 'name="name_ja" value="積雪計（北小学校）"' in client.get("/operator/devices/snow-2").text
    assert "積雪計（北小学校）" in list_names(client.get("/list?lang=ja").text)

    # The operator API: read it, clear it, and a new device with one.
    headers = {"X-CSRF-Token": token}
    assert client.get("/api/v1/operator/devices/snow-2").json()["name_ja"] == "積雪計（北小学校）"
    cleared = client.patch("/api/v1/operator/devices/snow-2", json={"name_ja": ""}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["name_ja"] == ""
    added = client.post("/api/v1/operator/devices", headers=headers,
                        json={"id": "bus-1", "kind": "bus", "name": "Loop bus 1", "name_ja": "循環バス 1号"})
    assert added.status_code == 201 and added.json()["device"]["name_ja"] == "循環バス 1号"
    assert 'name_ja = "循環バス 1号"' in added.json()["snippets"]["device_toml"]


def test_devices_add_and_flash_take_a_japanese_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    cli.main(["devices", "add", "snow-3", "--kind", "snow_gauge", "--name", "City hall", "--name-ja", "市役所"])
    capsys.readouterr()
    registry = Registry(Database(tmp_path / "data" / "jisaku.db"))
    assert (registry.get("snow-3").name, registry.get("snow-3").name_ja) == ("City hall", "市役所")
    cli.main(["devices", "list"])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("snow-3")]
    assert row.endswith("City hall / 市役所")

    args = cli.parser().parse_args(["flash", "snow_gauge", "--id", "snow-4", "--name-ja", "北小学校"])
    flash.register(registry, flash.make_request(args, "mqtt://192.168.1.10:1883", {"JISAKU_WIFI_SSID": "town"}))
    assert (registry.get("snow-4").name, registry.get("snow-4").name_ja) == ("snow-4", "北小学校")


def test_the_demo_gives_its_devices_their_japanese_names_also_in_an_older_data_folder(tmp_path):
    city = load_city(EXAMPLES / "demo-city" / "city.toml")
    path = old_database(tmp_path / "jisaku.db", ("bus-1", "bus", "Town loop bus 1 (east)"))
    registry = Registry(Database(path))
    register(registry, city, tmp_path / "secrets" / "demo-devices.json")
    assert registry.get("bus-1").name_ja == "市街地循環バス 1号（東まわり）"  # was there, without one
    named = {d.id: d.name_ja for d in registry.devices()}
    assert len(named) == len(city) and all(named.values()), "every demo device has a Japanese name"
    logged = {(e["actor"], e["action"], e["target"]) for e in AuditLog(registry.db).entries(limit=100)}
    assert ("demo", "device.update", "bus-1") in logged and ("demo", "device.add", "snow-1") in logged
