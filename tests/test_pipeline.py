"""The whole pipeline, on the embedded broker and on a real Mosquitto:
simulated devices -> broker -> gateway -> SQLite -> dashboard API."""

from __future__ import annotations

import json
import threading
from collections import Counter
import time
import urllib.error

import paho.mqtt.client as mqtt
import pytest

from jisaku.cli.demo_town import load_city
from jisaku.contract import protocol
from jisaku.device.config import load_device_config
from jisaku.device.link import DeviceLink

from .town import EXAMPLES, KINDS, wait_until
from .vector_cases import load_cases, payload_bytes

VEHICLES = {"bus", "garbage_truck", "float"}


def test_demo_town_appears_on_the_map_and_vehicles_move(make_town):
    devices = load_city(EXAMPLES / "demo-city" / "city.toml")
    kinds = [d.kind for d in devices]
    assert (kinds.count("bus"), kinds.count("garbage_truck"), kinds.count("float"),
            kinds.count("snow_gauge"), kinds.count("printer_tray"), kinds.count("snow_camera"),
            kinds.count("counter"), kinds.count("shelter")) >= (3, 2, 1, 4, 1, 2, 1, 3)
    town = make_town(devices)
    town.start_dashboard()
    town.run_devices()
    # the demo's practice device reports too, but never to the residents' map
    shown = [d for d in devices if not town.registry.get(d.id).practice]

    def all_reported():
        features = town.features()
        return len(features) == len(shown) and all(
            f["geometry"] and f["properties"]["values"] for f in features.values()) and features
    first = wait_until(all_reported, 30, "every demo device reports to latest.geojson")

    def vehicles_moved():
        now = town.features()
        return all(now[i]["geometry"]["coordinates"] != first[i]["geometry"]["coordinates"]
                   for i, f in first.items() if f["properties"]["kind"] in VEHICLES)
    wait_until(vehicles_moved, 20, "every vehicle's position changes")

    cameras = {d.id for d in devices if d.kind == "snow_camera"}
    wait_until(lambda: {i for i, f in town.features().items() if f["properties"].get("picture")} == cameras, 30,
               "each of the demo's cameras has its picture on the map")

    counter = first["counter-1"]["properties"]["values"]
    assert counter["windows"] == 2 and {"waiting", "estimate_min", "window_1", "window_2"} <= set(counter)
    shelters = {i: f["properties"]["shelter"] for i, f in first.items() if f["properties"]["kind"] == "shelter"}
    assert shelters["shelter-3"]["level"] == "closed" and shelters["shelter-1"]["capacity"] == 40

    snow = {i: f for i, f in first.items() if f["properties"]["kind"] == "snow_gauge"}
    assert all(0 <= f["properties"]["values"]["depth_cm"] <= 100 for f in snow.values())
    listed = {d["id"]: d for d in town.get_json("/api/v1/devices")}
    assert set(listed) == {d.id for d in shown}
    assert all(d["status"] == "online" for d in listed.values())
    readings = town.get_json("/api/v1/devices/bus-1/readings")
    assert readings and all({"lat", "lon", "speed_kmh", "heading"} <= set(r["v"]) for r in readings)
    assert [r["ts"] for r in readings] == sorted(r["ts"] for r in readings)


def test_snow_gauge_reading_arrives_with_the_simulated_depth(make_town):
    gauge = load_device_config(KINDS / "snow_gauge", {
        "device": {"interval_s": 0.5}, "simulate": {"curve": [[0, 37], [24, 37]]}})
    town = make_town([gauge])
    town.run_devices()
    wait_until(lambda: town.store.reading_count("snow-1") >= 3, 20, "three snow readings are stored")
    depths = [r["v"]["depth_cm"] for r in town.store.readings("snow-1")]
    assert all(abs(depth - 37) <= 1 for depth in depths), depths


def test_printer_tray_events_arrive(make_town):
    tray = load_device_config(KINDS / "printer_tray", {
        "tray": {"left_after_s": 1.0, "report_every_s": 60},
        "simulate": {"paper": [{"at_s": 0.5, "stays_s": 2.5}], "cycle_s": 600}})
    town = make_town([tray])
    town.run_devices()
    wait_until(lambda: len(town.store.events("tray-1")) >= 2, 20, "tray_left and tray_cleared are stored")
    cleared, left = town.store.events("tray-1")  # newest first
    assert (left["event"], cleared["event"]) == ("tray_left", "tray_cleared")
    assert 1.0 <= left["v"]["waited_s"] < 2.5
    assert 2.0 <= cleared["v"]["lay_s"] <= 3.5


def _publisher(town, username, secret) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{username}",
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(username, secret)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    host, port = town.broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    assert connected.wait(10), "the test client connects"
    return client


