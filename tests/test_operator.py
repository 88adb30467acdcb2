"""The operator pages and API: who gets in, CSRF, login limits, the audit log, and a
threshold changed on the web page reaching a running (simulated) printer tray."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import ConfigPublisher
from jisaku.device.config import load_device_config
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry

from .town import KINDS, wait_until

PASSWORD = "correct horse battery staple"
OPERATOR_PASSWORD = "another long passphrase"
# The only operator routes anyone may call without a session.
PUBLIC = {("GET", "/operator/login"), ("POST", "/operator/login"), ("POST", "/api/v1/operator/login")}


@pytest.fixture
def app(tmp_path):
    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    db = Database(tmp_path / "jisaku.db")
    accounts = Accounts(db)
    accounts.add("admin", PASSWORD, role="admin")
    accounts.add("suzuki", OPERATOR_PASSWORD, role="operator")
    Registry(db).add_device(DeviceRecord("tray-1", "printer_tray", name="Counter printer", interval_s=60))
    return app


def operator_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every operator page and API route the app has."""
    try:  # FastAPI 0.120+: included routers are resolved lazily
        from fastapi.routing import iter_route_contexts
        routes = [(route.path, route.methods) for route in iter_route_contexts(app.routes)]
    except ImportError:
        routes = [(route.path, route.methods) for route in app.routes if isinstance(route, APIRoute)]
    found = []
    for path, methods in routes:
        if methods and path and (path.startswith("/operator") or path.startswith("/api/v1/operator")):
            found += [(method, path) for method in sorted(methods)]
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{device_id\}", "tray-1", re.sub(r"\{name\}", "suzuki", re.sub(r"\{rule_id\}|\{alert_id\}|\{rollout_id\}", "1", path)))


