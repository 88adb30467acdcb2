"""Alert rules: hysteresis through the whole pipeline, and every kind of rule on the engine itself.

The engine is fed Batches made by the real wire-protocol decoder, and driven with
``tick(now)`` at chosen times, so "no data for 30 minutes" takes no 30 minutes.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import threading
import time
import tomllib

import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from jisaku.contract import protocol
from jisaku.device.config import load_device_config
from jisaku.gateway.alert_words import WORDS
from jisaku.gateway.alert_engine import AlertEngine
from jisaku.gateway.alert_rules import RuleError
from jisaku.gateway.alerts import AlertBook, AlertError, AlertNotFound
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore

from .brokers import HOST, free_port
from .receivers import MailReceiver, WebhookReceiver
from .town import EXAMPLES, KINDS, wait_until

T0 = 1_750_000_000.0  # a June 2025 afternoon
DEEP_SNOW = {"name": "Deep snow", "kind": "snow_gauge",
             "condition": {"type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25}}
WOBBLE = [10, 20, 31, 29, 31, 28, 31, 24]


# ---------------------------------------------------------------- through the pipeline


def _alert_listener(town) -> tuple[mqtt.Client, list[dict]]:
    received: list[dict] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-alerts", protocol=mqtt.MQTTv311)
    client.username_pw_set("_tester", town.tester_secret)
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("jisaku/_alerts/#", qos=1)
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, u, m: received.append({"topic": m.topic, **json.loads(m.payload)})
    host, port = town.broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    assert subscribed.wait(10), "the test client subscribes to the alert topic"
    return client, received


def test_a_value_wobbling_round_the_threshold_raises_once_notifies_once_and_clears_once(make_town):
    webhook, mail = WebhookReceiver(), MailReceiver()
    dead_url = f"http://{HOST}:{free_port()}/services/T000/B000/SECRETTOKEN"  # nobody listens there
    gauge = load_device_config(KINDS / "snow_gauge")
    try:
        town = make_town([gauge], notify={
            "webhook": [{"name": "office", "url": webhook.url + "/hook"}, {"name": "dead", "url": dead_url}],
            "smtp": {"host": HOST, "port": mail.port, "starttls": False,
                     "from": "jisaku@city.example", "to": ["road@city.example"]},
            "mqtt": {"topic": "jisaku/_alerts"},
            "retry_first_s": 0.2,
        })
        listener, on_mqtt = _alert_listener(town)
        town.alerts.add_rule(DEEP_SNOW)
        link = town.link("snow-1")
        link.start()
        start = time.time() - 60
        for i, depth in enumerate(WOBBLE):
            link.publish_reading({"depth_cm": depth}, ts=start + i)
        try:
            # The dead webhook holds up nothing: every reading is stored.
            wait_until(lambda: town.store.reading_count("snow-1") == len(WOBBLE), 20, "all 8 readings are stored")
            wait_until(lambda: [c.state for c in town.alerts.history()][:1] == ["cleared"], 20,
                       "the alert clears at 24 cm")
            live = lambda: [d for d in town.alerts.notifier.deliveries() if d["channel"] != "dead"]  # noqa: E731
            wait_until(lambda: len(live()) == 6 and all(d["state"] == "sent" for d in live()), 20,
                       "raised and cleared reach the webhook, the mail server and MQTT")
            wait_until(lambda: len(on_mqtt) == 2, 10, "both MQTT messages arrive")
        finally:
            link.stop()
            listener.loop_stop()
            listener.disconnect()

        (alert,) = town.alerts.alerts()
        assert (alert.device_id, alert.state, alert.value) == ("snow-1", "cleared", 31)
        assert [c.state for c in reversed(town.alerts.history())] == ["raised", "cleared"]

        raised, cleared = webhook.delivered("/hook")
        assert (raised["event"], raised["device_id"], raised["rule"], raised["value"]) == (
            "raised", "snow-1", "Deep snow", 31)
        assert (cleared["event"], cleared["value"]) == ("cleared", 24)
        assert len(webhook.posts) == 2  # no retries were needed

        assert (raised["message"], raised["message_ja"]) == ("depth_cm 31 ≥ 30", "depth_cm が 31（30 以上）")

        # People read Japanese unless [notify] language = "en".
        assert len(mail.messages) == 2
        assert mail.subjects()[0].startswith("[jisaku] 発生: Deep snow")
        assert mail.subjects()[1].startswith("[jisaku] 解除: Deep snow")
        assert "depth_cm が 31（30 以上）" in mail.messages[0].get_content()
        assert "depth_cm が 24 に下がりました（25 未満）" in mail.messages[1].get_content()

        assert [(m["topic"], m["event"]) for m in on_mqtt] == [
            ("jisaku/_alerts/snow-1", "raised"), ("jisaku/_alerts/snow-1", "cleared")]
        assert town.store.quarantine_counts() == {}  # the gateway leaves its own alert topic alone

        # The dead webhook is tried again and again; its "cleared" waits behind its "raised",
        # so that it never arrives first.
        dead = lambda: sorted((d["id"], d["state"], d["attempts"]) for d in town.alerts.notifier.deliveries()  # noqa: E731
                              if d["channel"] == "dead")
        wait_until(lambda: dead()[0][2] >= 2, 10, "the dead webhook has been tried twice")
        (_, first_state, _), (_, second_state, second_attempts) = dead()
        assert (first_state, second_state, second_attempts) == ("pending", "pending", 0)
    finally:
        webhook.close()
        mail.close()


# ---------------------------------------------------------------- on the engine


_seq = itertools.count()


def batch(device_id: str, start: float, *values: dict | float, step: float = 60.0) -> Batch:
    """Readings as the gateway decodes them off the wire; a number is a depth_cm."""
    out = Batch()
    for i, v in enumerate(values):
        ts = start + i * step
        payload = protocol.encode_reading(next(_seq), v if isinstance(v, dict) else {"depth_cm": v}, ts=ts)
        out.readings += [(device_id, r) for r in protocol.decode_readings(payload, received_at=ts)]
    return out


@pytest.fixture
def db(tmp_path) -> Database:
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    for device_id, kind in [("snow-1", "snow_gauge"), ("snow-2", "snow_gauge"), ("bus-1", "bus"), ("tray-1", "printer_tray")]:
        registry.add_device(DeviceRecord(device_id, kind, name=device_id.upper()))
    return db


@pytest.fixture
def engine(db) -> AlertEngine:
    return AlertEngine(db, Registry(db))


def queued(db: Database) -> list[tuple[str, str]]:
    """The notifications queued so far: (event, device id)."""
    rows = db.connection.execute("SELECT payload FROM notify_outbox ORDER BY id")
    return [(p["event"], p["device_id"]) for p in (json.loads(row[0]) for row in rows)]


def test_hysteresis_on_every_device_of_a_kind(engine, db):
    engine.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, *WOBBLE))
    engine.on_batch(batch("snow-2", T0, 10, 31, 33))
    engine.on_batch(batch("bus-1", T0, {"depth_cm": 99.0}))  # not a snow gauge
    alerts = {a.device_id: a for a in engine.alerts()}
    assert set(alerts) == {"snow-1", "snow-2"}
    assert (alerts["snow-1"].state, alerts["snow-1"].raised, alerts["snow-1"].cleared) == ("cleared", T0 + 120, T0 + 420)
    assert alerts["snow-2"].state == "raised"
    assert [a.device_id for a in engine.alerts(active_only=True)] == ["snow-2"]
    assert queued(db) == [("raised", "snow-1"), ("cleared", "snow-1"), ("raised", "snow-2")]


def test_below_mirrors_above(engine):
    engine.add_rule({"name": "Battery low", "device_id": "snow-1",
                     "condition": {"type": "below", "metric": "battery_pct", "raise_at": 20, "clear_at": 30}})
    engine.on_batch(batch("snow-1", T0, *({"battery_pct": v} for v in (50, 19, 25, 21, 29, 31))))
    (alert,) = engine.alerts()
    assert (alert.value, alert.state, alert.cleared) == (19, "cleared", T0 + 300)


def test_minimum_duration(engine, db):
    engine.add_rule({"name": "Deep snow for 10 min", "device_id": "snow-1", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25, "for_min": 10}})
    engine.on_batch(batch("snow-1", T0, 31, 32, 29, 31, 33, step=240))  # dips below 30 after 4 min
    assert engine.alerts() == []
    engine.tick(T0 + 12 * 60 + 9 * 60)  # above since T0+12 min: not yet 10 minutes
    assert engine.alerts() == []
    engine.tick(T0 + 12 * 60 + 10 * 60)  # no new reading, but it has stayed above 30 for 10 minutes
    (alert,) = engine.alerts()
    assert alert.state == "raised" and "for 10 min" in alert.message
    assert alert.message_ja == "depth_cm が 33（30 以上）の状態が 10 分続いています"
    engine.on_batch(batch("snow-1", T0 + 30 * 60, 40, 41, 42))
    assert len(engine.alerts()) == 1 and queued(db) == [("raised", "snow-1")]


@pytest.fixture
def in_japan(monkeypatch):
    """The gateway's clock set to Japan's time, as on a town's Raspberry Pi (a POSIX rule: no tz files needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_no_data_for_n_minutes(engine, db, in_japan):
    engine.add_rule({"name": "Gauge silent", "kind": "snow_gauge", "condition": {"type": "no_data", "minutes": 30}})
    engine.on_batch(batch("snow-1", T0, 12))
    engine.tick(T0 + 29 * 60)
    assert [a.device_id for a in engine.alerts()] == []
    engine.tick(T0 + 31 * 60)
    (alert,) = [a for a in engine.alerts() if a.device_id == "snow-1"]
    assert alert.state == "raised" and "no readings for 31 min" in alert.message
    assert alert.message_ja == "31 分間データが届いていません（最後は 2025-06-16 00:06 JST）"  # T0 in Japan
    engine.tick(T0 + 40 * 60)  # still silent: still one alert
    engine.on_batch(batch("snow-1", T0 + 41 * 60, 13))
    assert [(a.device_id, a.state) for a in engine.alerts() if a.device_id == "snow-1"] == [("snow-1", "cleared")]
    assert [e for e in queued(db) if e[1] == "snow-1"] == [("raised", "snow-1"), ("cleared", "snow-1")]


