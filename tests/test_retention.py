"""Old readings are folded into hourly figures; silent devices turn stale; the gateway keeps a history."""

from __future__ import annotations

import time

from jisaku.contract.protocol import Reading, Status
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.retention import RetentionPolicy
from jisaku.gateway.store import STALE_AFTER_INTERVALS, Batch, ConfigAck, SQLiteStore, stale_after

DAY = 86400


def _store(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", interval_s=60))
    registry.add_device(DeviceRecord("bus-1", "bus", interval_s=5))
    return SQLiteStore(db)


def test_readings_older_than_the_policy_become_hourly_figures(tmp_path):
    store = _store(tmp_path)
    now = 200 * DAY + 1800.0  # half past an hour
    old_hour = now - 100 * DAY - 1800  # an hour's start, 100 days ago
    readings = [("snow-1", Reading(old_hour + 60 * i, i, {"depth_cm": float(i), "ok": True})) for i in range(60)]
    readings.append(("snow-1", Reading(now - DAY, 100, {"depth_cm": 50.0})))  # yesterday: stays raw
    store.write(Batch(readings=readings))

    folded, deleted = RetentionPolicy(keep_raw_days=90).apply(store.db, now=now)

    assert (folded, deleted) == (1, 60)  # one (device, hour, metric) row; the boolean is not a figure
    assert [r["seq"] for r in store.readings("snow-1", since=0)] == [100]
    hourly = RetentionPolicy.hourly(store.db, "snow-1", 0, now)
    assert hourly == [{"hour": old_hour, "metric": "depth_cm", "n": 60, "min": 0.0, "max": 59.0, "mean": 29.5}]
    # Applying it again changes nothing; a late back-filled reading of that hour is added in.
    assert RetentionPolicy(keep_raw_days=90).apply(store.db, now=now) == (0, 0)
    store.write(Batch(readings=[("snow-1", Reading(old_hour + 3599, 999, {"depth_cm": 100.0}))]))
    RetentionPolicy(keep_raw_days=90).apply(store.db, now=now)
    [row] = RetentionPolicy.hourly(store.db, "snow-1", 0, now)
    assert (row["n"], row["max"]) == (61, 100.0)
    # Hourly figures go too once older than keep_hourly_days.
    RetentionPolicy(keep_raw_days=90, keep_hourly_days=30).apply(store.db, now=now)
    assert RetentionPolicy.hourly(store.db, "snow-1", 0, now) == []


def test_zero_days_keeps_raw_readings_for_ever(tmp_path):
    store = _store(tmp_path)
    store.write(Batch(readings=[("snow-1", Reading(1_000_000.0, 1, {"depth_cm": 1.0}))]))
    assert RetentionPolicy(keep_raw_days=0).apply(store.db) == (0, 0)
    assert store.reading_count("snow-1") == 1


def test_a_silent_device_turns_stale_and_back_online_with_a_history(tmp_path):
    store = _store(tmp_path)
    t0 = time.time() - 120  # the readings below are stamped with the real time, two minutes on
    store.write(Batch(statuses=[("snow-1", Status("online", {}), t0), ("bus-1", Status("online", {}), t0)]))
    assert stale_after("bus", 5) == 60  # three missed reports, but never less than a minute
    assert store.mark_stale(now=t0 + 59) == []
    assert store.mark_stale(now=t0 + 61) == ["bus-1"]  # snow-1 reports once a minute: it has three
    states = {d["id"]: d["status"] for d in store.latest(public_only=False)}
    assert states == {"bus-1": "stale", "snow-1": "online"}

    store.write(Batch(readings=[("bus-1", Reading(t0 + 62, 1, {"lat": 36.14, "lon": 137.25}))]))
    assert {d["id"]: d["status"] for d in store.latest(public_only=False)}["bus-1"] == "online"
    assert [h["state"] for h in store.status_history("bus-1")] == ["online", "stale", "online"]
    assert "snow-1" in store.mark_stale(now=t0 + 60 * STALE_AFTER_INTERVALS + 1)  # once a minute, for three


def test_offline_stays_offline_and_a_phone_without_status_messages_comes_online(tmp_path):
    store = _store(tmp_path)
    t0 = time.time()
    store.write(Batch(statuses=[("snow-1", Status("offline", {}), t0)]))
    assert store.mark_stale(now=t0 + DAY) == []
    # bus-1 never sends a status (a phone through /osmand): its readings say it is there.
    store.write(Batch(readings=[("bus-1", Reading(t0, 1, {"lat": 36.14, "lon": 137.25}))]))
    assert {d["id"]: d["status"] for d in store.latest(public_only=False)} == {"bus-1": "online", "snow-1": "offline"}


def test_a_device_told_to_report_less_often_is_judged_by_what_it_runs_with(tmp_path):
    store = _store(tmp_path)
    t0 = time.time()  # the store stamps what it hears with the real time
    store.write(Batch(statuses=[("snow-1", Status("online", {}), t0)]))
    assert store.mark_stale(now=t0 + 3 * 60 + 1) == ["snow-1"], "registered to report once a minute"
    config = store.next_config("snow-1", {"interval_s": 1800})
    store.write(Batch(readings=[("snow-1", Reading(t0, 1, {"depth_cm": 3.0}))]))
    assert store.mark_stale(now=t0 + 3 * 60 + 1) == ["snow-1"], "not yet applied: the old interval holds"
    store.write(Batch(readings=[("snow-1", Reading(t0, 2, {"depth_cm": 3.0}))],
                      config_acks=[ConfigAck("snow-1", config["rev"], True, None, t0)]))
    assert store.mark_stale(now=t0 + 3 * 60 + 1) == [], "it applied half-hourly reports"
    assert {d["id"]: d["interval_s"] for d in store.latest(public_only=False)}["snow-1"] == 1800
    assert store.mark_stale(now=t0 + 3 * 1800 + 61) == ["snow-1"]