def page_login(client: TestClient, name: str = "admin", password: str = PASSWORD) -> str:
    """Log in through the login form; returns the session's CSRF token from the next page."""
    form = client.get("/operator/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    answer = client.post("/operator/login", data={"name": name, "password": password, "csrf_token": token,
                                                  "next": "/operator/devices"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/operator/devices").text)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def api_login(client: TestClient, name: str = "admin", password: str = PASSWORD) -> str:
    answer = client.post("/api/v1/operator/login", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.json()["csrf_token"]


def test_every_operator_route_needs_a_session(app):
    routes = operator_routes(app)
    assert len(routes) > 20
    assert PUBLIC <= set(routes)
    client = TestClient(app)
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        answer = client.request(method, concrete(path), follow_redirects=False)
        if path.startswith("/api/"):
            assert answer.status_code == 401, f"{method} {path} answered {answer.status_code} without a session"
        else:
            assert answer.status_code == 303, f"{method} {path} answered {answer.status_code} without a session"
            assert answer.headers["location"].startswith("/operator/login")


def test_an_operator_is_refused_the_admin_pages_but_sees_the_rest(app):
    client = TestClient(app)
    token = page_login(client, "suzuki", OPERATOR_PASSWORD)
    for method, path in operator_routes(app):
        if (method, path) in PUBLIC:
            continue
        # Accounts, and publishing or offering updates, are for admins.
        admin_only = "/users" in path or (method == "POST" and any(part in path for part in (
            "/bundles", "/rollouts", "/operator/updates")))
        # Switching, and following commands, takes the role switcher or admin.
        switcher_only = "/commands" in path or "/outputs/" in path
        if method == "GET":
            answer = client.get(concrete(path), follow_redirects=False)
            if admin_only or switcher_only:
                assert answer.status_code == 403, f"an operator could open {path}"
            elif "{rollout_id}" in path:  # no update was ever offered here
                assert answer.status_code == 404 and "rollout 1" in answer.text, f"GET {path}: {answer.status_code}"
            elif path.endswith("/pictures/newest"):  # tray-1 takes no pictures: allowed, and says so
                assert answer.status_code == 404 and "no picture" in answer.text, f"GET {path}: {answer.status_code}"
            else:
                assert answer.status_code in (200, 303), f"GET {path}: {answer.status_code}"
        elif admin_only:
            answer = client.request(method, concrete(path), headers={"X-CSRF-Token": token},
                                    data={"name": "intruder", "password": "x" * 12, "role": "admin"})
            assert answer.status_code == 403, f"an operator could {method} {path}"
        elif switcher_only:
            answer = client.request(method, concrete(path), headers={"X-CSRF-Token": token},
                                    json={"on": True, "confirm": True})
            assert answer.status_code == 403, f"an operator could {method} {path}"
    assert Accounts(app.state.registry.db).get("intruder") is None
    assert Accounts(app.state.registry.db).get("suzuki").role == "operator"
    assert "Accounts" not in client.get("/operator/devices?lang=en").text, "no link to a page they cannot open"


def test_a_change_without_the_csrf_token_is_refused_even_when_logged_in(app):
    client = TestClient(app)
    token = page_login(client)
    changing = [(m, p) for m, p in operator_routes(app) if m not in ("GET", "HEAD") and (m, p) not in PUBLIC]
    assert len(changing) > 10
    for method, path in changing:
        for headers in ({}, {"X-CSRF-Token": "forged-" + token[7:]}):
            answer = client.request(method, concrete(path), headers=headers,
                                    data={"id": "evil-1", "kind": "bus", "confirm": "yes", "setting.left_after_s": "5"},
                                    follow_redirects=False)
            assert answer.status_code == 403, f"{method} {path} without the CSRF token: {answer.status_code}"
    registry = app.state.registry
    assert registry.get("evil-1") is None and not registry.is_revoked("tray-1")
    assert client.get("/operator/devices").status_code == 200, "still logged in: logout needs the token too"
    # With the token, the same form works.
    added = client.post("/operator/devices/new", data={"csrf_token": token, "id": "snow-9", "kind": "snow_gauge",
                                                        "name": "Pass", "public": "1", "lat": "36.1", "lon": "137.2"})
    assert added.status_code == 200 and registry.get("snow-9").lat == 36.1


def test_login_is_limited_after_five_wrong_passwords(app):
    client = TestClient(app)
    for _ in range(5):
        assert client.post("/api/v1/operator/login", json={"name": "admin", "password": "guess"}).status_code == 401
    refused = client.post("/api/v1/operator/login", json={"name": "admin", "password": PASSWORD})
    assert refused.status_code == 429, "even the right password waits"
    assert "wait 15 minutes" in refused.json()["detail"]
    page = client.get("/operator/login?lang=en")
    answer = client.post("/operator/login", data={"name": "admin", "password": PASSWORD,
                                                  "csrf_token": csrf_of(page.text)})
    assert answer.status_code == 429 and "Wait 15 minutes" in answer.text
    japanese = client.post("/operator/login?lang=ja", data={"name": "admin", "password": PASSWORD,
                                                            "csrf_token": csrf_of(page.text)})
    assert "15 分待って" in japanese.text
    # Another account from the same address is not locked out by that.
    assert client.post("/api/v1/operator/login",
                       json={"name": "suzuki", "password": OPERATOR_PASSWORD}).status_code == 200


def test_the_login_form_needs_its_own_token(app):
    client = TestClient(app)
    answer = client.post("/operator/login", data={"name": "admin", "password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 403
    assert client.get("/api/v1/operator/me").status_code == 401


def test_passwords_are_kept_as_argon2_hashes_and_a_wrong_one_is_refused(app, tmp_path):
    db = app.state.registry.db
    stored = db.connection.execute("SELECT password_hash FROM users WHERE name='admin'").fetchone()[0]
    assert stored.startswith("$argon2id$")
    assert PASSWORD.encode() not in (tmp_path / "jisaku.db").read_bytes()
    accounts = Accounts(db)
    assert accounts.verify("admin", PASSWORD).role == "admin"
    assert accounts.verify("admin", PASSWORD + "x") is None
    assert accounts.verify("nobody", PASSWORD) is None
    client = TestClient(app)
    assert client.post("/api/v1/operator/login", json={"name": "admin", "password": "wrong one"}).status_code == 401
    # A disabled account cannot log in, and its open session ends.
    suzuki = TestClient(app)
    api_login(suzuki, "suzuki", OPERATOR_PASSWORD)
    token = api_login(client)
    assert client.patch("/api/v1/operator/users/suzuki", json={"disabled": True},
                        headers={"X-CSRF-Token": token}).json()["disabled"] is True
    assert suzuki.get("/api/v1/operator/devices").status_code == 401
    assert suzuki.post("/api/v1/operator/login",
                       json={"name": "suzuki", "password": OPERATOR_PASSWORD}).status_code == 401


def test_session_cookie_is_httponly_and_samesite_strict(app):
    client = TestClient(app)
    answer = client.post("/api/v1/operator/login", json={"name": "admin", "password": PASSWORD})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    token = answer.json()["csrf_token"]
    assert client.post("/api/v1/operator/logout", headers={"X-CSRF-Token": token}).status_code == 204
    assert client.get("/api/v1/operator/devices").status_code == 401


def test_every_change_is_in_the_audit_log_with_before_and_after_and_no_secret(app):
    client = TestClient(app)
    headers = {"X-CSRF-Token": api_login(client)}
    added = client.post("/api/v1/operator/devices", headers=headers, json={
        "id": "bus-7", "kind": "bus", "name": "Bus 7", "interval_s": 10})
    assert added.status_code == 201, added.text
    first_secret = added.json()["secret"]
    assert app.state.registry.check_credentials("bus-7", first_secret)
    assert first_secret in added.json()["snippets"]["traccar_url"]
    assert client.patch("/api/v1/operator/devices/bus-7", headers=headers,
                        json={"public": False, "name": "Bus 7 (depot)"}).json()["public"] is False
    rotated = client.post("/api/v1/operator/devices/bus-7/rotate", headers=headers).json()["secret"]
    assert not app.state.registry.check_credentials("bus-7", first_secret)
    assert app.state.registry.check_credentials("bus-7", rotated)
    assert client.post("/api/v1/operator/devices/bus-7/revoke", headers=headers).json()["state"] == "revoked"
    assert not app.state.registry.check_credentials("bus-7", rotated)
    assert client.post("/api/v1/operator/users", headers=headers, json={
        "name": "sato", "password": "sato's long password", "role": "operator"}).status_code == 201

    entries = client.get("/api/v1/operator/audit").json()
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("admin", "user.add", "sato"), ("admin", "device.revoke", "bus-7"),
        ("admin", "device.rotate_secret", "bus-7"), ("admin", "device.update", "bus-7"),
        ("admin", "device.add", "bus-7")]
    update = entries[3]
    assert update["before"] == {"public": True, "name": "Bus 7"}
    assert update["after"] == {"public": False, "name": "Bus 7 (depot)"}
    assert entries[-1]["before"] is None and entries[-1]["after"]["kind"] == "bus"
    everything = json.dumps(entries)
    for secret in (first_secret, rotated, "sato's long password"):
        assert secret not in everything

    exported = client.get("/api/v1/operator/audit.csv")
    assert exported.headers["content-disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert [r["action"] for r in rows] == [e["action"] for e in entries]
    assert json.loads(rows[3]["after"]) == {"public": False, "name": "Bus 7 (depot)"}
    assert client.get("/api/v1/operator/audit.json").json() == entries
    page = client.get("/operator/audit?target=bus-7&lang=en").text
    assert "secret taken away" in page and "sato" not in page


def test_settings_outside_the_devices_limits_are_refused_before_sending(app):
    client = TestClient(app)
    token = page_login(client)
    page = client.get("/operator/devices/tray-1?lang=en").text
    assert 'name="setting.left_after_s" min="1" max="3600"' in page
    answer = client.post("/operator/devices/tray-1/settings?lang=en",
                         data={"csrf_token": token, "setting.left_after_s": "-5"})
    assert answer.status_code == 400
    assert "left_after_s must be a number from 1 to 3600" in answer.text
    assert app.state.store.config_state("tray-1") is None, "nothing was sent"
    assert client.post("/api/v1/operator/devices/tray-1/settings", headers={"X-CSRF-Token": token},
                       json={"settings": {"samples": 3}}).status_code == 400


def test_users_command_adds_an_account_that_can_log_in(tmp_path):
    env = {**os.environ, "JISAKU_DATA": str(tmp_path)}
    command = [sys.executable, "-m", "jisaku.cli", "users", "add", "tanaka", "--role", "admin"]
    done = subprocess.run(command, input="my long passphrase\n", env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "my long passphrase" not in done.stdout + done.stderr
    short = subprocess.run(command[:5] + ["kato"], input="short\n", env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert short.returncode != 0 and "at least 10 characters" in short.stderr
    listed = subprocess.run(command[:4] + ["list"], env=env, capture_output=True, text=True, cwd=tmp_path).stdout
    assert "tanaka" in listed and "admin" in listed and "kato" not in listed

    client = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm"))
    api_login(client, "tanaka", "my long passphrase")
    assert client.get("/api/v1/operator/audit").json()[0]["action"] == "user.add"


def test_pages_speak_japanese_and_english(app, tmp_path):
    Registry(Database(tmp_path / "jisaku.db")).add_device(
        DeviceRecord("snow-1", "snow_gauge", name="Snow gauge, city hall", name_ja="積雪計（市役所）"))
    client = TestClient(app)
    page_login(client)
    japanese = client.get("/operator/devices?lang=ja").text
    assert "機器" in japanese and "積雪計（市役所）" in japanese
    assert "Counter printer" in japanese, "a device with no Japanese name keeps its name"
    assert "<h1>積雪計（市役所）" in client.get("/operator/devices/snow-1").text
    english = client.get("/operator/devices?lang=en").text
    assert "Devices" in english and "Not heard from yet" in english
    assert "Snow gauge, city hall" in english and "積雪計" not in english
    assert "<h1>Snow gauge, city hall" in client.get("/operator/devices/snow-1").text


def test_a_threshold_changed_on_the_page_reaches_the_running_tray(make_town):
    tray = load_device_config(KINDS / "printer_tray")
    town = make_town([tray])
    Accounts(town.registry.db).add("admin", PASSWORD, role="admin")
    publisher = ConfigPublisher(town.broker_url, "_tester", town.tester_secret)
    try:
        app = create_app(town.db_path, tiles="osm", config_publisher=publisher)
        client = TestClient(app)
        town.run_devices()
        wait_until(lambda: town.store.reading_count("tray-1") >= 1, 15, "the tray reports")
        token = page_login(client)
        page = client.get("/operator/devices?lang=en").text
        assert re.search(r'data-device-id="tray-1".*?Running', page, re.S), "the tray is shown running"

        answer = client.post("/operator/devices/tray-1/settings?lang=en",
                             data={"csrf_token": token, "setting.left_after_s": "45"})
        assert answer.status_code == 200, answer.text  # after the redirect to the device page
        wait_until(lambda: "applied" in client.get("/operator/devices/tray-1?lang=en").text, 10,
                   "the device page shows the new settings applied")
        page = client.get("/operator/devices/tray-1?lang=en").text
        assert 'id="config-state">revision 1: <span class="state state-applied' in page
        assert 'value="45"' in page
        saved = json.loads((town.directory / "devices" / "tray-1" / "settings.json").read_text())
        assert saved == {"left_after_s": 45}, "the running tray took it"
        entry = client.get("/api/v1/operator/audit").json()[0]
        assert entry["action"] == "device.settings" and entry["after"] == {"rev": 1, "settings": {"left_after_s": 45}}
    finally:
        publisher.stop()


def test_a_rule_is_added_on_the_page_and_an_alert_marked_as_seen(app):
    client = TestClient(app)
    token = page_login(client)
    refused = client.post("/operator/rules?lang=en", data={
        "csrf_token": token, "name": "Deep snow", "scope_is": "kind", "scope": "snow_gauge", "type": "above",
        "metric": "depth_cm", "raise_at": "30", "clear_at": "35", "enabled": "1"})
    assert refused.status_code == 400 and "clear_at (35) must be at or below raise_at (30)" in refused.text
    added = client.post("/operator/rules?lang=en", data={
        "csrf_token": token, "name": "Deep snow", "scope_is": "kind", "scope": "snow_gauge", "type": "above",
        "metric": "depth_cm", "raise_at": "30", "clear_at": "25", "enabled": "1"})
    assert added.status_code == 200 and "depth_cm ≥ 30 (clears below 25)" in added.text
    book = app.state.operator_alerts
    rule = book.rules()[0]
    assert rule.kind == "snow_gauge" and rule.condition.raise_at == 30

    Registry(app.state.registry.db).add_device(DeviceRecord("snow-1", "snow_gauge"))
    # What the gateway's engine does when a gauge reads 31 cm:
    alert = book.raise_alert(rule, "snow-1", 1.0e9, ("above", {"metric": "depth_cm", "value": 31, "level": 30}), 31)
    page = client.get("/operator/alerts?lang=en").text
    assert f'data-alert-id="{alert.id}"' in page and "depth_cm 31 ≥ 30" in page
    seen = client.post(f"/operator/alerts/{alert.id}/acknowledge?lang=en", data={"csrf_token": token})
    assert "Seen by admin" in seen.text
    assert book.alert(alert.id).acknowledged_by == "admin"
    japanese = client.get("/operator/alerts?lang=ja").text
    assert "depth_cm が 31（30 以上）" in japanese and "admin さんが確認しました" in japanese

    deleted = client.post(f"/operator/rules/{rule.id}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert deleted.status_code == 200 and book.rules() == []
    actions = [(e["action"], e["target"]) for e in client.get("/api/v1/operator/audit").json()]
    assert actions[:3] == [("rule.delete", str(rule.id)), ("alert.acknowledge", str(alert.id)),
                           ("rule.add", str(rule.id))]


def test_every_word_on_the_operator_pages_is_in_both_catalogs():
    from jisaku.dashboard import i18n
    from jisaku.dashboard.operator import pages

    used = set()
    for template in (pages.TEMPLATES / "operator").glob("*.html"):
        used |= set(re.findall(r"""t\(\s*["'](op\.[a-z0-9_.]+)["']""", template.read_text(encoding="utf-8")))
    used = {key for key in used if not key.endswith((".", "_"))}  # t("op.state." ~ d.state): built keys
    assert len(used) > 100
    for lang in i18n.LANGUAGES:
        missing = sorted(key for key in used if key not in i18n.catalog(lang))
        assert not missing, f"missing in operator.{lang}.json: {missing}"


def test_device_list_tells_running_from_silent_and_shows_battery_firmware_and_rejected_messages(app):
    import time

    from jisaku.contract.protocol import Reading, Status
    from jisaku.gateway.store import Batch, Quarantined

    registry, store = app.state.registry, app.state.store
    registry.add_device(DeviceRecord("snow-1", "snow_gauge", name="Town hall gauge", interval_s=600))
    registry.add_device(DeviceRecord("bus-1", "bus", name="Loop bus", interval_s=5))
    now = time.time()
    store.write(Batch(
        readings=[("tray-1", Reading(now - 10, 1, {"paper": 0})),
                  ("snow-1", Reading(now - 3 * 3600, 1, {"depth_cm": 12.0})),   # 18 intervals ago
                  ("bus-1", Reading(now - 3, 1, {"lat": 36.1, "lon": 137.2, "battery_pct": 81.0}))],
        statuses=[("tray-1", Status("online", {"fw": "0.1.0"}), now - 60),
                  ("snow-1", Status("online", {"fw": "0.1.0"}), now - 4 * 3600),
                  ("bus-1", Status("offline"), now)],
        quarantined=[Quarantined("jisaku/ghost-1/data", b'{"seq": 1}', "unknown_device", "not registered", now),
                     Quarantined("jisaku/tray-1/data", b"hello", "not_json", "not JSON", now),
                     Quarantined("jisaku/tray-1/data", b"again", "not_json", "not JSON", now)]))
    client = TestClient(app)
    token = api_login(client)
    states = {d["id"]: d for d in client.get("/api/v1/operator/devices", headers={"X-CSRF-Token": token}).json()}
    assert states["tray-1"]["state"] == "online" and states["tray-1"]["firmware"] == "0.1.0"
    assert states["snow-1"]["state"] == "stale"
    assert states["bus-1"]["state"] == "offline" and states["bus-1"]["battery_pct"] == 81.0
    page = client.get("/operator/devices?lang=en").text
    assert "1 running · 1 no recent signal · 1 stopped · 0 not heard from yet" in page
    assert re.search(r'data-device-id="snow-1".*?No recent signal', page, re.S)
    quarantine = client.get("/operator/quarantine?lang=en").text
    assert re.search(r"not readable \(not JSON\).*?<td>2</td>", quarantine, re.S)
    assert "device not registered" in quarantine and "jisaku/ghost-1/data" in quarantine
    assert client.get("/api/v1/operator/quarantine").json()["counts"] == {"not_json": 2, "unknown_device": 1}


def test_the_device_page_shows_a_refused_revision_with_the_devices_reason_and_a_pending_one(app):
    from jisaku.gateway.store import Batch, ConfigAck

    store = app.state.store
    rev = store.next_config("tray-1", {"left_after_s": 20})["rev"]
    store.write(Batch(config_acks=[ConfigAck("tray-1", rev, False, "buzzer pin busy", 1.0)]))
    client = TestClient(app)
    page_login(client)
    page = client.get("/operator/devices/tray-1?lang=en").text
    assert "revision 1: <span class=\"state state-refused" in page and "The device says: buzzer pin busy" in page
    store.next_config("tray-1", {"left_after_s": 25})
    assert "revision 2: <span class=\"state state-pending config-state\">waiting for the device" in client.get(
        "/operator/devices/tray-1?lang=en").text


def test_a_device_the_gateway_marked_stale_is_shown_stale_since_it_was_last_heard(app):
    import time

    from jisaku.contract.protocol import Reading, Status
    from jisaku.gateway.store import Batch

    store = app.state.store
    heard = time.time()
    store.write(Batch(readings=[("tray-1", Reading(heard, 1, {"paper": 0}))],
                      statuses=[("tray-1", Status("online"), heard)]))
    # What the gateway's housekeeping does once the tray (every 60 s) has been silent 3 minutes.
    assert store.mark_stale(now=heard + 181) == ["tray-1"]
    client = TestClient(app)
    api_login(client)
    tray = client.get("/api/v1/operator/devices/tray-1").json()
    assert tray["state"] == "stale" and abs(tray["last_seen"] - heard) < 1