def test_a_vehicle_that_has_not_moved(engine):
    engine.add_rule({"name": "Bus stuck", "kind": "bus", "condition": {"type": "not_moved", "minutes": 15}})
    depot = (36.1400, 137.2500)
    # GPS wanders a few metres while the bus stands still for 20 minutes, then it drives off.
    standing = [{"lat": depot[0] + 0.00002 * (i % 3), "lon": depot[1], "speed_kmh": 0} for i in range(21)]
    engine.on_batch(batch("bus-1", T0, *standing))
    (alert,) = engine.alerts()
    assert (alert.state, alert.raised) == ("raised", T0 + 15 * 60)
    engine.on_batch(batch("bus-1", T0 + 21 * 60, {"lat": depot[0] + 0.002, "lon": depot[1]}))  # 220 m on
    (alert,) = engine.alerts()
    assert alert.state == "cleared" and "moving again" in alert.cleared_message
    assert (alert.message_ja, alert.cleared_message_ja) == (
        "15 分間、半径 50 m の中から動いていません", "再び動き出しました（222 m）")


def dealt(device_id: str, start: float, *values: dict | float, step: float = 60.0) -> tuple[list[Batch], list[Batch]]:
    """The readings as a shared subscription deals them to two gateway workers: one each, in turn."""
    singles = [batch(device_id, start + i * step, v) for i, v in enumerate(values)]
    return singles[0::2], singles[1::2]


