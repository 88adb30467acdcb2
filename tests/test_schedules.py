"""Schedules as a setting: kind.toml declares one, the server checks it before pushing it,
and the operator page edits it one entry a line (switching spec §3)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from jisaku.contract import kinds
from jisaku.contract.schedules import ScheduleError, as_lines, check_schedule, day_set, parse_lines
from jisaku.dashboard.app import create_app
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.changes import Changes, OperationError
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry


PASSWORD = "a long schedule passphrase"
SCHEDULE_SETTING = ('schedule = { type = "schedule", label = { en = "Switching times", ja = "切り替えの予定" } }\n')


def test_a_schedule_reads_as_the_spec_says():
    lines = "heater 5:00-08:00 mon-fri\nsprinkler 22:00-02:00 sat,sun; pump_1 06:30-06:45"
    schedule = check_schedule(lines, outputs={"heater", "sprinkler", "pump_1"})
    assert schedule == [{"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"},
                        {"output": "sprinkler", "on": "22:00", "off": "02:00", "days": "sat,sun"},
                        {"output": "pump_1", "on": "06:30", "off": "06:45"}]
    assert check_schedule(schedule) == schedule, "the JSON form is the same"
    assert as_lines(schedule) == "heater 05:00-08:00 mon-fri\nsprinkler 22:00-02:00 sat,sun\npump_1 06:30-06:45"
    assert day_set("fri-mon") == {4, 5, 6, 0} and day_set("mon,wed,fri") == {0, 2, 4}
    assert check_schedule("") == [], "an empty schedule takes the old one away"


@pytest.mark.parametrize(("schedule", "message"), [
    ("heater 5am-8am", r"schedule entry 1 \(heater\): on must be a time like 05:00 \(HH:MM, 24-hour\), not '5am';"
                       r" off must be a time like 08:00"),
    ("heater 05:00-08:00 weekdays", r"schedule entry 1 \(heater\): days must be like mon-fri, sat,sun or mon,wed,fri"),
    ("heater 05:00-08:00\nturn the heater on at five", r"schedule entry 2 \(turn the heater on at five\): write it"
                                                        r" like heater 05:00-08:00 mon-fri"),
    ("sprinkler 05:00-08:00", r"schedule entry 1 \(sprinkler\): the device has no output 'sprinkler'; it has heater"),
    ("heater 05:00-05:00", "on and off are both 05:00"),
    ([{"output": "heater", "on": "05:00", "off": "06:00", "when": "mon"}], r"unknown when \(an entry has output, on"),
    ("\n".join(["heater 05:00-06:00"] * 25), "a schedule has at most 24 entries, not 25"),
    (42, "a schedule is a list of entries"),
])
def test_a_bad_schedule_names_the_entry_and_what_to_write(schedule, message):
    with pytest.raises(ScheduleError, match=message):
        check_schedule(schedule, outputs={"heater"})


KIND_TOML = """
[kinds.relay_box]
name = { en = "Relay box", ja = "リレー箱" }
icon = "icon.svg"
colour = "#455a64"

[settings]
interval_s = { limits = [1, 3600], label = { en = "Report every (seconds)", ja = "報告の間隔（秒）" } }
""" + SCHEDULE_SETTING


@pytest.fixture
def schedule_kind(tmp_path, monkeypatch):
    """A kind folder of the tests' own with a schedule setting (as kinds/switch_box has)."""
    folder = tmp_path / "kinds" / "relay_box"
    folder.mkdir(parents=True)
    (folder / "kind.toml").write_text(KIND_TOML, encoding="utf-8")
    (folder / "icon.svg").write_text('<svg viewBox="0 0 24 24"><circle cx="12" cy="12" r="6"/></svg>')
    monkeypatch.setenv("JISAKU_KINDS", str(tmp_path / "kinds"))
    kinds.registry.cache_clear()
    yield folder
    monkeypatch.delenv("JISAKU_KINDS")
    kinds.registry.cache_clear()


def test_kind_toml_declares_a_schedule_and_numbers_keep_their_limits(schedule_kind):
    folder = kinds.folder("relay_box")
    assert folder.settings["schedule"].type == "schedule"
    assert folder.settings["schedule"].label["ja"] == "切り替えの予定"
    assert "schedule" not in folder.limits() and folder.limits()["interval_s"] == (1, 3600)
    text = (schedule_kind / "kind.toml").read_text(encoding="utf-8")
    for wrong, right, message in (
            ('type = "schedule"', 'type = "timetable"', r'type must be "schedule", or left out for a number'),
            ('type = "schedule",', 'type = "schedule", limits = [0, 1],', "a schedule has no limits")):
        (schedule_kind / "kind.toml").write_text(text.replace(wrong, right, 1), encoding="utf-8")
        with pytest.raises(kinds.KindError, match=message):
            kinds.load([schedule_kind.parent])


class RecordingPublisher:
    """Settings without the broker: records the revision as the real publisher does."""

    broker_url = "mqtt://127.0.0.1:1883"

    def __init__(self):
        self.sent = []

    def push(self, store, registry, device_id, changes):
        self.sent.append((device_id, changes))
        return store.next_config(device_id, changes)