def test_10000_malformed_messages_are_quarantined_with_their_reasons_and_valid_ones_kept(make_town, broker_kind):
    # The embedded broker (amqtt) moves a few hundred messages a second: a fifth of the load there.
    MALFORMED = 10_000 if broker_kind == "mosquitto" else 2_000
    VALID = MALFORMED // 5
    gauge = load_device_config(KINDS / "snow_gauge")
    town = make_town([gauge])
    client = _publisher(town, "_tester", town.tester_secret)
    # Replayed now, a vector's timestamp is judged against today's clock: leave out the
    # one case whose badness depends on its received_at.
    bad_cases = [c for c in load_cases() if c["expect"].get("error") not in (None, "ts_in_future")]
    sent_reasons: Counter[str] = Counter()
    now = time.time()
    try:
        for i in range(MALFORMED):
            if i % (MALFORMED // VALID) == 0:
                seq = i // (MALFORMED // VALID)
                client.publish("jisaku/snow-1/data",
                               protocol.encode_reading(seq, {"depth_cm": seq}, ts=now - VALID + seq), qos=1)
            case = bad_cases[i % len(bad_cases)]
            client.publish(case["topic"].replace("bus-1", "snow-1").replace("tray-1", "snow-1"),
                           payload_bytes(case), qos=1)
            sent_reasons[case["expect"]["error"]] += 1
        info = client.publish("jisaku/nobody/data", protocol.encode_reading(1, {"x": 1}, ts=now), qos=1)
        sent_reasons["unknown_device"] += 1
        info.wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: sum(town.store.quarantine_counts().values()) >= MALFORMED + 1, 60,
               f"{MALFORMED + 1} messages are quarantined")
    wait_until(lambda: town.store.reading_count("snow-1") >= VALID, 30, f"{VALID} readings are stored")
    assert sorted(r["v"]["depth_cm"] for r in town.store.readings("snow-1", limit=VALID + 1)) == list(range(VALID))
    assert town.store.quarantine_counts() == dict(sent_reasons)
    assert {"not_json", "non_finite", "too_large", "bad_seq", "bad_topic", "unknown_channel"} <= set(sent_reasons)
    assert town.gateway.connected.is_set(), "the gateway is still up"


def test_a_rebooted_device_starting_its_seq_again_keeps_its_new_readings(make_town):
    gauge = load_device_config(KINDS / "snow_gauge")
    town = make_town([gauge])
    client = _publisher(town, "_tester", town.tester_secret)
    now = time.time()
    try:
        for seq in range(10):  # before the reboot
            client.publish("jisaku/snow-1/data", protocol.encode_reading(seq, {"depth_cm": 1}, ts=now - 100 + seq), qos=1)
        for seq in range(10):  # after it: seq from 0 again, later times
            client.publish("jisaku/snow-1/data", protocol.encode_reading(seq, {"depth_cm": 2}, ts=now - 50 + seq), qos=1)
        for seq in range(5):  # a clockless board after its reboot: seq from 0, age instead of ts
            client.publish("jisaku/snow-1/data", json.dumps({"seq": seq, "age": 5 - seq, "v": {"depth_cm": 3}}), qos=1)
        # and a redelivered copy of one from before the reboot, which must not count twice
        client.publish("jisaku/snow-1/data", protocol.encode_reading(3, {"depth_cm": 1}, ts=now - 97), qos=1
                       ).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: town.store.reading_count("snow-1") >= 25, 20, "25 readings are stored")
    time.sleep(0.5)
    depths = Counter(r["v"]["depth_cm"] for r in town.store.readings("snow-1", limit=100))
    assert depths == {1: 10, 2: 10, 3: 5}


def test_private_devices_stay_off_public_endpoints(make_town):
    tray = load_device_config(KINDS / "printer_tray", {"device": {"public": False}})
    town = make_town([tray])
    town.start_dashboard()
    town.run_devices()
    wait_until(lambda: town.store.reading_count("tray-1") >= 1, 15, "the private tray's reading is stored")
    assert "tray-1" not in town.features()
    assert "tray-1" not in {d["id"] for d in town.get_json("/api/v1/devices")}
    for device_id in ("tray-1", "no-such-device"):
        with pytest.raises(urllib.error.HTTPError) as answer:
            town.get_json(f"/api/v1/devices/{device_id}/readings")
        assert answer.value.code == 404
        assert json.load(answer.value) == {"detail": f"no public device {device_id!r}"}


def test_a_device_that_stops_is_shown_offline(make_town):
    gauge = load_device_config(KINDS / "snow_gauge")
    town = make_town([gauge])
    town.start_dashboard()
    link = town.link("snow-1")
    link.start()
    wait_until(lambda: town.features()["snow-1"]["properties"]["status"] == "online", 10, "snow-1 shows online")
    link.stop()
    wait_until(lambda: town.features()["snow-1"]["properties"]["status"] == "offline", 10, "snow-1 shows offline")


def test_a_wrong_secret_is_refused(make_town):
    gauge = load_device_config(KINDS / "snow_gauge")
    town = make_town([gauge])
    link = DeviceLink("snow-1", "not-the-secret", town.broker_url, town.directory / "wrong")
    link.start()
    try:
        assert not link.connected.wait(2)
    finally:
        link.stop()