@pytest.fixture
def two_workers(db) -> tuple[AlertEngine, AlertEngine]:
    """Two engines on one database file, each with its own connection, as in jisaku gateway --workers 2."""
    other = Database(db.path)
    return AlertEngine(db, Registry(db)), AlertEngine(other, Registry(other))


def test_two_workers_sharing_a_devices_readings_judge_it_as_one_would(two_workers):
    a, b = two_workers
    a.add_rule({"name": "Deep snow for 10 min", "device_id": "snow-1", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25, "for_min": 10}})
    # Every 2 minutes: 31, then a dip to 20 that only worker b sees, then 31 from T0+4 min on.
    to_a, to_b = dealt("snow-1", T0, 31, 20, 31, 31, 31, 31, 31, 31, step=120)
    for mine, theirs in zip(to_a, to_b):
        a.on_batch(mine)
        b.on_batch(theirs)
        if mine.readings[0][1].ts == T0 + 480:
            a.tick(T0 + 10 * 60 + 1)  # 10 min after the first 31, but the dip broke that run
            assert a.alerts() == [], "a dip seen by the other worker restarts the 10 minutes"
    (alert,) = a.alerts()
    assert (alert.state, alert.raised) == ("raised", T0 + 840)  # 10 minutes after the dip
    assert "for 10 min" in alert.message


