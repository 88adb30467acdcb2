"""``jisaku towns``, and ``--town`` / ``--all-towns`` on ``jisaku devices add`` and ``jisaku users add``,
run as people type them (subprocesses on a data folder of their own)."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database
from jisaku.gateway.towns import Towns

PASSWORD = "a long enough passphrase"


@pytest.fixture
def jisaku(tmp_path):
    """Runs ``jisaku ARGS…`` on tmp_path's data; returns the finished process (text output)."""
    env = {**os.environ, "JISAKU_DATA": str(tmp_path)}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jisaku.cli", *args], input=stdin, env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    return run


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    return done.stderr


def login(app, name: str) -> TestClient:
    client = TestClient(app)
    assert client.post("/api/v1/operator/login", json={"name": name, "password": PASSWORD}).status_code == 200
    return client


def test_towns_are_added_listed_and_given_their_devices_and_accounts(jisaku, tmp_path):
    listed = ok(jisaku("towns", "list"))
    assert "main" in listed and " / " in listed  # the first town answers the paths without /t/
    added = ok(jisaku("towns", "add", "kita", "--name", "Kita Town", "--name-ja", "北町", "--centre", "36.30,137.10",
                      "--zoom", "12", "--licence", "CC-BY-4.0"))
    assert "/t/kita/" in added
    ok(jisaku("devices", "add", "kita-snow", "--kind", "snow_gauge", "--town", "kita"))
    ok(jisaku("devices", "add", "main-snow", "--kind", "snow_gauge"))
    ok(jisaku("users", "add", "yamada", "--town", "kita", stdin=PASSWORD + "\n"))
    ok(jisaku("users", "add", "kanri", "--role", "admin", "--all-towns", stdin=PASSWORD + "\n"))
    ok(jisaku("users", "add", "suzuki", stdin=PASSWORD + "\n"))

    listed = ok(jisaku("towns", "list"))
    kita = next(line for line in listed.splitlines() if line.startswith("kita"))
    assert "/t/kita/" in kita and "Kita Town / 北町" in kita and kita.split()[2:4] == ["1", "1"]
    assert "1 account(s) of every town" in listed
    devices = {line.split()[0]: line.split()[1] for line in ok(jisaku("devices", "list")).splitlines()[1:]}
    assert devices == {"kita-snow": "kita", "main-snow": "main"}
    users = {line.split()[0]: line.split()[2] for line in ok(jisaku("users", "list")).splitlines()[1:]}
    assert users == {"yamada": "kita", "kanri": "(every)", "suzuki": "main"}

    town = Towns(Database(tmp_path / "jisaku.db")).get("kita")
    assert (town.name, town.name_ja, town.lat, town.lon, town.zoom, town.licence) == \
        ("Kita Town", "北町", 36.30, 137.10, 12, "CC-BY-4.0")
    # Each account sees its town's devices; the joint body's account every town's.
    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    seen = {name: {d["id"] for d in login(app, name).get("/api/v1/operator/devices").json()}
            for name in ("yamada", "suzuki", "kanri")}
    assert seen == {"yamada": {"kita-snow"}, "suzuki": {"main-snow"}, "kanri": {"kita-snow", "main-snow"}}


def test_a_town_is_changed_and_renamed_everywhere_with_audit_entries(jisaku, tmp_path):
    ok(jisaku("towns", "add", "kita", "--name", "Kita Town"))
    ok(jisaku("devices", "add", "kita-snow", "--kind", "snow_gauge", "--town", "kita"))
    ok(jisaku("users", "add", "yamada", "--town", "kita", stdin=PASSWORD + "\n"))
    assert "renamed from kita" in ok(jisaku("towns", "set", "kita", "--id", "hoku", "--name-ja", "北町",
                                            "--tiles", "gsi"))
    db = Database(tmp_path / "jisaku.db")
    assert Towns(db).ids() == ["main", "hoku"] and Towns(db).get("hoku").tiles == "gsi"
    assert Towns(db).of_device("kita-snow") == "hoku"
    assert "hoku" in ok(jisaku("users", "list"))
    entries = AuditLog(db).entries()
    actor = f"cli:{getpass.getuser()}"
    changed = next(e for e in entries if e["action"] == "town.update")
    assert changed["actor"] == actor and changed["town"] == "hoku" and changed["target"] == "hoku"
    assert changed["before"] == {"id": "kita", "name_ja": "", "tiles": None}
    assert changed["after"] == {"id": "hoku", "name_ja": "北町", "tiles": "gsi"}
    assert {(e["action"], e["town"]) for e in entries} >= {("town.add", "hoku"), ("device.add", "hoku"),
                                                           ("user.add", "hoku")}
    # Its operator, renamed with it, still sees its device.
    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    assert [d["id"] for d in login(app, "yamada").get("/api/v1/operator/devices").json()] == ["kita-snow"]


