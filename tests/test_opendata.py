"""Open-data exports: /api/v1/export.csv and export.geojson on readings written through the
real store (SQLite, and a real influxd), with the licence, the time range rules, and private
devices answered exactly like devices that do not exist."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.contract.protocol import Reading
from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore
from jisaku.contract.settings import Settings

from .conftest import require
from .influx_server import InfluxServer, influxd_available

T0 = datetime(2024, 11, 22, 0, 0, tzinfo=timezone.utc).timestamp()  # 09:00 in Japan
RANGE = "start=2024-11-22T09:00:00%2B09:00&end=2024-11-22T10:00:00%2B09:00"


def fill(db_path, readings_store=None):
    """Two buses, a snow gauge on a pole, and a private printer tray, through the real store."""
    db = Database(db_path)
    registry, store = Registry(db), SQLiteStore(db, keep_readings=readings_store is None)
    registry.add_device(DeviceRecord("bus-1", "bus", name="Loop 1"))
    registry.add_device(DeviceRecord("bus-2", "bus", name="Loop 2"))
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", name="Town hall", lat=36.14, lon=137.25))
    registry.add_device(DeviceRecord("tray-1", "printer_tray", name="office printer", public=False))
    batch = Batch()
    for minute in range(10):
        ts = T0 + minute * 60 + 0.25
        batch.readings.append(("bus-1", Reading(ts, minute, {"lat": 36.1 + minute / 1000, "lon": 137.2,
                                                             "speed_kmh": 20.0})))
        batch.readings.append(("bus-2", Reading(ts, minute, {"lat": 36.2, "lon": 137.3})))
        batch.readings.append(("snow-1", Reading(ts, minute, {"depth_cm": 10.0 + minute})))
        batch.readings.append(("tray-1", Reading(ts, minute, {"paper": minute % 2 == 0})))
    batch.readings.append(("bus-1", Reading(T0 + 3600, 99, {"lat": 1.0, "lon": 1.0})))  # exactly at the end
    batch.readings.append(("bus-1", Reading(T0 - 1, 98, {"lat": 2.0, "lon": 2.0})))  # just before the start
    store.write(batch)
    if readings_store is not None:
        readings_store.write_readings(batch.readings)
    return store


@pytest.fixture
def client(tmp_path):
    fill(tmp_path / "jisaku.db")
    app = create_app(tmp_path / "jisaku.db")
    app.state.settings = Settings(data=str(tmp_path), town="Takayama City / 高山市")
    with TestClient(app) as client:
        yield client


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_export_has_one_row_per_metric_in_the_range_with_the_licence(client):
    answer = client.get(f"/api/v1/export.csv?kind=bus&device=snow-1&{RANGE}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert '<https://creativecommons.org/licenses/by/4.0/>; rel="license"' in answer.headers["link"]
    assert answer.text.splitlines()[0] == "device_id,kind,ts,metric,value"
    rows = csv_rows(answer.text)
    # bus-1: 10 readings x 3 metrics, bus-2: 10 x 2, snow-1: 10 x 1; the end is exclusive, the start inclusive
    assert len(rows) == 30 + 20 + 10
    first = rows[0]
    assert first == {"device_id": "bus-1", "kind": "bus", "ts": "2024-11-22T00:00:00.250Z", "metric": "lat",
                     "value": "36.1"}
    assert [r["value"] for r in rows if r["device_id"] == "snow-1"] == [str(10.0 + m) for m in range(10)]
    assert {r["value"] for r in rows if r["metric"] == "lat"} >= {"36.1", "36.2"}
    assert "1.0" not in {r["value"] for r in rows if r["metric"] == "lat"}, "the reading at end is left out"

    terms = client.get("/api/v1/open-data.json").json()
    assert terms["licence"]["id"] == "CC-BY-4.0"
    assert terms["licence"]["attribution"] == "Takayama City / 高山市"
    assert set(terms["csv_columns"]) == {"device_id", "kind", "ts", "metric", "value"}


def test_geojson_export_has_a_feature_per_reading_and_states_the_licence(client):
    answer = client.get(f"/api/v1/export.geojson?device=bus-1&device=snow-1&start={T0:.0f}&end={T0 + 3600:.0f}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/geo+json"
    collection = json.loads(answer.text)
    assert collection["type"] == "FeatureCollection"
    assert collection["license"]["url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert collection["license"]["attribution"] == "Takayama City / 高山市"
    assert collection["start"] == "2024-11-22T00:00:00.000Z"
    features = collection["features"]
    assert [f["properties"]["device_id"] for f in features] == ["bus-1"] * 10 + ["snow-1"] * 10
    bus = features[3]
    assert bus["geometry"] == {"type": "Point", "coordinates": [137.2, 36.103]}
    assert bus["properties"]["ts"] == "2024-11-22T00:03:00.250Z" and bus["properties"]["seq"] == 3
    snow = features[-1]
    assert snow["geometry"]["coordinates"] == [137.25, 36.14], "a fixed gauge is placed where it is mounted"
    assert snow["properties"]["values"] == {"depth_cm": 19.0}


def test_a_private_device_is_answered_like_one_that_does_not_exist(client):
    for path in ("/api/v1/export.csv", "/api/v1/export.geojson"):
        private = client.get(f"{path}?device=tray-1&{RANGE}")
        missing = client.get(f"{path}?device=no-such&{RANGE}")
        assert private.status_code == missing.status_code == 404
        assert private.json()["detail"] == "no public device 'tray-1'"
        assert missing.json()["detail"] == "no public device 'no-such'"
        by_kind = client.get(f"{path}?kind=printer_tray&{RANGE}")
        nothing = client.get(f"{path}?kind=no_such_kind&{RANGE}")
        assert by_kind.status_code == nothing.status_code == 200
        assert by_kind.text.replace("printer_tray", "no_such_kind") == nothing.text
        everything = client.get(f"{path}?{RANGE}")
        assert "tray-1" not in everything.text and "paper" not in everything.text
        assert "bus-1" in everything.text and "snow-1" in everything.text


@pytest.mark.parametrize("query, says", [
    ("start=2024-11-22T09:00:00", "has no time zone: add Z for UTC or +09:00 for Japan time"),
    ("start=yesterday", "give ISO 8601 such as"),
    ("start=2024-10-01T00:00:00Z&end=2024-11-22T00:00:00Z", "at most 31 days per export"),
    ("start=2024-11-22T00:00:00Z&end=2024-11-21T00:00:00Z", "start must be before end"),
])
def test_bad_ranges_get_a_400_that_says_what_to_do(client, query, says):
    answer = client.get(f"/api/v1/export.csv?{query}")
    assert answer.status_code == 400
    assert says in answer.json()["detail"]


def test_default_range_is_the_last_24_hours(client):
    rows = csv_rows(client.get("/api/v1/export.csv").text)
    assert rows == [], "the test readings are from 2024, long before the last 24 hours"


def test_a_big_export_is_read_page_by_page_without_losing_or_repeating(tmp_path):
    db = Database(tmp_path / "big.db")
    Registry(db).add_device(DeviceRecord("snow-9", "snow_gauge"))
    store = SQLiteStore(db)
    # 2,500 readings, many sharing a timestamp, so pages break inside equal timestamps.
    store.write(Batch(readings=[("snow-9", Reading(T0 + seq // 7, seq, {"depth_cm": float(seq)}))
                                for seq in range(2500)]))
    paged = list(store.readings_in_range("snow-9", T0, T0 + 10_000, page=100))
    assert [r["seq"] for r in paged] == list(range(2500))
    app = create_app(tmp_path / "big.db")
    app.state.settings = Settings(data=str(tmp_path))
    with TestClient(app) as client:
        rows = csv_rows(client.get(f"/api/v1/export.csv?start={T0:.0f}&end={T0 + 10_000:.0f}").text)
    assert [float(r["value"]) for r in rows] == [float(seq) for seq in range(2500)]


def test_exports_read_from_influxdb_too(tmp_path):
    require(influxd_available(), "InfluxDB", "sudo apt-get install influxdb")
    with InfluxServer(tmp_path / "influxd") as server:
        influx = InfluxStore(server.url, tmp_path / "spool", timeout_s=5.0, retry_s=0.0)
        fill(tmp_path / "jisaku.db", readings_store=influx)
        assert [r["seq"] for r in influx.readings_in_range("bus-1", T0, T0 + 3600, page=3)] == list(range(10))
        app = create_app(tmp_path / "jisaku.db", readings=influx)
        app.state.settings = Settings(data=str(tmp_path), town="Takayama")
        with TestClient(app) as client:
            rows = csv_rows(client.get(f"/api/v1/export.csv?device=snow-1&{RANGE}").text)
            assert [float(r["value"]) for r in rows] == [10.0 + m for m in range(10)]
            assert rows[0]["ts"] == "2024-11-22T00:00:00.250Z"
            everything = client.get(f"/api/v1/export.geojson?{RANGE}").text
            assert "tray-1" not in everything and len(json.loads(everything)["features"]) == 30
        influx.close()