def test_two_workers_time_a_standing_bus_from_when_it_stopped(two_workers):
    a, b = two_workers
    a.add_rule({"name": "Bus stuck", "kind": "bus", "condition": {"type": "not_moved", "minutes": 15}})
    depot = (36.1400, 137.2500)
    to_a, to_b = dealt("bus-1", T0, *({"lat": depot[0], "lon": depot[1]} for _ in range(17)))
    for mine, theirs in itertools.zip_longest(to_a, to_b):
        a.on_batch(mine)
        if theirs:
            b.on_batch(theirs)
    (alert,) = b.alerts()
    assert (alert.state, alert.raised) == ("raised", T0 + 15 * 60)  # 15 min after the first report at the depot


def test_a_reading_judged_late_does_not_undo_a_newer_verdict(engine):
    engine.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, 10, 31, 24))  # raised at 31, cleared at 24
    engine.on_batch(batch("snow-1", T0 + 60, 33))  # a late copy from the other worker, older than the 24
    (alert,) = engine.alerts()
    assert alert.state == "cleared", "the late 33 cm, older than the 24 cm, raises nothing"


def test_alerts_kept_by_an_older_jisaku_stay_and_new_ones_get_their_japanese(tmp_path):
    # The two tables as jisaku made them before message_ja, with an alert in them.
    old = sqlite3.connect(tmp_path / "jisaku.db")
    old.executescript("""
        CREATE TABLE alerts (id INTEGER PRIMARY KEY, rule_id INTEGER NOT NULL, rule_name TEXT NOT NULL,
            device_id TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, value TEXT, raised REAL NOT NULL,
            acknowledged REAL, acknowledged_by TEXT, cleared REAL, cleared_message TEXT);
        CREATE TABLE alert_history (id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, ts REAL NOT NULL,
            state TEXT NOT NULL, actor TEXT, message TEXT NOT NULL);
        INSERT INTO alerts VALUES (1, 9, 'Old rule', 'snow-2', 'raised', 'depth_cm 40 ≥ 30', '40', 1.0e9,
            NULL, NULL, NULL, NULL);
        INSERT INTO alert_history VALUES (1, 1, 1.0e9, 'raised', NULL, 'depth_cm 40 ≥ 30');
    """)
    old.close()
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    for device in ("snow-1", "snow-2"):
        registry.add_device(DeviceRecord(device, "snow_gauge", name=device.upper()))  # as the db fixture
    engine = AlertEngine(db, registry)
    (old,) = engine.alerts()
    assert (old.message, old.message_ja) == ("depth_cm 40 ≥ 30", "")  # the pages show the English one
    engine.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, 31))
    new = next(a for a in engine.alerts() if a.device_id == "snow-1")
    assert new.message_ja == "depth_cm が 31（30 以上）"
    assert [h.message_ja for h in engine.history(device_id="snow-1")] == ["depth_cm が 31（30 以上）"]


