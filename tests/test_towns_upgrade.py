"""Upgrading a database made by the release before towns (schema 5) to towns.

tests/data/release-v5.db was made by that release's own code (tests/data/make_release_db.py,
run in a checkout of commit dfb3ab1), with rows in every table. Upgrading it keeps every row
of every table as it was, puts everything in the first town, ``main``, and its operators log
in and see their devices as before.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.gateway.db import Database, schema_version
from jisaku.gateway.migrations import MIGRATIONS
from jisaku.gateway.towns import Towns

RELEASE_DB = Path(__file__).parent / "data" / "release-v5.db"
PASSWORD = "release five passphrase"  # make_release_db.PASSWORD


def contents(connection: sqlite3.Connection, columns_of: dict[str, list[str]] | None = None) -> dict:
    """Every table's rows (ordered by every column: some tables have no rowid), of the given columns (default: all)."""
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    found = {}
    for table in tables:
        if columns_of is not None and table not in columns_of:
            continue
        columns = columns_of[table] if columns_of else [row[1] for row in
                                                        connection.execute(f'PRAGMA table_info("{table}")')]
        listed = ", ".join(f'"{column}"' for column in columns)
        found[table] = (columns, connection.execute(f'SELECT {listed} FROM "{table}" ORDER BY {listed}').fetchall())
    return found


def test_the_release_before_towns_upgrades_with_every_row_kept_and_everything_in_the_first_town(tmp_path):
    path = tmp_path / "jisaku.db"
    shutil.copy(RELEASE_DB, path)
    old = sqlite3.connect(path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 5
    before = contents(old)
    old.close()
    assert all(rows for _, rows in before.values()), "the release's file has rows in every table"
    assert len(before) > 25

    db = Database(path)
    assert schema_version(db.connection) == MIGRATIONS[-1].version
    after = contents(db.connection, {table: columns for table, (columns, _) in before.items()})
    for table, (columns, rows) in before.items():
        assert [tuple(row) for row in after[table][1]] == rows, f"{table}: rows changed by the upgrade"

    assert Towns(db).ids() == ["main"]
    for table in ("devices", "users", "alert_rules", "audit_log", "rollouts"):
        towns = {row[0] for row in db.connection.execute(f'SELECT town FROM "{table}"')}
        assert towns == {"main"}, f"{table}: {towns}"
    assert {row[0] for row in db.connection.execute("SELECT practice FROM devices")} == {0}

    # Its operators still log in, and see their devices, rules, alerts and change log.
    app = create_app(path, tiles="osm")
    for name in ("tanaka", "suzuki"):
        client = TestClient(app)
        answer = client.post("/api/v1/operator/login", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        assert answer.json()["town"] == "main"
        devices = {d["id"]: d for d in client.get("/api/v1/operator/devices").json()}
        assert {"snow-1", "tray-1", "shelter-1"} <= set(devices)
        assert devices["snow-1"]["name"] == "City hall gauge" and devices["snow-1"]["town"] == "main"
        assert "Deep snow" in {rule["name"] for rule in client.get("/api/v1/operator/rules").json()}
        assert "snow-1" in {alert["device_id"] for alert in client.get("/api/v1/operator/alerts").json()}
        audit = client.get("/api/v1/operator/audit").json()
        assert {"device.add", "rule.add"} <= {entry["action"] for entry in audit}
        assert client.get("/operator/devices/snow-1").status_code == 200
    # The residents' map still shows the public devices (the first town answers /).
    assert "snow-1" in TestClient(app).get("/api/v1/latest.geojson").text
