"""Two towns on one deployment: a town's operators and admins never reach, change or even see the
other town's objects, and a joint body's admin sees both.

Towns ``main`` (A, the first) and ``kita`` (B) each get one of every object: a switch box with an
output and a command, a shelter, a tray on a board with a rollout, a rule, an alert, accounts,
quarantined messages and audit entries. Then, logged in as A's operator and as A's admin, every
operation of the OpenAPI document under /api/v1/operator and every operator page is called with
B's ids in the path and plausible bodies naming B's objects: each answers exactly as for an id
that does not exist, nothing in the database changes, and no list mentions B.
"""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import scope
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.alert_rules import Rule
from jisaku.gateway.alerts import AlertBook
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys
from jisaku.gateway.changes import Changes
from jisaku.gateway.commands import OutputInfo, save_outputs
from jisaku.gateway.db import Database, write
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.towns import Town, Towns
from jisaku.gateway.updates import UpdateBook, save_software

from .test_operator import operator_routes
from .town import REPO

PASSWORD = "a long enough passphrase"
# Tables that change by logging in and asking, not by any change an operator makes.
BOOKKEEPING = ("operator_sessions", "login_failures")


def objects_of(changes: Changes, bundles, town: str, prefix: str) -> dict:
    """One of every object in ``town``, ids starting with ``prefix``; returns their ids."""
    db = changes.db
    actor = f"{prefix}-admin"
    Accounts(db).add(actor, PASSWORD, role="admin", town=town)
    Accounts(db).add(f"{prefix}-op", PASSWORD, role="operator", town=town)
    Accounts(db).add(f"{prefix}-switcher", PASSWORD, role="switcher", town=town)
    heater, shelter, tray = f"{prefix}-heater", f"{prefix}-shelter", f"{prefix}-tray"
    for device_id, kind in ((heater, "switch_box"), (shelter, "shelter"), (tray, "printer_tray")):
        changes.add_device(actor, DeviceRecord(device_id, kind, name=f"{prefix} {kind}", lat=36.1, lon=137.2,
                                               interval_s=60), within=town)
    now = time.time()
    with write(db.connection) as connection:
        save_outputs(connection, heater, {"heater": OutputInfo(name="Road heater")}, now)
        save_software(connection, tray, {"runs_on": "board", "version": "1.0.0"}, now)
        connection.execute("INSERT INTO quarantine (received, topic, payload, reason, detail) VALUES (?, ?, ?, ?, ?)",
                           (now, f"jisaku/{tray}/data", b"hello", "not_json", "not JSON"))
    command = changes.commands.issue(heater, "switch", {"output": "heater", "on": True}, source="operator",
                                     issued_by=actor)
    rule = changes.add_rule(actor, Rule.model_validate({
        "name": f"{prefix} rule", "device_id": tray, "condition": {"type": "no_data", "minutes": 30}}), within=town)
    alert = AlertBook(db).raise_alert(rule, tray, now, f"{prefix} tray is silent", None)
    rollout = UpdateBook(db, bundles).start("printer_tray", "1.4.0", [tray], actor=actor, within=town)
    return {"device_id": heater, "shelter": shelter, "tray": tray, "name": f"{prefix}-op",
            "rule_id": str(rule.id), "alert_id": str(alert.id), "rollout_id": str(rollout.id),
            "command_id": command.id, "output": "heater", "admin": actor, "town": town}


@pytest.fixture(scope="module")
def towns(tmp_path_factory):
    """The app with towns A (main) and B (kita), one of every object each, and a joint body's admin."""
    directory = tmp_path_factory.mktemp("towns")
    app = create_app(directory / "jisaku.db", tiles="osm")
    db = Database(directory / "jisaku.db")
    Towns(db).add(Town("kita", name="Kita Town", name_ja="北町", lat=36.3, lon=137.1, zoom=12))
    make_keys(directory)
    bundle = directory / "printer_tray-1.4.0.bundle"
    build_bundle(REPO / "kinds" / "printer_tray" / "board", "1.4.0", "printer_tray", "board",
                 load_private_key(directory), bundle)
    app.state.bundles.publish(bundle, "kanri")
    changes = Changes(db)
    a = objects_of(changes, app.state.bundles, "main", "minami")
    b = objects_of(changes, app.state.bundles, "kita", "kita")
    Accounts(db).add("kanri", PASSWORD, role="admin", town=None)  # the joint body's
    return app, db, a, b