def test_every_alert_sentence_is_in_both_languages_with_the_same_blanks():
    blanks = lambda text: sorted(re.findall(r"{(\w+)}", text))  # noqa: E731
    assert WORDS["en"].keys() == WORDS["ja"].keys()
    for key, english in WORDS["en"].items():
        assert blanks(english) == blanks(WORDS["ja"][key]), key


# Old town of Takayama, as a Feature pasted from a map tool ([lon, lat]).
OLD_TOWN = {"type": "Feature", "properties": {"name": "Sanmachi"}, "geometry": {"type": "Polygon", "coordinates": [
    [[137.2580, 36.1440], [137.2620, 36.1440], [137.2620, 36.1400], [137.2580, 36.1400], [137.2580, 36.1440]]]}}


def test_a_vehicle_entering_and_leaving_an_area(engine, db):
    engine.add_rule({"name": "Truck in the old town", "device_id": "bus-1",
                     "condition": {"type": "area", "area": OLD_TOWN, "alert_when": "inside"}})
    engine.add_rule({"name": "Bus left town", "device_id": "bus-1", "condition": {
        "type": "area", "alert_when": "outside",
        "area": {"type": "circle", "lat": 36.1420, "lon": 137.2550, "radius_m": 2000}}})
    route = [(36.1420, 137.2550), (36.1420, 137.2600), (36.1425, 137.2610), (36.1420, 137.2700), (36.1700, 137.2550)]
    engine.on_batch(batch("bus-1", T0, *({"lat": lat, "lon": lon} for lat, lon in route)))
    alerts = {a.rule_name: a for a in engine.alerts()}
    assert (alerts["Truck in the old town"].raised, alerts["Truck in the old town"].cleared) == (T0 + 60, T0 + 180)
    assert alerts["Truck in the old town"].cleared_message == "left the area"
    assert (alerts["Bus left town"].state, alerts["Bus left town"].raised) == ("raised", T0 + 240)  # 3 km north
    assert queued(db) == [("raised", "bus-1"), ("cleared", "bus-1"), ("raised", "bus-1")]


def test_an_open_alert_stays_open_over_a_restart(db):
    first = AlertEngine(db, Registry(db))
    first.add_rule(DEEP_SNOW)
    first.on_batch(batch("snow-1", T0, 20, 31))
    again = AlertEngine(db, Registry(db))  # the gateway restarted
    again.on_batch(batch("snow-1", T0 + 600, 31, 28, 33))  # still in alarm, or in the band
    (alert,) = again.alerts(active_only=True)
    assert alert.raised == T0 + 60
    again.on_batch(batch("snow-1", T0 + 900, 24))
    assert [(a.state, a.cleared) for a in again.alerts()] == [("cleared", T0 + 900)]
    assert queued(db) == [("raised", "snow-1"), ("cleared", "snow-1")]


def test_acknowledged_by_an_operator_then_cleared_with_history(engine, db):
    engine.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, 35))
    (alert,) = engine.alerts()
    acknowledged = engine.acknowledge(alert.id, "tanaka")
    assert (acknowledged.state, acknowledged.acknowledged_by) == ("acknowledged", "tanaka")
    with pytest.raises(AlertError, match="already acknowledged by tanaka"):
        engine.acknowledge(alert.id, "suzuki")
    engine.on_batch(batch("snow-1", time.time(), 20))  # after the acknowledgement, which is stamped now
    with pytest.raises(AlertError, match="already cleared"):
        engine.acknowledge(alert.id, "suzuki")
    with pytest.raises(AlertNotFound):
        engine.acknowledge(999, "suzuki")
    assert [(c.state, c.actor) for c in engine.history(device_id="snow-1")] == [
        ("cleared", None), ("acknowledged", "tanaka"), ("raised", None)]
    assert engine.alerts()[0].acknowledged_by == "tanaka"