def test_the_server_checks_a_schedule_before_pushing_it_and_the_page_edits_it(schedule_kind, tmp_path):
    db = Database(tmp_path / "jisaku.db")
    Registry(db).add_device(DeviceRecord("box-1", "relay_box"))
    db.connection.execute("INSERT INTO device_outputs VALUES ('box-1', ?, ?)",
                          (json.dumps({"heater": {"name": "Road heater"}}), time.time()))
    publisher = RecordingPublisher()
    changes = Changes(db, publisher=publisher)
    with pytest.raises(OperationError, match=r"schedule: schedule entry 1 \(sprinkler\): the device has no output"):
        changes.push_settings("tanaka", "box-1", {"schedule": "sprinkler 05:00-08:00"})
    assert publisher.sent == [], "nothing is pushed before it is right"
    config = changes.push_settings("tanaka", "box-1", {"schedule": [{"output": "heater", "on": "05:00",
                                                                      "off": "08:00", "days": "mon-fri"}]})
    assert config["schedule"] == [{"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"}]

    Accounts(db).add("tanaka", PASSWORD, role="operator")
    app = create_app(tmp_path / "jisaku.db", tiles="osm", config_publisher=publisher)
    client = TestClient(app)
    csrf = client.post("/api/v1/operator/login", json={"name": "tanaka", "password": PASSWORD}).json()["csrf_token"]
    db.connection.execute("INSERT INTO device_status VALUES ('box-1', 'online', ?, ?)",
                          (time.time(), json.dumps({"schedule": "no clock"})))
    page = client.get("/operator/devices/box-1?lang=en").text
    assert "heater 05:00-08:00 mon-fri</textarea>" in page
    assert "waiting for the device" in page, "pending, like any other setting"
    assert "clock is not set, so it does not run its schedule" in page, "what the device says of its schedule"

    refused = client.post("/operator/devices/box-1/settings?lang=en",
                          data={"csrf_token": csrf, "setting.schedule": "heater 05:00-08:00\nheater 7-9"})
    assert refused.status_code == 400
    assert "schedule entry 2 (heater): on must be a time like 05:00" in refused.text.replace("&#39;", "'")
    sent = client.post("/operator/devices/box-1/settings", follow_redirects=False,
                       data={"csrf_token": csrf, "setting.schedule": "heater 05:00-08:00 mon-fri\nheater 17:00-19:00"})
    assert sent.status_code == 303
    assert publisher.sent[-1] == ("box-1", {"schedule": [
        {"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"},
        {"output": "heater", "on": "17:00", "off": "19:00"}]})

    api = client.post("/api/v1/operator/devices/box-1/settings", headers={"X-CSRF-Token": csrf},
                      json={"settings": {"schedule": [{"output": "heater", "on": "25:00", "off": "08:00"}]}})
    assert api.status_code == 400 and "on must be a time like 05:00" in api.json()["detail"]
    device = client.get("/api/v1/operator/devices/box-1").json()
    assert {"name": "schedule", "type": "schedule", "low": None, "high": None,
            "current": publisher.sent[-1][1]["schedule"]} in device["settings"]


# The server checks a schedule before pushing it (contract/schedules.py) and the device checks
# it again when it arrives (firmware/lib/switchboard.py, the same code on a Pi and a board).
# Whatever the server lets through the device must take, or operators would see "refused" for
# a schedule the page called fine; and what the server refuses the device refuses too.
AGREED = [
    "heater 05:00-08:00", "heater 5:00-08:00 mon-fri", "heater 22:00-02:00 sat,sun",
    "heater 23:59-00:00 fri-mon", "heater 00:00-23:59 mon,wed,fri", "heater 06:30-06:45\npump 07:00-07:30 sun",
    "\n".join(["heater 05:00-06:00"] * 24),
]
REFUSED = [
    "heater 5am-8am", "heater 24:00-08:00", "heater 05:60-08:00", "heater 05:00-05:00",
    "heater 05:00-08:00 weekdays", "heater 05:00-08:00 mon-", "heater 05:00-08:00 mon-fri,xyz",
    "heater 05:00-08:00 ,", "sprinkler 05:00-08:00", "\n".join(["heater 05:00-06:00"] * 25),
    [{"output": "heater", "on": "05:00", "off": "06:00", "when": "mon"}],
    [{"output": "heater", "on": "05:00"}], ["heater"], {"output": "heater"},
]


@pytest.mark.parametrize("schedule", AGREED + REFUSED)
def test_the_server_and_the_device_agree_on_a_schedule(schedule):
    from jisaku.firmware.lib import switchboard

    outputs = ["heater", "pump"]
    try:
        pushed = check_schedule(schedule, outputs=set(outputs))
    except ScheduleError:
        pushed = None
    try:
        raw = parse_lines(schedule) if isinstance(schedule, str) else schedule
        switchboard.read_schedule(pushed if pushed is not None else raw, outputs)
        device_takes = True
    except switchboard.SwitchError:
        device_takes = False
    assert (pushed is not None) == (schedule in AGREED), "the server's answer is the one this table expects"
    assert device_takes == (pushed is not None), "the device takes exactly what the server pushes"