GHOST = {"device_id": "ghost-9", "shelter": "ghost-8", "tray": "ghost-7", "name": "ghost-op", "rule_id": "987654",
         "alert_id": "987653", "rollout_id": "987652", "command_id": "c-ghost00000", "output": "heater",
         "town": "ghost-town"}


def login(app, name: str) -> tuple[TestClient, str]:
    client = TestClient(app)
    answer = client.post("/api/v1/operator/login", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return client, answer.json()["csrf_token"]


def dump(db: Database) -> list[str]:
    """Every row of every table, as SQL, but the login bookkeeping."""
    return [line for line in db.connection.iterdump()
            if not any(f'"{table}"' in line or f" {table} " in line for table in BOOKKEEPING)]


def fill(path: str, ids: dict) -> str:
    """The path with ``ids``' values; a shelter's path gets the shelter, a rollout's device the tray."""
    if "/shelters/" in path:
        ids = {**ids, "device_id": ids["shelter"]}
    if path.endswith("/updates") or "/picture" in path:
        ids = {**ids, "device_id": ids["tray"]}
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def body(method: str, path: str, ids: dict) -> dict | None:
    """A plausible body for the operation, naming ``ids``' objects."""
    rule = {"name": "watch it", "device_id": ids["tray"], "condition": {"type": "no_data", "minutes": 5}}
    bodies = {
        ("POST", "/api/v1/operator/devices"): {"id": "new-device-1", "kind": "snow_gauge", "town": ids["town"]},
        ("PATCH", "/api/v1/operator/devices/{device_id}"): {"name": "renamed"},
        ("POST", "/api/v1/operator/devices/{device_id}/settings"): {"settings": {"left_after_s": 45}},
        ("PUT", "/api/v1/operator/devices/{device_id}/picture-mask"): {"areas": [[0.1, 0.1, 0.2, 0.2]]},
        ("POST", "/api/v1/operator/devices/{device_id}/outputs/{output}"): {"on": True, "confirm": True},
        ("POST", "/api/v1/operator/users"): {"name": "someone-new", "password": PASSWORD, "town": ids["town"]},
        ("PATCH", "/api/v1/operator/users/{name}"): {"role": "admin", "disabled": True},
        ("POST", "/api/v1/operator/rules"): rule,
        ("PUT", "/api/v1/operator/rules/{rule_id}"): rule,
        ("POST", "/api/v1/operator/rollouts"): {"kind": "printer_tray", "version": "1.4.0", "devices": [ids["tray"]]},
        ("PUT", "/api/v1/operator/shelters/{device_id}/open"): {"open": True},
        ("POST", "/api/v1/operator/devices/{device_id}/promote"): {"keep_history": True},
        ("PUT", "/api/v1/operator/disaster-mode"): {"on": True, "town": ids["town"]},
    }
    return bodies.get((method, path))


# Operations that name no object and change nothing of another town's; each has its own tests.
NOT_NAMING = {("POST", "/api/v1/operator/login"), ("POST", "/api/v1/operator/logout"),
              ("POST", "/api/v1/operator/bundles")}  # bundles are the deployment's


def api_operations(app) -> list[tuple[str, str]]:
    operations = []
    for path, methods in app.openapi()["paths"].items():
        if path.startswith("/api/v1/operator"):
            operations += [(method.upper(), path) for method in methods if method in ("get", "post", "put",
                                                                                       "patch", "delete")]
    return operations


def words(answer, ids: dict) -> str:
    """The answer's text with the ids it was asked about made alike (whole ids only: "12" in "120" stays)."""
    text = answer.text
    for value in sorted(set(ids.values()) - {"heater"}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", "<id>", text)
    return text


def b_strings(b: dict) -> list[str]:
    return [b["device_id"], b["shelter"], b["tray"], b["name"], b["admin"], "kita rule", "kita-switcher",
            b["command_id"], "kita tray is silent"]


@pytest.mark.parametrize("account", ["minami-op", "minami-admin"])
def test_a_towns_account_gets_for_every_api_operation_on_the_other_towns_objects_what_a_missing_one_gets(
        towns, account):
    app, db, a, b = towns
    client, token = login(app, account)
    headers = {"X-CSRF-Token": token}
    operations = api_operations(app)
    assert len(operations) > 25
    before = dump(db)
    walked = 0
    for method, path in operations:
        if (method, path) in NOT_NAMING:
            continue
        if "{" not in path and body(method, path, b) is None:
            continue  # a list: below
        answers = {}
        for name, ids in (("B", b), ("ghost", GHOST)):
            answers[name] = client.request(method, fill(path, ids), json=body(method, path, ids), headers=headers)
        got, missing = answers["B"], answers["ghost"]
        assert got.status_code in (400, 403, 404), f"{account} {method} {path} with B's ids: {got.status_code} {got.text}"
        assert (got.status_code, words(got, b)) == (missing.status_code, words(missing, GHOST)), \
            f"{account} {method} {path}: B's object answers otherwise than a missing one"
        walked += 1
    assert walked > 15
    # A wrong body must not tell either: B's object and a missing one get the same refusal.
    for method, path in operations:
        if method in ("POST", "PUT", "PATCH") and "{" in path and (method, path) not in NOT_NAMING:
            got, missing = (client.request(method, fill(path, ids), json=["not", "a", "body"], headers=headers)
                            for ids in (b, GHOST))
            assert (got.status_code, words(got, b)) == (missing.status_code, words(missing, GHOST)), \
                f"{account} {method} {path} with a wrong body: B's object answers otherwise than a missing one"
    assert dump(db) == before, "something of B's (or anything) changed"

    # Lists: of A's town only.
    for method, path in operations:
        if method != "GET" or "{" in path:
            continue
        answer = client.get(path, headers=headers)
        if answer.status_code == 403:
            continue  # an admin's list, for the operator
        assert answer.status_code == 200, f"{account} GET {path}: {answer.status_code}"
        for text in b_strings(b):
            assert text not in answer.text, f"{account} GET {path} shows B's {text}"
    devices = {d["id"] for d in client.get("/api/v1/operator/devices").json()}
    assert devices == {a["device_id"], a["shelter"], a["tray"]}
    assert {r["name"] for r in client.get("/api/v1/operator/rules").json()} == {"minami rule"}
    assert {x["device_id"] for x in client.get("/api/v1/operator/alerts").json()} == {a["tray"]}
    assert {s["id"] for s in client.get("/api/v1/operator/shelters").json()["shelters"]} == {a["shelter"]}
    assert {e["town"] for e in client.get("/api/v1/operator/audit").json()} == {"main"}
    assert [r["id"] for r in client.get("/api/v1/operator/rollouts").json()] == [int(a["rollout_id"])]


def test_a_towns_account_gets_not_found_on_every_operator_page_of_the_other_towns_objects(towns):
    app, db, a, b = towns
    for account in ("minami-op", "minami-admin"):
        client = TestClient(app)
        client.post("/api/v1/operator/login", json={"name": account, "password": PASSWORD})
        token = client.get("/api/v1/operator/me").json()["csrf_token"]
        before = dump(db)
        walked = 0
        for method, path in operator_routes(app):
            if not path.startswith("/operator") or "{" not in path:
                continue
            answers = {}
            for name, ids in (("B", b), ("ghost", GHOST)):
                form = {"csrf_token": token, "confirm": "yes", "open": "1", "on": "1", "role": "admin",
                        "name": "renamed", "kind": ids.get("kind", "switch_box"), "type": "no_data", "minutes": "5",
                        "scope_is": "device", "scope": ids["tray"]}
                answers[name] = client.request(method, fill(path, ids), data=form if method == "POST" else None,
                                               follow_redirects=False)
            got, missing = answers["B"], answers["ghost"]
            assert got.status_code in (303, 403, 404), f"{account} {method} {path}: {got.status_code}"
            assert got.status_code == missing.status_code, f"{account} {method} {path}: not as a missing object"
            if got.status_code == 404:
                assert "not found" in got.text.lower() or "見つかりません" in got.text
            walked += 1
        assert walked > 12
        assert dump(db) == before
        for page in ("/operator/devices", "/operator/alerts", "/operator/rules", "/operator/audit",
                     "/operator/shelters", "/operator/updates", "/operator/quarantine", "/operator/users"):
            text = client.get(page).text
            for value in b_strings(b):
                assert value not in text, f"{account} {page} shows B's {value}"


def test_a_joint_bodys_admin_sees_and_reaches_both_towns(towns):
    app, db, a, b = towns
    client, token = login(app, "kanri")
    devices = {d["id"]: d["town"] for d in client.get("/api/v1/operator/devices").json()}
    assert devices[a["device_id"]] == "main" and devices[b["device_id"]] == "kita"
    assert {"minami rule", "kita rule"} <= {r["name"] for r in client.get("/api/v1/operator/rules").json()}
    assert {a["name"], b["name"]} <= {u["name"] for u in client.get("/api/v1/operator/users").json()}
    assert {"main", "kita"} <= {e["town"] for e in client.get("/api/v1/operator/audit").json()}
    assert len(client.get("/api/v1/operator/rollouts").json()) == 2
    for ids in (a, b):
        assert client.get(f"/api/v1/operator/devices/{ids['device_id']}").status_code == 200
        assert client.get(f"/api/v1/operator/rollouts/{ids['rollout_id']}").status_code == 200
        assert client.get(f"/api/v1/operator/commands/{ids['command_id']}").status_code == 200
        assert client.get(f"/operator/devices/{ids['tray']}").status_code == 200
    # It names the town of what it adds; a device added without one goes to the first town.
    made = client.post("/api/v1/operator/devices", json={"id": "kita-gauge", "kind": "snow_gauge", "town": ids["town"]},
                       headers={"X-CSRF-Token": token})
    assert made.status_code == 201 and made.json()["device"]["town"] == "kita"
    users = client.post("/api/v1/operator/users", json={"name": "kita-new", "password": PASSWORD, "town": ids["town"]},
                        headers={"X-CSRF-Token": token})
    assert users.status_code == 201 and users.json()["town"] == "kita"
    joint = client.post("/api/v1/operator/users", json={"name": "kanri-2", "password": PASSWORD, "all_towns": True},
                        headers={"X-CSRF-Token": token})
    assert joint.status_code == 201 and joint.json()["town"] is None
    # Each change's audit entry has the town of what was changed, whoever made it.
    entries = {(e["action"], e["target"]): e["town"] for e in client.get("/api/v1/operator/audit").json()}
    assert entries[("device.add", "kita-gauge")] == "kita"
    assert entries[("user.add", "kita-new")] == "kita" and entries[("user.add", "kanri-2")] is None
    # B's admin sees the new device and account; A's does not.
    kita, _ = login(app, "kita-admin")
    assert "kita-gauge" in {d["id"] for d in kita.get("/api/v1/operator/devices").json()}
    assert "kita-new" in {u["name"] for u in kita.get("/api/v1/operator/users").json()}
    assert "kanri-2" not in {u["name"] for u in kita.get("/api/v1/operator/users").json()}
    minami, _ = login(app, "minami-admin")
    assert "kita-gauge" not in minami.get("/api/v1/operator/devices").text


def test_a_towns_account_adds_to_its_own_town_and_cannot_name_another(towns):
    app, db, a, b = towns
    client, token = login(app, "kita-op")
    headers = {"X-CSRF-Token": token}
    made = client.post("/api/v1/operator/devices", json={"id": "kita-gauge-2", "kind": "snow_gauge"}, headers=headers)
    assert made.status_code == 201 and made.json()["device"]["town"] == "kita"
    other = client.post("/api/v1/operator/devices", json={"id": "kita-gauge-3", "kind": "snow_gauge", "town": "main"},
                        headers=headers)
    nowhere = client.post("/api/v1/operator/devices", json={"id": "kita-gauge-3", "kind": "snow_gauge",
                                                            "town": "nowhere"}, headers=headers)
    assert other.status_code == nowhere.status_code == 400
    assert other.json()["detail"].replace("main", "X") == nowhere.json()["detail"].replace("nowhere", "X")
    # A rule for every device of a kind watches its own town's only.
    rule = client.post("/api/v1/operator/rules", headers=headers, json={
        "name": "every tray", "kind": "printer_tray", "condition": {"type": "no_data", "minutes": 60}})
    assert rule.status_code == 201 and rule.json()["town"] == "kita"
    admin, admin_token = login(app, "kita-admin")
    joint = admin.post("/api/v1/operator/users", json={"name": "kita-joint", "password": PASSWORD, "all_towns": True},
                       headers={"X-CSRF-Token": admin_token})
    assert joint.status_code == 400 and "every town" in joint.json()["detail"]
    assert Accounts(db).get("kita-joint") is None


def test_every_operator_route_is_guarded_and_every_path_parameter_placed(towns):
    """A new route's path parameter must be placed in scope.OBJECTS (or PARTS), else town accounts are
    refused it; and every operator route but logging in has the guard."""
    app = towns[0]
    from fastapi.routing import iter_route_contexts

    for context in iter_route_contexts(app.routes):
        path = context.path
        if not (path.startswith("/operator") or path.startswith("/api/v1/operator")):
            continue
        for param in re.findall(r"\{(\w+)", path):
            assert param in scope.OBJECTS or param in scope.PARTS, f"{path}: which town is a {param}'s?"
        calls = {getattr(d.dependency, "__name__", "") for d in context.dependencies}
        if path.endswith("/login"):
            continue
        assert "guard" in calls, f"{path} has no town guard"


def test_no_refusal_tells_another_towns_object_from_a_missing_one(towns):
    """The answers that come before looking the object up (a switch not confirmed, a rule that
    switches, by a plain operator) come after it, so they cannot be used to probe."""
    app, db, a, b = towns
    client, token = login(app, "minami-op")
    headers = {"X-CSRF-Token": token}
    action = {"switch": {"device_id": b["device_id"], "output": "heater"}}
    probes = [
        ("POST", "/api/v1/operator/devices/{device_id}/outputs/heater", {"on": True, "confirm": False}),
        ("PUT", "/api/v1/operator/rules/{rule_id}", {"name": "x", "kind": "printer_tray", "action": action,
                                                    "condition": {"type": "no_data", "minutes": 5}}),
        ("DELETE", "/api/v1/operator/rules/{rule_id}", None),
    ]
    switcher, switcher_token = login(app, "minami-switcher")
    before = dump(db)
    for who, headers in ((client, headers), (switcher, {"X-CSRF-Token": switcher_token})):
        for method, path, payload in probes:
            got = who.request(method, fill(path, b), json=payload, headers=headers)
            missing = who.request(method, fill(path, GHOST), json=payload, headers=headers)
            assert (got.status_code, words(got, b)) == (missing.status_code, words(missing, GHOST)), \
                f"{method} {path}: {got.status_code} {got.text} / {missing.status_code} {missing.text}"
    # A rule of A's town that would switch B's box: as if the box did not exist.
    rule = {"name": "x", "kind": "printer_tray", "condition": {"type": "no_data", "minutes": 5}}
    got = switcher.post("/api/v1/operator/rules", json={**rule, "action": action},
                        headers={"X-CSRF-Token": switcher_token})
    missing = switcher.post("/api/v1/operator/rules", headers={"X-CSRF-Token": switcher_token}, json={
        **rule, "action": {"switch": {"device_id": GHOST["device_id"], "output": "heater"}}})
    assert got.status_code == missing.status_code == 400 and words(got, b) == words(missing, GHOST)
    assert dump(db) == before


def test_a_rule_for_every_device_of_a_kind_watches_its_own_towns_devices_only(tmp_path):
    from jisaku.contract.protocol import Reading
    from jisaku.gateway.alert_engine import AlertEngine
    from jisaku.gateway.registry import Registry
    from jisaku.gateway.store import Batch

    db = Database(tmp_path / "jisaku.db")
    Towns(db).add(Town("kita"))
    changes = Changes(db)
    changes.add_device("cli:test", DeviceRecord("main-snow", "snow_gauge"))
    changes.add_device("cli:test", DeviceRecord("kita-snow", "snow_gauge"), within="kita")
    engine = AlertEngine(db, Registry(db))
    changes.alerts = engine
    rule = changes.add_rule("kita-op", {"name": "Deep snow in Kita", "kind": "snow_gauge", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30}}, within="kita")
    assert rule.town == "kita"
    now = time.time()
    for device_id in ("main-snow", "kita-snow"):
        engine.on_batch(Batch(readings=[(device_id, Reading(now, 1, {"depth_cm": 40.0}))]))
    assert [alert.device_id for alert in AlertBook(db).alerts()] == ["kita-snow"]
    assert [alert.device_id for alert in AlertBook(db).alerts(town="main")] == []


def test_a_joint_bodys_admin_chooses_the_town_on_the_pages(towns):
    app, db, a, b = towns
    client, token = login(app, "kanri")
    form = client.get("/operator/devices/new").text
    assert 'name="town"' in form and 'value="kita"' in form
    added = client.post("/operator/devices/new", data={"csrf_token": token, "id": "kita-page-1", "kind": "snow_gauge",
                                                       "public": "1", "town": "kita"})
    assert added.status_code == 200 and Towns(db).of_device("kita-page-1") == "kita"
    made = client.post("/operator/users", data={"csrf_token": token, "name": "kanri-page", "password": PASSWORD,
                                                "role": "operator", "town": "*"}, follow_redirects=False)
    assert made.status_code == 303 and Accounts(db).get("kanri-page").town is None
    # A town's admin has no choice: the form has no town, and what it adds is its own town's.
    kita, kita_token = login(app, "kita-admin")
    assert 'name="town"' not in kita.get("/operator/devices/new").text
    made = kita.post("/operator/users", data={"csrf_token": kita_token, "name": "kita-page", "password": PASSWORD,
                                              "role": "operator"}, follow_redirects=False)
    assert made.status_code == 303 and Accounts(db).get("kita-page").town == "kita"