def test_rules_changed_by_another_process_are_picked_up(engine, db):
    pages = AlertBook(db)  # what the dashboard's operator pages use
    rule = pages.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, 31))
    assert [a.state for a in engine.alerts()] == ["raised"]
    pages.update_rule(rule.id, {**DEEP_SNOW, "condition": {**DEEP_SNOW["condition"], "raise_at": 50, "clear_at": 40}})
    engine.on_batch(batch("snow-1", T0 + 60, 45, 35))  # under the new levels 35 clears it
    assert [a.state for a in engine.alerts()] == ["cleared"]
    pages.update_rule(rule.id, {**DEEP_SNOW, "enabled": False})
    engine.on_batch(batch("snow-1", T0 + 200, 80))
    assert len(engine.alerts()) == 1
    pages.update_rule(rule.id, DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0 + 300, 80))
    pages.delete_rule(rule.id, user="tanaka")  # its open alert is cleared, and said so
    assert [(a.state, a.cleared_message) for a in engine.alerts()][0] == ("cleared", "the rule was deleted")
    assert engine.rules() == []


@pytest.mark.parametrize("rule, error", [
    ({**DEEP_SNOW, "condition": {**DEEP_SNOW["condition"], "clear_at": 35}}, "clear_at .35. must be at or below"),
    ({**DEEP_SNOW, "condition": {"type": "below", "metric": "battery_pct", "raise_at": 20, "clear_at": 10}},
     "clear_at .10. must be at or above"),
    ({**DEEP_SNOW, "device_id": "snow-1"}, "for one device .device_id. or for every device of a kind"),
    ({**DEEP_SNOW, "condition": {"type": "area", "area": {"type": "Polygon", "coordinates": [
        [[137.25, 36.14], [137.26, 36.14], [137.26, 36.15]]]}}}, "must end where it starts"),
    ({**DEEP_SNOW, "condition": {"type": "area", "area": {"type": "Polygon", "coordinates": [
        [[36.14, 137.25], [36.14, 137.26], [36.15, 137.26], [36.14, 137.25]]]}}}, "GeoJSON puts lon first"),
    ({**DEEP_SNOW, "condition": {"type": "no_data", "minutes": 0}}, "greater than 0"),
    ({**DEEP_SNOW, "condition": {"type": "rain"}}, "does not match any of the expected tags"),
])
def test_a_bad_rule_is_refused_saying_what_to_fix(engine, rule, error):
    with pytest.raises(ValidationError, match=error):
        engine.add_rule(rule)
    assert engine.rules() == []


def test_a_rule_for_an_unknown_device_is_refused(engine):
    with pytest.raises(RuleError, match="device 'snow-9' is not registered"):
        engine.add_rule({**DEEP_SNOW, "kind": None, "device_id": "snow-9"})
    with pytest.raises(RuleError, match="there is no rule 7"):
        engine.update_rule(7, DEEP_SNOW)


def test_rules_are_plain_json(engine):
    rule = engine.add_rule({"name": "Old town", "device_id": "bus-1",
                            "condition": {"type": "area", "area": OLD_TOWN}})
    as_json = json.loads(rule.model_dump_json())
    assert as_json["condition"] == {"type": "area", "area": OLD_TOWN, "alert_when": "inside", "for_min": 0.0}
    assert engine.rules() == [rule]


def test_the_demo_towns_rules_are_added_once(db):
    from jisaku.gateway.alerts import ensure_rules

    rules = tomllib.loads((EXAMPLES / "demo-city" / "city.toml").read_text(encoding="utf-8"))["alert_rule"]
    book = AlertBook(db)
    assert [r.name for r in ensure_rules(book, rules)] == ["Deep snow", "Bus in the festival procession area",
                                                           "Long queue at the counter"]
    book.delete_rule(book.rules()[0].id, user="tanaka")
    assert ensure_rules(book, rules) == []  # the next demo run leaves the operator's choice alone
    assert [r.name for r in book.rules()] == ["Bus in the festival procession area", "Long queue at the counter"]