def test_what_cannot_be_done_is_refused_with_what_to_do(jisaku, tmp_path):
    ok(jisaku("towns", "add", "kita"))
    assert "already exists" in refused(jisaku("towns", "add", "kita"))
    assert "/t/<id>/" in refused(jisaku("towns", "add", "Kita Town"))
    assert "LAT,LON" in refused(jisaku("towns", "add", "minami", "--centre", "north"))
    assert "nothing to change" in refused(jisaku("towns", "set", "kita"))
    assert "no town 'nowhere'" in refused(jisaku("towns", "set", "nowhere", "--name", "X"))
    assert "no town 'nowhere'" in refused(jisaku("devices", "add", "x-1", "--kind", "snow_gauge", "--town", "nowhere"))
    assert "no town 'nowhere'" in refused(jisaku("users", "add", "x", "--town", "nowhere", stdin=PASSWORD + "\n"))
    assert "not both" in refused(jisaku("users", "add", "x", "--town", "kita", "--all-towns", stdin=PASSWORD + "\n"))
    assert "already exists" in refused(jisaku("towns", "set", "kita", "--id", "main"))
    db = Database(tmp_path / "jisaku.db")
    assert Towns(db).ids() == ["main", "kita"]
    assert not db.connection.execute("SELECT 1 FROM devices").fetchone()
    assert not db.connection.execute("SELECT 1 FROM users").fetchone()


def test_a_towns_own_notification_targets_are_set_from_a_file_and_its_alerts_go_there_only(jisaku, tmp_path):
    from jisaku.gateway.notify_config import NotifyConfig
    from jisaku.gateway.notify_routes import Routes

    (tmp_path / "kita-notify.toml").write_text(
        '[notify]\nevents = ["raised", "cleared"]\n'
        '[[notify.webhook]]\nurl = "https://hooks.example.jp/services/KITA-TOKEN"\nformat = "slack"\n')
    (tmp_path / "wrong.toml").write_text('[notify]\nwebhook = [{url = "ftp://files.example.jp/x"}]\n')
    ok(jisaku("towns", "add", "kita", "--name", "Kita Town", "--notify", "kita-notify.toml"))
    ok(jisaku("towns", "add", "minami", "--name", "Minami Town"))

    db = Database(tmp_path / "jisaku.db")
    routes = Routes(db, NotifyConfig.from_settings({"webhook": [{"url": "https://hooks.example.jp/main"}]}))
    raised = {"event": "raised"}
    assert routes.channels({**raised, "route": {"town": "kita"}}) == ["town:kita:webhook-1"]
    assert routes.resolve("town:kita:webhook-1")[0].webhook[0].url.endswith("KITA-TOKEN")
    assert routes.channels({**raised, "route": {"town": "main"}}) == ["webhook-1"]  # jisaku.toml's, as before
    assert routes.channels({**raised, "route": {"town": "minami"}}) == [], "never the first town's staff"
    assert routes.channels({"event": "acknowledged", "route": {"town": "kita"}}) == []  # its own events list

    assert "https://" in refused(jisaku("towns", "set", "kita", "--notify", "wrong.toml"))
    assert "No such file" in refused(jisaku("towns", "set", "kita", "--notify", "missing.toml"))
    assert Towns(db).get("kita").notify["webhook"][0]["url"].endswith("KITA-TOKEN"), "a refused file changes nothing"
    ok(jisaku("towns", "set", "kita", "--notify", "none"))
    assert Towns(db).get("kita").notify is None and routes.channels({**raised, "route": {"town": "kita"}}) == []
    logged = AuditLog(db).entries(target="kita")
    assert [e["action"] for e in logged] == ["town.update", "town.add"]
    assert "KITA-TOKEN" not in str(logged) and logged[1]["after"]["notify"] == ["webhook-1"]
