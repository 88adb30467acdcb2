"""Old data stays reachable after the retention policy folds it into hourly figures:
the residents' charts and the open-data export read the hourly figures where raw readings are gone."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.dashboard.history import window
from jisaku.contract.protocol import Reading
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.retention import RetentionPolicy
from jisaku.gateway.store import Batch, SQLiteStore
from jisaku.gateway.influx import InfluxStore
from jisaku.contract.settings import Settings

from .conftest import require
from .influx_server import InfluxServer, influxd_available
from .test_opendata import RANGE, fill

DAY = 86400
T0 = datetime(2024, 1, 10, 0, 0, tzinfo=timezone.utc).timestamp()  # a winter morning, on a whole hour


def depth(ts: float) -> float:
    """Snow that deepens 1 cm a day and wobbles 0..5 cm within each hour."""
    return float((ts - T0) // DAY) + (ts % 3600) // 600


def store_with_devices(path):
    db = Database(path)
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", "Town hall", lat=36.14, lon=137.25))
    registry.add_device(DeviceRecord("bus-1", "bus", "Loop 1"))
    registry.add_device(DeviceRecord("hidden-1", "snow_gauge", "Private", public=False))
    return db, SQLiteStore(db)


def expected_buckets(readings: list[tuple[float, float]], start: float, bucket_s: int) -> dict[float, tuple]:
    """min, mean, max and count per bucket, worked out from the raw readings in plain Python."""
    grouped: dict[float, list[float]] = {}
    for ts, value in readings:
        if ts >= start:
            grouped.setdefault(start + (ts - start) // bucket_s * bucket_s, []).append(value)
    return {ts: (min(v), sum(v) / len(v), max(v), len(v)) for ts, v in grouped.items()}


def test_a_winter_chart_shows_the_folded_months_as_before_the_fold(tmp_path):
    db, store = store_with_devices(tmp_path / "jisaku.db")
    now = time.time()
    # A reading every 10 minutes for 119 days, the newest an hour ago; the private gauge too.
    stamps = [now - 3600 - k * 600 for k in range(119 * 144)]
    readings = [(ts, depth(ts)) for ts in stamps]
    store.write(Batch(readings=[("snow-1", Reading(ts, k, {"depth_cm": v, "ok": True}))
                                for k, (ts, v) in enumerate(readings)]
                      + [("hidden-1", Reading(stamps[-1], 1, {"depth_cm": 5.0}))]))
    app = create_app(db.path, tiles="osm")
    client = TestClient(app)

    def season() -> dict:
        answer = client.get("/api/v1/devices/snow-1/history", params={"metric": "depth_cm", "range": "120d"})
        assert answer.status_code == 200
        return answer.json()

    before = season()  # also fills the chart cache with finished buckets
    folded, deleted = RetentionPolicy(keep_raw_days=90).apply(db, now=now)
    assert deleted > 28 * 144 and folded > 28 * 24, "about 29 days were folded"
    assert min(r["ts"] for r in store.readings("snow-1", since=0, limit=10**6)) > now - 90 * DAY - 3600

    after_cached = season()  # the same app: the cache answers the finished buckets
    fresh = TestClient(create_app(db.path, tiles="osm"))  # a new app: everything read from the store
    after = fresh.get("/api/v1/devices/snow-1/history", params={"metric": "depth_cm", "range": "120d"}).json()

    assert after["bucket_s"] == 12 * 3600
    start = after["start"]
    expected = expected_buckets(readings, start, after["bucket_s"])
    old = [b for b in after["buckets"] if b["ts"] + after["bucket_s"] <= now - 90 * DAY - 3600]
    assert len(old) >= 50, "the weeks before keep_raw_days are on the chart"
    for bucket in after["buckets"]:
        lo, mean, hi, n = expected[bucket["ts"]]
        assert (bucket["min"], bucket["max"], bucket["n"]) == (lo, hi, n)
        assert bucket["avg"] == pytest.approx(mean)
    assert len(after["buckets"]) == len(expected)
    # Folding changed nothing a resident sees, whether the cache answered or the store did.
    for other in (before, after_cached):
        assert other["start"] == start or abs(other["start"] - start) == after["bucket_s"]  # a 12 h edge passed
        same = {b["ts"]: b for b in other["buckets"]}
        for bucket in after["buckets"]:
            if bucket["ts"] in same:
                assert same[bucket["ts"]]["n"] == bucket["n"]
                assert same[bucket["ts"]]["avg"] == pytest.approx(bucket["avg"])

    month = fresh.get("/api/v1/devices/snow-1/history", params={"metric": "depth_cm", "range": "30d"}).json()
    assert month["bucket_s"] == 3 * 3600 and 230 <= len(month["buckets"]) <= 241
    hidden = fresh.get("/api/v1/devices/hidden-1/history", params={"metric": "depth_cm", "range": "120d"})
    assert hidden.status_code == 404 and hidden.json()["detail"] == "no public device 'hidden-1'"


def test_buckets_shorter_than_an_hour_count_each_folded_hour_once(tmp_path):
    db, store = store_with_devices(tmp_path / "jisaku.db")
    now = T0 + 3 * DAY
    stamps = [T0 + 2 * DAY + k * 60 for k in range(24 * 60)]  # the last day at one a minute
    store.write(Batch(readings=[("snow-1", Reading(ts, k, {"depth_cm": depth(ts)})) for k, ts in enumerate(stamps)]))
    RetentionPolicy(keep_raw_days=0.5).apply(db, now=now)
    assert store.reading_count("snow-1") == 12 * 60, "the older half of the day is folded"
    start, end, bucket_s = window("7d", now)
    buckets = store.history("snow-1", "depth_cm", start, end, bucket_s)
    # 30-minute buckets: a folded hour lands whole in the bucket where it starts; raw ones split.
    folded, raw = buckets[:12], buckets[12:]
    assert [b["ts"] for b in folded] == [T0 + 2 * DAY + h * 3600 for h in range(12)]
    assert [b["n"] for b in folded] == [60] * 12 and [b["n"] for b in raw] == [30] * 24
    assert (folded[0]["min"], folded[0]["max"], folded[0]["avg"]) == (2.0, 7.0, pytest.approx(4.5))
    assert (raw[1]["min"], raw[1]["max"], raw[1]["avg"]) == (5.0, 7.0, pytest.approx(6.0))


@pytest.fixture
def folded_client(tmp_path):
    """Two hours of snow and a bus drive in January, folded 100 days later; a day of raw snow since."""
    db, store = store_with_devices(tmp_path / "jisaku.db")
    now = T0 + 100 * DAY
    batch = Batch()
    for k in range(12):  # every 10 minutes for two hours
        ts = T0 + k * 600
        batch.readings.append(("snow-1", Reading(ts, k, {"depth_cm": depth(ts), "note": "ok"})))
        batch.readings.append(("bus-1", Reading(ts, k, {"lat": 36.1 + k / 100, "lon": 137.2, "speed_kmh": 10.0 * k})))
        batch.readings.append(("hidden-1", Reading(ts, k, {"depth_cm": 1.0})))
    batch.readings.append(("snow-1", Reading(now - 1800, 99, {"depth_cm": 42.0})))  # recent: stays raw
    store.write(batch)
    RetentionPolicy(keep_raw_days=90).apply(db, now=now)
    assert store.reading_count("snow-1") == 1
    app = create_app(db.path, tiles="osm")
    app.state.settings = Settings(data=str(tmp_path), town="Takayama City / 高山市")
    with TestClient(app) as client:
        yield client, now


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_an_old_range_is_exported_as_hourly_figures_with_the_documented_columns(folded_client):
    client, now = folded_client
    old = {"start": f"{T0:.0f}", "end": f"{T0 + 2 * 3600:.0f}"}
    raw = client.get("/api/v1/export.csv", params=old)
    assert raw.status_code == 200 and raw.text.splitlines() == ["device_id,kind,ts,metric,value"], \
        "the raw readings are gone; the raw export keeps its columns"

    answer = client.get("/api/v1/export-hourly.csv", params=old)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert 'rel="license"' in answer.headers["link"]
    header = answer.text.splitlines()[0]
    assert header == "device_id,kind,hour,metric,n,min,max,mean"
    rows = csv_rows(answer.text)
    snow = [r for r in rows if r["device_id"] == "snow-1"]
    # Each hour: 6 readings wobbling 0..5 cm; text ("note") is not summed up.
    assert snow == [
        {"device_id": "snow-1", "kind": "snow_gauge", "hour": "2024-01-10T00:00:00.000Z", "metric": "depth_cm",
         "n": "6", "min": "0.0", "max": "5.0", "mean": "2.5"},
        {"device_id": "snow-1", "kind": "snow_gauge", "hour": "2024-01-10T01:00:00.000Z", "metric": "depth_cm",
         "n": "6", "min": "0.0", "max": "5.0", "mean": "2.5"},
    ]
    bus = [(r["hour"][11:16], r["metric"], int(r["n"]), float(r["min"]), float(r["max"]))
           for r in rows if r["device_id"] == "bus-1"]
    assert bus == [("00:00", "lat", 6, 36.1, pytest.approx(36.15)), ("00:00", "lon", 6, 137.2, 137.2),
                   ("00:00", "speed_kmh", 6, 0.0, 50.0),
                   ("01:00", "lat", 6, pytest.approx(36.16), pytest.approx(36.21)), ("01:00", "lon", 6, 137.2, 137.2),
                   ("01:00", "speed_kmh", 6, 60.0, 110.0)]
    assert "hidden-1" not in answer.text

    terms = client.get("/api/v1/open-data.json").json()
    assert list(terms["hourly_csv_columns"]) == header.split(",")
    assert terms["keep_raw_days"] == 90 and terms["max_hourly_range_days"] == 366
    assert set(terms["csv_columns"]) == {"device_id", "kind", "ts", "metric", "value"}


def test_one_hourly_export_spans_folded_and_raw_readings(folded_client):
    client, now = folded_client
    rows = csv_rows(client.get("/api/v1/export-hourly.csv",
                               params={"device": "snow-1", "start": f"{T0:.0f}", "end": f"{now:.0f}"}).text)
    assert [(r["hour"], r["n"], r["mean"]) for r in rows] == [
        ("2024-01-10T00:00:00.000Z", "6", "2.5"), ("2024-01-10T01:00:00.000Z", "6", "2.5"),
        ("2024-04-18T23:00:00.000Z", "1", "42.0")]  # the raw reading half an hour before `now`


def test_hourly_export_keeps_private_devices_hidden_and_says_what_is_wrong(folded_client):
    client, _ = folded_client
    old = f"start={T0:.0f}&end={T0 + 7200:.0f}"
    private = client.get(f"/api/v1/export-hourly.csv?device=hidden-1&{old}")
    missing = client.get(f"/api/v1/export-hourly.csv?device=nobody&{old}")
    assert private.status_code == missing.status_code == 404
    assert private.json()["detail"] == "no public device 'hidden-1'"
    by_kind = client.get(f"/api/v1/export-hourly.csv?kind=snow_gauge&{old}").text
    assert "hidden-1" not in by_kind and "snow-1" in by_kind
    too_long = client.get("/api/v1/export-hourly.csv", params={"start": "2023-01-01T00:00:00Z",
                                                               "end": "2024-02-01T00:00:00Z"})
    assert too_long.status_code == 400 and "at most 366 days" in too_long.json()["detail"]


def test_hourly_export_reads_from_influxdb_too(tmp_path):
    """With InfluxDB (its own retention) the hourly figures are InfluxDB's own hour buckets."""
    require(influxd_available(), "InfluxDB", "sudo apt-get install influxdb")
    with InfluxServer(tmp_path / "influxd") as server:
        influx = InfluxStore(server.url, tmp_path / "spool", timeout_s=5.0, retry_s=0.0)
        try:
            fill(tmp_path / "jisaku.db", readings_store=influx)  # ten minutes of snow from 2024-11-22 00:00Z
            app = create_app(tmp_path / "jisaku.db", readings=influx, tiles="osm")
            app.state.settings = Settings(data=str(tmp_path))
            with TestClient(app) as client:
                rows = csv_rows(client.get(f"/api/v1/export-hourly.csv?device=snow-1&{RANGE}").text)
                assert [(r["device_id"], r["hour"], r["metric"], int(r["n"]), float(r["min"]), float(r["max"]),
                         float(r["mean"])) for r in rows] == [
                    ("snow-1", "2024-11-22T00:00:00.000Z", "depth_cm", 10, 10.0, 19.0, 14.5)]
                assert "tray-1" not in client.get(f"/api/v1/export-hourly.csv?{RANGE}").text
                assert client.get("/api/v1/open-data.json").json()["keep_raw_days"] is None
        finally:
            influx.close()