def test_a_removed_device_takes_its_alerts_with_it_and_a_revoked_one_raises_no_no_data(engine, db):
    engine.add_rule({"name": "Silent", "kind": "snow_gauge", "condition": {"type": "no_data", "minutes": 30}})
    engine.add_rule(DEEP_SNOW)
    engine.on_batch(batch("snow-1", T0, 40))
    engine.on_batch(batch("snow-2", T0, 10))
    db.connection.execute("UPDATE devices SET secret_hash = NULL WHERE id = 'snow-2'")  # revoked
    db.connection.execute("DELETE FROM devices WHERE id = 'snow-1'")                    # removed
    engine.tick(T0 + 3600)
    assert [(a.device_id, a.rule_name, a.state, a.cleared_message) for a in engine.alerts()] == [
        ("snow-1", "Deep snow", "cleared", "the device was removed")]


def test_the_counters_waiting_count_raises_the_demo_towns_long_queue_rule(engine, db):
    """Counts at the counter are readings like any other: an alert rule needs no new code."""
    Registry(db).add_device(DeviceRecord("counter-1", "counter", name="Resident counter"))
    city = tomllib.loads((EXAMPLES / "demo-city" / "city.toml").read_text(encoding="utf-8"))
    (rule,) = [r for r in city["alert_rule"] if r.get("kind") == "counter"]
    engine.add_rule(rule)
    queue = [{"waiting": n, "estimate_min": n * 2.5} for n in (12, 18, 21, 24, 23, 22, 25, 26, 24, 22, 21, 23)]
    engine.on_batch(batch("counter-1", T0, *queue))      # 21 or more since T0 + 2 min
    engine.tick(T0 + 11 * 60)
    assert engine.alerts() == [], "not yet 10 minutes over 20"
    engine.tick(T0 + 12 * 60)
    (alert,) = engine.alerts()
    assert (alert.device_id, alert.state) == ("counter-1", "raised")
    engine.on_batch(batch("counter-1", T0 + 13 * 60, {"waiting": 9}))
    assert engine.alerts()[0].state == "cleared"


def events(device_id: str, *sent: tuple[float, str, dict]) -> Batch:
    """Events as the gateway decodes them off the wire: (ts, name, values)."""
    out = Batch()
    for ts, name, values in sent:
        payload = json.dumps({"ts": ts, "seq": next(_seq), "event": name, "v": values}).encode()
        out.events.append((device_id, protocol.decode_event(payload, received_at=ts)))
    return out


ROUTER_DOWN = {"name": "Router down", "kind": "printer_tray", "condition": {
    "type": "event", "event": "down", "match": {"check": "router"}, "clear_event": "up"}}


def test_an_event_rule_tells_staff_why_and_clears_with_the_event_that_ends_it(engine, db):
    engine.add_rule(ROUTER_DOWN)
    engine.on_batch(events("tray-1", (T0, "down", {"check": "phone_exchange", "reason": "timed out"})))
    assert engine.alerts() == [], "another check's event is not this rule's"
    engine.on_batch(events("tray-1", (T0 + 60, "down", {"check": "router", "reason": "connection refused"}),
                           (T0 + 120, "down", {"check": "router", "reason": "connection refused"})))
    (alert,) = engine.alerts()
    assert alert.state == "raised" and alert.raised == T0 + 60
    assert alert.message == "the device sent down: check router, reason connection refused"
    assert alert.message_ja == "機器から down が届きました（check router, reason connection refused）"
    engine.on_batch(events("tray-1", (T0 + 30, "up", {"check": "router", "ms": 2.0})))
    assert engine.alerts()[0].state == "raised", "an 'up' older than the 'down' does not clear it"
    engine.on_batch(events("tray-1", (T0 + 300, "up", {"check": "phone_exchange", "ms": 3.0})))
    assert engine.alerts()[0].state == "raised", "another check coming back does not clear it"
    engine.on_batch(events("tray-1", (T0 + 600, "up", {"check": "router", "ms": 1.5, "down_s": 540})))
    (alert,) = engine.alerts()
    assert (alert.state, alert.cleared) == ("cleared", T0 + 600)
    assert "the device sent up: check router" in alert.cleared_message
    assert queued(db) == [("raised", "tray-1"), ("cleared", "tray-1")]
    engine.on_batch(batch("tray-1", T0 + 700, {"tray_full": 1}))
    assert engine.alerts()[0].state == "cleared", "readings leave an event rule alone"


