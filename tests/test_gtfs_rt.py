"""GET /gtfs-rt/vehicle-positions.pb, parsed back with gtfs-realtime-bindings: the header,
every bus's position, time and ids, trips from gtfs.toml, no private or silent bus, and
If-Modified-Since. Data goes in through the real store, and once through the whole pipeline."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from google.transit import gtfs_realtime_pb2

from jisaku.dashboard import gtfs_rt
from jisaku.dashboard.app import create_app
from jisaku.device.config import load_device_config
from jisaku.contract.protocol import Reading
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore
from jisaku.contract.settings import Settings

from .town import KINDS, wait_until

FEED = "/gtfs-rt/vehicle-positions.pb"
GTFS_TOML = """
stale_after_s = 600

[vehicles."bus-1"]
route_id = "loop-east"
trip_id = "loop-east-0830"
direction_id = 1
label = "East loop 1"

[vehicles."bus-secret"]
route_id = "depot"
"""


def parse(content: bytes) -> gtfs_realtime_pb2.FeedMessage:
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.ParseFromString(content)
    return feed


def check_header(feed: gtfs_realtime_pb2.FeedMessage) -> None:
    assert feed.header.gtfs_realtime_version == "2.0"
    assert feed.header.incrementality == gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    assert abs(feed.header.timestamp - time.time()) < 60


@pytest.fixture
def town_db(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    for record in (DeviceRecord("bus-1", "bus", name="Loop 1"), DeviceRecord("bus-2", "bus", name="Loop 2"),
                   DeviceRecord("bus-old", "bus", name="Parked since morning"),
                   DeviceRecord("bus-secret", "bus", name="staff shuttle", public=False),
                   DeviceRecord("snow-1", "snow_gauge", lat=36.14, lon=137.25)):
        registry.add_device(record)
    (tmp_path / "gtfs.toml").write_text(GTFS_TOML, encoding="utf-8")
    return tmp_path, SQLiteStore(db)


def write_positions(store: SQLiteStore, now: float) -> None:
    store.write(Batch(readings=[
        ("bus-1", Reading(now - 5.5, 7, {"lat": 36.1461, "lon": 137.2523, "speed_kmh": 36.0, "heading": 92.5})),
        ("bus-2", Reading(now - 2, 3, {"lat": 36.1501, "lon": 137.2601})),
        ("bus-old", Reading(now - 3600, 1, {"lat": 36.1, "lon": 137.2, "speed_kmh": 0.0})),
        ("bus-secret", Reading(now - 1, 5, {"lat": 36.0, "lon": 137.0})),
        ("snow-1", Reading(now - 1, 5, {"depth_cm": 12.5})),
    ]))


def client_for(directory) -> TestClient:
    app = create_app(directory / "jisaku.db")
    app.state.settings = Settings(data=str(directory))
    return TestClient(app)


def test_feed_has_every_public_bus_with_position_time_and_trip(town_db):
    directory, store = town_db
    now = time.time()
    write_positions(store, now)
    with client_for(directory) as client:
        answer = client.get(FEED)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    feed = parse(answer.content)
    check_header(feed)
    entities = {entity.id: entity for entity in feed.entity}
    assert set(entities) == {"bus-1", "bus-2"}, "no private bus, no silent bus, no snow gauge"

    bus = entities["bus-1"].vehicle
    assert bus.vehicle.id == "bus-1" and bus.vehicle.label == "East loop 1"
    assert bus.position.latitude == pytest.approx(36.1461, abs=1e-5)
    assert bus.position.longitude == pytest.approx(137.2523, abs=1e-5)
    assert bus.position.speed == pytest.approx(10.0, abs=1e-3), "36 km/h is 10 m/s"
    assert bus.position.bearing == pytest.approx(92.5)
    assert bus.timestamp == int(now - 5.5)
    assert (bus.trip.route_id, bus.trip.trip_id, bus.trip.direction_id) == ("loop-east", "loop-east-0830", 1)

    other = entities["bus-2"].vehicle
    assert other.vehicle.id == "bus-2" and other.vehicle.label == "Loop 2"
    assert not other.HasField("trip"), "a bus without a mapping has no trip"
    assert not other.position.HasField("speed")
    assert other.timestamp == int(now - 2)


def test_if_modified_since_answers_304_until_a_bus_moves(town_db):
    directory, store = town_db
    write_positions(store, time.time())
    with client_for(directory) as client:
        fresh = client.get(FEED)
        assert "last-modified" not in fresh.headers, "no whole-second date while the second is still open"
        time.sleep(gtfs_rt.SETTLE_S + 0.1)
        full = client.get(FEED)
        stamp = full.headers["last-modified"]
        again = client.get(FEED, headers={"If-Modified-Since": stamp})
        assert again.status_code == 304 and again.content == b""
        assert client.get(FEED, headers={"If-Modified-Since": "not a date"}).status_code == 200

        store.write(Batch(readings=[("bus-2", Reading(time.time(), 4, {"lat": 36.2, "lon": 137.3}))]))
        time.sleep(gtfs_rt.SETTLE_S + 0.1)
        moved = client.get(FEED, headers={"If-Modified-Since": stamp})
        assert moved.status_code == 200
        assert {e.id: e.vehicle.position.latitude for e in parse(moved.content).entity}["bus-2"] == \
            pytest.approx(36.2)
        # a private bus moving is not a change of the public feed
        later = moved.headers["last-modified"]
        store.write(Batch(readings=[("bus-secret", Reading(time.time(), 6, {"lat": 36.3, "lon": 137.3}))]))
        time.sleep(gtfs_rt.SETTLE_S + 0.1)
        assert client.get(FEED, headers={"If-Modified-Since": later}).status_code == 304


def test_a_mistake_in_gtfs_toml_is_a_503_that_names_no_device(town_db, caplog):
    directory, store = town_db
    write_positions(store, time.time())
    (directory / "gtfs.toml").write_text('[vehicles."bus-secret"]\nroute = "depot"\n', encoding="utf-8")
    with client_for(directory) as client:
        answer = client.get(FEED)
        assert answer.status_code == 503
        assert "gtfs.toml" in answer.text and "bus-secret" not in answer.text
        assert 'bus-secret"] has unknown keys route' in caplog.text, "the operator's log says what to fix"
        (directory / "gtfs.toml").write_text(GTFS_TOML.replace("loop-east-0830", "loop-east-0900"), encoding="utf-8")
        fixed = parse(client.get(FEED).content)
    assert {e.id: e.vehicle.trip.trip_id for e in fixed.entity}["bus-1"] == "loop-east-0900", \
        "an edited gtfs.toml is read again without a restart"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_simulated_bus_reaches_the_feed_through_the_whole_pipeline(make_town, tmp_path):
    bus = load_device_config(KINDS / "vehicle_tracker", {"device": {"interval_s": 1}, "gps": {"every_s": 1}})
    hidden = load_device_config(KINDS / "vehicle_tracker", {
        "device": {"id": "bus-9", "public": False, "interval_s": 1}, "gps": {"every_s": 1}})
    town = make_town([bus, hidden])
    (town.directory / "gtfs.toml").write_text(GTFS_TOML, encoding="utf-8")
    town.run_devices()
    with client_for(town.directory) as client:
        def bus_in_feed():
            feed = parse(client.get(FEED).content)
            return any(e.id == "bus-1" for e in feed.entity) and feed
        wait_until(bus_in_feed, 20, "bus-1 is in the feed")
        wait_until(lambda: town.store.reading_count("bus-9") >= 1, 20, "the private bus's reading is stored")
        town.stop_devices.set()  # hold still, to compare the feed with the stored state
        time.sleep(1.5)
        feed = parse(client.get(FEED).content)
    check_header(feed)
    entities = {e.id: e.vehicle for e in feed.entity}
    assert set(entities) == {"bus-1"}, "the private bus-9 stays out"
    vehicle = entities["bus-1"]
    assert vehicle.vehicle.id == "bus-1" and vehicle.trip.trip_id == "loop-east-0830"
    stored = {d["id"]: d for d in town.store.latest(public_only=False)}["bus-1"]
    assert vehicle.position.latitude == pytest.approx(stored["values"]["lat"], abs=1e-5)
    assert vehicle.position.longitude == pytest.approx(stored["values"]["lon"], abs=1e-5)
    assert vehicle.timestamp == int(stored["ts"])
