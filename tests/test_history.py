"""Down-sampled history for the device pages: SQLite and a real InfluxDB give the same buckets."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.dashboard.history import BucketCache, window
from jisaku.contract.protocol import Reading
from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore

from .conftest import require
from .influx_server import InfluxServer, influxd_available

NOW = 1_800_000_000.0  # a whole multiple of every bucket length, so the buckets below are exact


def a_day_of_snow_every_second(end: float) -> list[tuple[str, Reading]]:
    """Depth climbs 1 cm an hour; within each 5-minute bucket it wobbles 0..4 cm above that."""
    return [("snow-1", Reading(end - 86400 + i, i, {"depth_cm": (i // 3600) + (i % 5)})) for i in range(86400)]


@pytest.fixture
def sqlite(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", "City hall"))
    registry.add_device(DeviceRecord("bus-1", "bus", "Bus 1", interval_s=5))
    registry.add_device(DeviceRecord("hidden-1", "snow_gauge", "Private", public=False))
    return db, SQLiteStore(db)


def test_a_day_at_one_hertz_comes_back_as_288_buckets_of_min_avg_max(sqlite):
    _, store = sqlite
    store.write(Batch(readings=a_day_of_snow_every_second(NOW)))
    start, end, bucket_s = window("24h", NOW)
    buckets = store.history("snow-1", "depth_cm", start, end, bucket_s)
    assert len(buckets) == 288 and bucket_s == 300
    first, last = buckets[0], buckets[-1]
    assert (first["ts"], first["min"], first["max"], first["n"]) == (NOW - 86400, 0, 4, 300)
    assert first["avg"] == pytest.approx(2.0)
    assert (last["min"], last["max"]) == (23, 27)
    assert [b["ts"] for b in buckets] == sorted(b["ts"] for b in buckets)


def test_text_and_missing_values_are_left_out_and_a_metric_name_cannot_break_the_query(sqlite):
    _, store = sqlite
    store.write(Batch(readings=[("snow-1", Reading(NOW - 10, 1, {"depth_cm": "broken"})),
                                ("snow-1", Reading(NOW - 9, 2, {"other": 1})),
                                ("snow-1", Reading(NOW - 8, 3, {"depth_cm": 7}))]))
    assert [b["n"] for b in store.history("snow-1", "depth_cm", NOW - 300, NOW, 300)] == [1]
    with pytest.raises(ValueError):
        store.history("snow-1", 'depth_cm") OR 1=1 --', NOW - 300, NOW, 300)


def test_a_track_keeps_the_last_position_of_each_bucket(sqlite):
    _, store = sqlite
    drive = [("bus-1", Reading(NOW - 600 + i * 5, i, {"lat": 36.0 + i / 1000, "lon": 137.0, "speed_kmh": 20}))
             for i in range(120)]
    drive.append(("bus-1", Reading(NOW - 1, 999, {"speed_kmh": 0})))  # no position: not a point of the track
    store.write(Batch(readings=drive))
    points = store.track("bus-1", NOW - 600, NOW, 60)
    assert len(points) == 10
    assert points[0] == {"ts": NOW - 600 + 55, "lat": pytest.approx(36.011), "lon": 137.0}
    assert points[-1]["lat"] == pytest.approx(36.119)


def test_the_history_endpoint_answers_for_public_devices_only(sqlite, tmp_path):
    db, store = sqlite
    now = time.time()
    store.write(Batch(readings=[("snow-1", Reading(now - i * 60, i, {"depth_cm": 10.0})) for i in range(7 * 1440)]
                      + [("hidden-1", Reading(now - 5, 1, {"depth_cm": 99.0}))]))
    client = TestClient(create_app(db.path, tiles="osm"))
    week = client.get("/api/v1/devices/snow-1/history", params={"metric": "depth_cm", "range": "7d"})
    assert week.status_code == 200
    body = week.json()
    assert body["bucket_s"] == 1800 and 330 <= len(body["buckets"]) <= 337  # a week in half hours
    assert body["buckets"][-1]["avg"] == 10.0
    # A private device is answered exactly like one that does not exist.
    hidden = client.get("/api/v1/devices/hidden-1/history", params={"metric": "depth_cm"})
    missing = client.get("/api/v1/devices/nobody/history", params={"metric": "depth_cm"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("hidden-1", "X") == missing.json()["detail"].replace("nobody", "X")
    assert client.get("/api/v1/devices/hidden-1/track").status_code == 404
    bad = client.get("/api/v1/devices/snow-1/history", params={"metric": 'a"b', "range": "24h"})
    assert bad.status_code == 422 and "depth_cm" in bad.text
    assert client.get("/api/v1/devices/snow-1/history", params={"metric": "depth_cm", "range": "1y"}).status_code == 422


def test_influxdb_gives_the_same_buckets_as_sqlite(sqlite, tmp_path):
    require(influxd_available(), "InfluxDB", "sudo apt-get install influxdb")
    _, sqlite_store = sqlite
    # An hour at 1 Hz and a short drive: enough to compare, quick to write.
    readings = a_day_of_snow_every_second(NOW)[-3600:]
    drive = [("bus-1", Reading(NOW - 600 + i * 5, i, {"lat": 36.0 + i / 1000, "lon": 137.0})) for i in range(120)]
    sqlite_store.write(Batch(readings=readings + drive))
    with InfluxServer(tmp_path / "influxd") as server:
        influx = InfluxStore(server.url, tmp_path / "spool", timeout_s=5.0, retry_s=0.0)
        try:
            influx.write_readings(readings + drive)
            start, end, bucket_s = NOW - 3600, NOW, 300
            expected = sqlite_store.history("snow-1", "depth_cm", start, end, bucket_s)
            got = influx.history("snow-1", "depth_cm", start, end, bucket_s)
            assert len(got) == len(expected) == 12
            for a, b in zip(got, expected):
                assert (a["ts"], a["min"], a["max"], a["n"]) == (b["ts"], b["min"], b["max"], b["n"])
                assert a["avg"] == pytest.approx(b["avg"])
            track = influx.track("bus-1", NOW - 600, NOW, 60)
            assert [p["lat"] for p in track] == pytest.approx(
                [p["lat"] for p in sqlite_store.track("bus-1", NOW - 600, NOW, 60)])
        finally:
            influx.close()


def test_a_chart_asked_for_again_reads_only_the_newest_buckets_and_still_sees_new_readings(sqlite):
    _, store = sqlite
    store.write(Batch(readings=a_day_of_snow_every_second(NOW)))
    asked: list[tuple[float, float]] = []

    def fetch(a, b):
        asked.append((a, b))
        return store.history("snow-1", "depth_cm", a, b, 300)

    cache = BucketCache(late_s=300)
    start, end, _ = window("24h", NOW)
    first = cache.get(("snow-1", "depth_cm", 300), start, end, 300, fetch)
    store.write(Batch(readings=[("snow-1", Reading(NOW + 30, 999999, {"depth_cm": 80}))]))
    start, end, _ = window("24h", NOW + 60)
    second = cache.get(("snow-1", "depth_cm", 300), start, end, 300, fetch)
    assert asked[1] == (NOW - 300, NOW + 60), "only the last unfinished bucket and the new one are read again"
    assert second[-1]["max"] == 80 and second[-1]["n"] == 1
    assert second[:-1] == first, "the same buckets as a fresh read"
    assert second == store.history("snow-1", "depth_cm", start, end, 300)