def test_an_event_rule_without_a_clearing_event_clears_once_the_event_stops_coming(engine, db):
    engine.add_rule({"name": "Printer failed", "device_id": "tray-1", "condition": {
        "type": "event", "event": "printer_failed", "clear_after_min": 30}})
    failed = events("tray-1", (T0, "printer_failed", {}), (T0 + 20 * 60, "printer_failed", {"error": "no paper"}))
    SQLiteStore(db).write(failed)  # as the gateway does: stored, then judged
    engine.on_batch(failed)
    (alert,) = engine.alerts()
    assert alert.message == "the device sent printer_failed"
    engine.tick(T0 + 45 * 60)
    assert engine.alerts()[0].state == "raised", "30 min count from the newest printer_failed, at 20 min"
    engine.tick(T0 + 51 * 60)
    (alert,) = engine.alerts()
    assert alert.state == "cleared" and alert.cleared_message == "no printer_failed for 31 min"
    assert alert.cleared_message_ja == "31 分間 printer_failed が届いていません"


@pytest.mark.parametrize(("condition", "error"), [
    ({"type": "event", "event": "down"}, "say how the alert clears"),
    ({"type": "event", "event": "down", "clear_event": "down"}, "clear_event is the same event"),
    ({"type": "event", "event": "Down!", "clear_event": "up"}, "should be an event's name"),
])
def test_an_event_rule_that_could_never_work_is_refused(engine, condition, error):
    with pytest.raises(ValidationError, match=error):
        engine.add_rule({"name": "x", "device_id": "tray-1", "condition": condition})


def test_an_operator_writes_an_event_rule_on_the_rules_page(tmp_path):
    from fastapi.testclient import TestClient

    from jisaku.dashboard.app import create_app
    from jisaku.gateway.accounts import Accounts

    db = Database(tmp_path / "jisaku.db")
    Registry(db).add_device(DeviceRecord("watch-1", "equipment_watch"))
    Accounts(db).add("tanaka", "a long operator passphrase", role="operator")
    client = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm"))
    csrf = client.post("/api/v1/operator/login", json={"name": "tanaka", "password": "a long operator passphrase"}
                       ).json()["csrf_token"]
    form = {"csrf_token": csrf, "name": "Router down", "scope_is": "device", "scope": "watch-1", "type": "event",
            "event": "down", "match": "check=router, tries=3", "clear_event": "up", "enabled": "1"}
    missing = client.post("/operator/rules?lang=en", data={**form, "clear_event": ""})
    assert missing.status_code == 400 and "say how the alert clears" in missing.text
    saved = client.post("/operator/rules?lang=en", data=form)
    assert saved.status_code == 200, saved.text
    (rule,) = AlertBook(db).rules()
    assert rule.condition.model_dump() == {"type": "event", "event": "down", "match": {"check": "router", "tries": 3},
                                           "clear_event": "up", "clear_after_min": None}
    page = client.get("/operator/rules?lang=en").text
    assert "the device sends down check=router tries=3; clears with up" in page
    edit = client.get(f"/operator/rules?edit={rule.id}&lang=en").text
    assert 'name="match" value="check=router, tries=3"' in edit
