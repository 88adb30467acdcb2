"""The device runtime against a real broker: settings and commands from afar, and
outages of the broker (with a device restarted in the middle of one)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt

from jisaku.device.config import load_device_config

from .town import KINDS, wait_until

OUTAGE_S = 30


def test_a_changed_threshold_reaches_the_running_tray_and_is_acknowledged(make_town):
    # Paper lies 4 s each time: never long enough for the default 30 s threshold.
    tray = load_device_config(KINDS / "printer_tray", {
        "simulate": {"paper": [{"at_s": 6, "stays_s": 4}], "cycle_s": 600}})
    town = make_town([tray])
    town.run_devices()
    wait_until(lambda: town.store.reading_count("tray-1") >= 1, 15, "the tray reports")

    config = town.gateway.push_config("tray-1", {"left_after_s": 1.5})
    assert config == {"rev": 1, "left_after_s": 1.5}
    wait_until(lambda: (town.store.config_state("tray-1") or {}).get("state") == "applied", 10,
               "the tray acknowledges rev 1 as applied")

    wait_until(lambda: [e["event"] for e in town.store.events("tray-1")] == ["tray_cleared", "tray_left"], 20,
               "with the new 1.5 s threshold, paper left 4 s makes the tray beep, then stop")

    town.gateway.push_config("tray-1", {"left_after_s": -5})
    state = wait_until(lambda: (s := town.store.config_state("tray-1")) and s["state"] == "refused" and s, 10,
                       "the tray refuses rev 2")
    assert state["rev"] == 2 and "left_after_s must be a number from 1 to 3600" in state["reason"]
    saved = json.loads((town.directory / "devices" / "tray-1" / "settings.json").read_text())
    assert saved == {"left_after_s": 1.5}, "the refused value is not kept; the last good one is"

    # The next revision builds on what the device applied, not on the refused value.
    assert town.gateway.push_config("tray-1", {"report_every_s": 30}) == {
        "rev": 3, "left_after_s": 1.5, "report_every_s": 30}
    wait_until(lambda: town.store.config_state("tray-1")["state"] == "applied", 10, "rev 3 is applied")


def test_commands_are_answered(make_town):
    tray = load_device_config(KINDS / "printer_tray")
    town = make_town([tray])
    town.run_devices()
    wait_until(lambda: town.store.reading_count("tray-1") >= 1, 15, "the tray reports")
    answers: dict[str, dict] = {}
    got_all = threading.Event()

    def on_message(client, userdata, message):
        answer = json.loads(message.payload)
        answers[answer["id"]] = answer
        if len(answers) == 3:
            got_all.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-operator", protocol=mqtt.MQTTv311)
    client.username_pw_set("_tester", town.tester_secret)
    client.on_message = on_message
    host, port = town.broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.subscribe("jisaku/tray-1/cmd/ack", qos=1)[0]
        time.sleep(0.3)  # let the subscription settle before asking
        for request in ({"id": "c1", "do": "test_buzzer"}, {"id": "c2", "do": "fly"},
                        {"id": "c3", "do": "report_status"}):
            client.publish("jisaku/tray-1/cmd", json.dumps(request), qos=1)
        assert got_all.wait(10), f"three answers arrive, got {answers}"
    finally:
        client.loop_stop()
        client.disconnect()
    assert answers["c1"] == {"id": "c1", "ok": True, "result": "beeped twice"}
    assert answers["c2"]["ok"] is False and "test_buzzer" in answers["c2"]["reason"]
    assert answers["c3"]["ok"] is True and answers["c3"]["result"]["state"] == "online"


def test_a_broker_outage_loses_nothing_even_when_the_device_restarts_in_it(make_town):
    gauge = load_device_config(KINDS / "snow_gauge", {"device": {"interval_s": 0.5}})
    town = make_town([gauge])
    stop_first = town.run_devices()
    wait_until(lambda: town.store.reading_count("snow-1") >= 3, 15, "readings flow before the outage")

    town.broker.stop()
    time.sleep(OUTAGE_S / 2)
    stop_first.set()                      # the device is switched off mid-outage...
    time.sleep(1)
    town.run_devices()                    # ...and on again, still without a broker
    time.sleep(OUTAGE_S / 2)
    stored_before = town.store.reading_count("snow-1")
    outbox = sqlite3.connect(town.directory / "devices" / "snow-1" / "outbox.db")
    queued = outbox.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert queued >= OUTAGE_S / 2, f"the device kept measuring through the outage ({queued} queued)"
    town.broker.start()

    # Devices wait up to 30 s between tries to reconnect.
    wait_until(lambda: town.store.reading_count("snow-1") >= stored_before + queued, 45,
               f"the {queued} readings taken during the outage arrive")
    wait_until(lambda: outbox.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0, 10,
               "the outbox empties")
    readings = town.store.readings("snow-1", since=0, limit=10000)
    seqs = [r["seq"] for r in readings]
    assert seqs == sorted(seqs), "in order"
    assert len(seqs) == len(set(seqs)), "none twice"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gaps: every reading taken arrived"
