"""Alert rules that switch: sprinklers on when the bridge gauge reads ≥ 5 cm, off below 2 cm,
through the real broker, gateway and alert engine, with a switch box answering as the spec says.

Time is driven through the engine's ``tick(now)``, never by sleeping.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.alerts import AlertBook
from jisaku.gateway.commands import CommandBook
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.rule_actions import RuleActions

from .switch_device import SwitchBox, register
from .town import wait_until

SPRINKLERS = {
    "name": "Sprinklers at the bridge", "device_id": "snow-bridge",
    "condition": {"type": "above", "metric": "depth_cm", "raise_at": 5, "clear_at": 2},
    "action": {"switch": {"device_id": "heater-1", "output": "sprinkler", "on_raise": True, "on_clear": False},
               "min_interval_min": 10},
}


def _rule_commands(db: Database) -> list:
    return [c for c in CommandBook(db).for_device("heater-1", limit=100) if c.source == "rule"][::-1]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_rule_switches_sprinklers_on_and_off_with_hysteresis_and_a_rate_limit(make_town):
    town = make_town()
    box = SwitchBox.in_town(town, "heater-1", {"sprinkler": "Sprinklers", "heater": "Road heater"})
    box.start()
    register(town, "snow-bridge", "snow_gauge")
    gauge = town.link("snow-bridge")
    gauge.start()
    db = town.changes.db
    try:
        wait_until(lambda: town.store.reading_count("heater-1") >= 1, 15, "the box reports")
        rule = town.changes.add_rule("sato", SPRINKLERS)
        book = AlertBook(db)

        def depth(*values: float) -> None:
            for value in values:
                gauge.publish_reading({"depth_cm": value})

        def judged(count: int) -> None:
            wait_until(lambda: town.store.reading_count("snow-bridge") >= count, 15, f"{count} readings stored")

        depth(1, 3, 4.9)
        judged(3)
        assert _rule_commands(db) == [], "below 5 cm nothing happens"
        depth(5.5)
        wait_until(lambda: box.states["sprinkler"] == 1, 15, "5.5 cm raises the alert and the sprinklers go on")
        (on,) = _rule_commands(db)
        assert on.issued_by == "rule:Sprinklers at the bridge" and on.args == {"output": "sprinkler", "on": True}
        wait_until(lambda: CommandBook(db).get(on.id).status == "done", 10, "the box answers")

        depth(4, 3, 2.5)  # snow melting, but not yet below clear_at: the alert stays, so do the sprinklers
        judged(7)
        assert book.alerts(active_only=True) and len(_rule_commands(db)) == 1
        depth(1.5)        # below 2 cm: the alert clears; switching off now would come too soon after on
        wait_until(lambda: not book.alerts(active_only=True), 15, "1.5 cm clears the alert")
        depth(6)          # a quick flip back: raised again, and the sprinklers are still on, as wanted
        wait_until(lambda: book.alerts(active_only=True), 15, "6 cm raises it again")
        depth(1)
        wait_until(lambda: not book.alerts(active_only=True), 15, "1 cm clears it again")
        town.alerts.tick(time.time())
        assert len(_rule_commands(db)) == 1, "the rate limit held the flips back"
        assert box.states["sprinkler"] == 1

        town.alerts.tick(on.issued_at + 10 * 60 + 1)  # ten minutes later: off, as still wanted
        wait_until(lambda: box.states["sprinkler"] == 0, 15, "the held-back switch off is sent")
        first, off = _rule_commands(db)
        assert off.args == {"output": "sprinkler", "on": False}
        town.alerts.tick(on.issued_at + 30 * 60)
        assert len(_rule_commands(db)) == 2, "nothing more to do"
        switches = [e for e in town.changes.audit.entries(target="heater-1") if e["action"] == "device.switch"]
        assert {e["actor"] for e in switches} == {"rule:Sprinklers at the bridge"}
        assert rule.action.switch.output == "sprinkler"
    finally:
        gauge.stop()
        box.stop()


def test_a_switch_missed_while_offline_goes_again_when_the_device_is_back(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-bridge", "snow_gauge"))
    registry.add_device(DeviceRecord("heater-1", "switch_box"))
    book = AlertBook(db)
    rule = book.add_rule(SPRINKLERS)
    sent = []
    actions = RuleActions(db, send=sent.append)
    now = time.time()
    db.connection.execute("INSERT INTO device_status VALUES ('heater-1', 'offline', ?, '{}')", (now - 60,))
    assert actions.run([rule], now) == [], "a new rule switches nothing until its alert is raised"

    book.raise_alert(rule, "snow-bridge", now, "deep", 6)
    (first,) = actions.run([rule], now)
    assert first.args == {"output": "sprinkler", "on": True} and sent == [first]
    assert actions.run([rule], now + 60) == [], "waiting for the answer"
    assert actions.run([rule], now + 200) == [], "no answer, but the device is still offline"
    assert CommandBook(db).get(first.id, now + 200).status == "no_answer"
    db.connection.execute("UPDATE device_status SET state='online', since=? WHERE device_id='heater-1'", (now + 250,))
    (again,) = actions.run([rule], now + 300)
    assert again.args == first.args and again.id != first.id, "back online: sent again, as still wanted"
    with db.connection:
        CommandBook(db).record_answers(db.connection, [("heater-1", _answer(again.id, "interlock"), now + 301)])
    assert actions.run([rule], now + 900) == [], "a refusal for another reason is the device's word"


def _answer(command_id: str, code: str):
    from jisaku.gateway.commands import Answer

    return Answer(id=command_id, ok=False, code=code, reason="pump_1 is on")


def test_only_switchers_and_admins_may_save_a_rule_that_switches(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    Registry(db).add_device(DeviceRecord("snow-bridge", "snow_gauge"))
    Registry(db).add_device(DeviceRecord("heater-1", "switch_box"))
    accounts = Accounts(db)
    accounts.add("tanaka", "a long operator passphrase", role="operator")
    accounts.add("sato", "a long switcher passphrase", role="switcher")
    app = create_app(tmp_path / "jisaku.db", tiles="osm")

    def client_of(name: str, password: str) -> tuple[TestClient, str]:
        client = TestClient(app)
        csrf = client.post("/api/v1/operator/login", json={"name": name, "password": password}).json()["csrf_token"]
        return client, csrf

    operator, operator_csrf = client_of("tanaka", "a long operator passphrase")
    refused = operator.post("/api/v1/operator/rules", json=SPRINKLERS, headers={"X-CSRF-Token": operator_csrf})
    assert refused.status_code == 403 and "switcher or admin" in refused.json()["detail"]
    page = operator.post("/operator/rules", data={
        "csrf_token": operator_csrf, "name": "x", "scope_is": "device", "scope": "snow-bridge", "type": "above",
        "metric": "depth_cm", "raise_at": "5", "action_device": "heater-1", "action_output": "sprinkler"})
    assert page.status_code == 403

    switcher, switcher_csrf = client_of("sato", "a long switcher passphrase")
    saved = switcher.post("/api/v1/operator/rules", json=SPRINKLERS, headers={"X-CSRF-Token": switcher_csrf})
    assert saved.status_code == 201, saved.text
    rule_id = saved.json()["id"]
    assert saved.json()["action"]["min_interval_min"] == 10
    without = {key: value for key, value in SPRINKLERS.items() if key != "action"}
    assert operator.put(f"/api/v1/operator/rules/{rule_id}", json=without,
                        headers={"X-CSRF-Token": operator_csrf}).status_code == 403, "nor take an action away"
    assert operator.delete(f"/api/v1/operator/rules/{rule_id}",
                           headers={"X-CSRF-Token": operator_csrf}).status_code == 403
    bad = switcher.post("/api/v1/operator/rules", headers={"X-CSRF-Token": switcher_csrf}, json={
        **SPRINKLERS, "action": {"switch": {"device_id": "heater-1", "output": "sprinkler", "on_raise": True,
                                            "on_clear": True}}})
    assert bad.status_code == 422 and "on_raise and on_clear are the same" in json.dumps(bad.json())
    page = switcher.get("/operator/rules?lang=en").text
    assert "then switches sprinkler of heater-1: on when raised, off when cleared (at most every 10 min)" in page
    edit = switcher.get(f"/operator/rules?edit={rule_id}").text
    assert 'name="action_output" value="sprinkler"' in edit


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"], indirect=True)
def test_a_box_that_was_away_refuses_the_stale_switch_and_the_rule_sends_a_fresh_one(make_town):
    """The bridge's switch box loses power while snow falls. The rule's switch waits for it in
    its MQTT session, expires, and is refused when the box is back; the rule, still wanting the
    sprinklers on, sends a fresh one, which the box carries out."""
    town = make_town()
    town.alerts.actions.expires_in_s = 3  # instead of two minutes, so the test need not wait them
    outputs = {"sprinkler": "Sprinklers", "heater": "Road heater"}
    box = SwitchBox.in_town(town, "heater-1", outputs)
    box.start()
    register(town, "snow-bridge", "snow_gauge")
    gauge = town.link("snow-bridge")
    gauge.start()
    db = town.changes.db
    back = None
    try:
        wait_until(lambda: town.store.reading_count("heater-1") >= 1, 15, "the box reports")
        town.changes.add_rule("sato", SPRINKLERS)
        box.stop()
        wait_until(lambda: db.connection.execute("SELECT state FROM device_status WHERE device_id='heater-1'"
                                                 ).fetchone()[0] == "offline", 15, "the box is offline")
        gauge.publish_reading({"depth_cm": 6})
        (stale,) = wait_until(lambda: _rule_commands(db), 15,
                              "6 cm raises the alert and the rule sends its switch to the absent box")
        wait_until(lambda: CommandBook(db).get(stale.id).status == "no_answer", 15, "nobody answers it")

        back = SwitchBox.in_town(town, "heater-1", outputs, new=False)  # power is back
        back.start()

        def sprinklers_on() -> bool:
            town.alerts.tick(time.time())  # the engine's clock, a little faster than its own loop
            return back.states["sprinkler"] == 1
        wait_until(sprinklers_on, 30, "the rule sends a fresh switch and the box carries it out")
        stale = CommandBook(db).get(stale.id)
        assert (stale.status, stale.code) == ("refused", "expired"), "the stale switch reached the box, too late"
        fresh = _rule_commands(db)[-1]
        assert fresh.id != stale.id and fresh.args == {"output": "sprinkler", "on": True}
        wait_until(lambda: CommandBook(db).get(fresh.id).status == "done", 10, "the box answers the fresh one")
        switched_on = wait_until(lambda: [e["v"].get("cmd") for e in town.store.events("heater-1")
                                          if e["event"] == "switched" and e["v"]["output"] == "sprinkler"
                                          and e["v"]["on"] == 1], 10, "the box's switched event is stored")
        assert switched_on == [fresh.id], "only the fresh command moved the relay"
    finally:
        gauge.stop()
        (back or box).stop()
