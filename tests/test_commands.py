"""Commands to devices through the real broker and gateway: sent, done, refused (why), no answer.

The device is tests/switch_device.py's SwitchBox: a real DeviceLink answering as the
switching spec says (the real switch box replaces it at merge).
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from jisaku.gateway.changes import OperationError
from jisaku.gateway.commands import CommandBook, decode_answer
from jisaku.contract.protocol import ProtocolError

from .brokers import HOST
from .switch_device import SwitchBox
from .town import wait_until

OUTPUTS = {"heater": "Road heater", "pump_1": "Pump 1", "pump_2": "Pump 2"}


def _status(town, command_id: str) -> str:
    return CommandBook(town.changes.db).get(command_id).status


@pytest.fixture
def box_town(make_town):
    town = make_town()
    box = SwitchBox.in_town(town, "heater-1", OUTPUTS, interlocks=[("pump_1", "pump_2")])
    box.start()
    wait_until(lambda: town.store.reading_count("heater-1") >= 1, 15, "the box reports its outputs")
    yield town, box
    box.stop()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_switch_is_done_refused_or_unanswered(box_town):
    town, box = box_town
    changes = town.changes

    command = changes.switch("tanaka", "heater-1", "heater", True)
    assert command.status == "sent" and command.expires_at == pytest.approx(command.issued_at + 120)
    wait_until(lambda: _status(town, command.id) == "done", 15, "the box answers done")
    done = CommandBook(changes.db).get(command.id)
    assert done.result == {"heater": 1, "pump_1": 0, "pump_2": 0}
    wait_until(lambda: town.store.latest(public_only=False)[0]["values"].get("heater_on") == 1, 10,
               "the heater's state reading arrives")

    changes.switch("tanaka", "heater-1", "pump_1", True)
    refused = changes.switch("tanaka", "heater-1", "pump_2", True)
    wait_until(lambda: _status(town, refused.id) == "refused", 15, "the box refuses: interlock")
    refused = CommandBook(changes.db).get(refused.id)
    assert refused.code == "interlock" and "pump_1 is on" in refused.reason

    box.silent = True
    unanswered = changes.switch("tanaka", "heater-1", "heater", False, expires_in_s=1)
    wait_until(lambda: len(box.commands) == 4, 10, "the silent box gets the command")
    wait_until(lambda: _status(town, unanswered.id) == "no_answer", 10, "no answer once it expired")

    entries = [e for e in town.changes.audit.entries(target="heater-1") if e["action"] == "device.switch"]
    answers = {e["after"]["command"]: e["after"] for e in entries if e["before"]}
    assert answers[command.id]["status"] == "done"
    assert answers[refused.id] == {"command": refused.id, "status": "refused", "code": "interlock",
                                   "reason": refused.reason}
    wait_until(lambda: any(e["before"] and e["after"]["command"] == unanswered.id
                           for e in town.changes.audit.entries(target="heater-1")), 15,
               "the gateway writes the no-answer to the audit log")
    assert all(e["actor"] == "tanaka" for e in entries)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_answers_for_unknown_commands_or_from_other_devices_are_ignored(box_town):
    town, box = box_town
    other = SwitchBox.in_town(town, "heater-2", {"heater": "Heater"})
    other.start()
    box.silent = True
    command = town.changes.switch("tanaka", "heater-1", "heater", True)
    wait_until(lambda: len(box.commands) == 1, 10, "the box gets the command")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="impostor")
    client.username_pw_set("heater-2", town.secrets["heater-2"])
    client.connect(HOST, town.broker.port)
    client.loop_start()
    try:
        for payload in ({"id": command.id, "ok": True, "result": {}},   # heater-2 answers heater-1's command
                        {"id": "c-nobody-sent", "ok": True},              # an id nobody sent
                        {"ok": "yes"}):                                    # not an answer at all
            client.publish("jisaku/heater-2/cmd/ack", json.dumps(payload), qos=1).wait_for_publish(5)
        wait_until(lambda: town.store.quarantine_counts().get("bad_ack") == 1, 10, "the broken one is quarantined")
    finally:
        client.loop_stop()
        client.disconnect()
        other.stop()
    assert _status(town, command.id) == "sent", "only heater-1 may answer heater-1's command"
    box.silent = False  # the gateway goes on: a real answer still counts
    town.changes.switch("tanaka", "heater-1", "pump_1", True)
    wait_until(lambda: box.states["pump_1"] == 1, 10, "the box switches")


def test_what_a_switch_needs(tmp_path):
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import DeviceRecord, Registry

    db = Database(tmp_path / "jisaku.db")
    Registry(db).add_device(DeviceRecord("heater-1", "switch_box"))
    with pytest.raises(OperationError, match="has not said which outputs it has"):
        Changes(db).switch("tanaka", "heater-1", "heater", True)
    db.connection.execute("INSERT INTO device_outputs VALUES ('heater-1', ?, ?)",
                          (json.dumps({"heater": {"name": "Heater"}}), time.time()))
    with pytest.raises(OperationError, match="no output 'sprinkler'; it has heater"):
        Changes(db).switch("tanaka", "heater-1", "sprinkler", True)
    with pytest.raises(ProtocolError, match="a command answer is"):
        decode_answer(b'{"id": 3}')
    assert decode_answer(b'{"id": "c-1", "ok": false, "code": "interlock", "reason": "no"}').code == "interlock"
