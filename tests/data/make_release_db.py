"""Make tests/data/release-v5.db: a database as the release before towns (schema 5) left it.

Run with THAT release's code, not this checkout's, so the file is what an upgrading town has::

    git worktree add /tmp/release-v5 dfb3ab1
    python tests/data/make_release_db.py /tmp/release-v5 tests/data/release-v5.db
    git worktree remove /tmp/release-v5

It imports ``jisaku`` from the release's folders (the package mapping of its pyproject.toml),
adds devices, accounts, a rule, an alert, readings, audit entries and so on through that
release's own code, and then gives every table still empty one row of plausible values, so
that the upgrade test (tests/test_towns_upgrade.py) sees rows in every table. (Those the
release's code has no plain call for, commands and rollouts, are written as it wrote them.) The accounts'
password is ``PASSWORD`` below.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import time
from pathlib import Path

PASSWORD = "release five passphrase"
# The release's pyproject.toml: import name -> folder.
PACKAGES = {"jisaku": "jisaku", "jisaku.contract": "contract", "jisaku.kinds": "kinds", "jisaku.device": "device",
            "jisaku.gateway": "gateway", "jisaku.dashboard": "dashboard", "jisaku.firmware": "firmware"}


def use_release(root: Path) -> None:
    """Import ``jisaku`` from the release's folders, whatever else is installed."""
    for name in list(sys.modules):
        if name == "jisaku" or name.startswith("jisaku."):
            del sys.modules[name]
    for name, folder in PACKAGES.items():
        path = root / folder
        init = path / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init if init.exists() else None,
                                                      submodule_search_locations=[str(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if init.exists():
            spec.loader.exec_module(module)
        if "." in name:
            setattr(sys.modules["jisaku"], name.split(".", 1)[1], module)


def fill_empty_tables(path: Path) -> None:
    """One row of plausible values in every table nothing above wrote to."""
    connection = sqlite3.connect(path)
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for table in tables:
        if connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]:
            continue
        columns = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
        names, values = [], []
        for _, name, kind, _, _, _ in columns:
            kind = (kind or "").upper()
            names.append(f'"{name}"')
            if "INT" in kind:
                values.append(1)
            elif "REAL" in kind or "FLOA" in kind:
                values.append(1700000000.0)
            elif "BLOB" in kind:
                values.append(b"\x00jisaku")
            elif name.endswith("_id") or name in ("device", "user", "name", "id"):
                values.append("snow-1" if "device" in name or table.startswith("device") else "release")
            else:
                values.append("{}")
        connection.execute(f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join("?" * len(values))})',
                           values)
        connection.commit()
    connection.close()


def main(root: Path, out: Path) -> None:
    use_release(root)
    from jisaku.contract.protocol import Event, Reading, Status
    from jisaku.gateway.accounts import Accounts
    from jisaku.gateway.alerts import AlertBook
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database, write
    from jisaku.gateway.registry import DeviceRecord
    from jisaku.gateway.store import Batch, Quarantined, SQLiteStore
    from jisaku.gateway.town_state import TownState

    out.unlink(missing_ok=True)
    db = Database(out)
    changes = Changes(db)
    accounts = Accounts(db)
    accounts.add("tanaka", PASSWORD, role="admin")
    accounts.add("suzuki", PASSWORD, role="operator")
    changes.add_device("cli:release", DeviceRecord("snow-1", "snow_gauge", name="City hall gauge",
                                                   name_ja="積雪計（市役所）", interval_s=600, lat=36.14, lon=137.25))
    changes.add_device("tanaka", DeviceRecord("tray-1", "printer_tray", name="Counter printer", interval_s=60))
    changes.add_device("tanaka", DeviceRecord("shelter-1", "shelter", name="North school", public=False))
    changes.update_user("tanaka", "suzuki", role="switcher")
    rule = changes.add_rule("tanaka", {"name": "Deep snow", "kind": "snow_gauge", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25}})
    now = time.time()
    SQLiteStore(db).write(Batch(
        readings=[("snow-1", Reading(now - 60, 1, {"depth_cm": 34.0, "battery_pct": 80.0})),
                  ("tray-1", Reading(now - 30, 1, {"paper": 1}))],
        events=[("tray-1", Event(now - 20, 2, "printed", {"ticket": 7}))],
        statuses=[("snow-1", Status("online", {"fw": "0.5.0"}), now - 100)],
        quarantined=[Quarantined("jisaku/ghost-1/data", b'{"seq": 1}', "unknown_device", "not registered", now)]))
    AlertBook(db).raise_alert(rule, "snow-1", now - 50, "Deep snow: 34 cm", 34.0)
    TownState(db).set("disaster_mode", False, "tanaka")
    # What the release's switching and updates wrote, as they wrote it (a tray that ran 1.4.0).
    with write(db.connection) as connection:
        connection.execute(
            "INSERT INTO commands (id, device_id, do, args, source, issued_by, issued_at, expires_at, status,"
            " answered_at, result) VALUES ('c-release01', 'tray-1', 'switch', '{\"output\": \"heater\", \"on\": true}',"
            " 'operator', 'suzuki', ?, ?, 'done', ?, '{\"heater\": 1}')", (now - 40, now + 80, now - 39))
        connection.execute("INSERT INTO device_outputs (device_id, outputs, updated) VALUES ('tray-1',"
                           " '{\"heater\": {\"name\": \"Heater\", \"safe\": \"off\", \"max_on_min\": 0}}', ?)",
                           (now - 40,))
        connection.execute("INSERT INTO rule_actions (rule_id, device_id, output, wanted, sent_on, sent_at, command_id)"
                           " VALUES (?, 'tray-1', 'heater', 1, 1, ?, 'c-release01')", (rule.id, now - 40))
        connection.execute(
            "INSERT INTO rollouts (kind, version, runs_on, bytes, manifest_sha256, target, first_wave, wait_min,"
            " trial_s, state, created_by, created_at, finished_at) VALUES ('printer_tray', '1.4.0', 'board', 4096,"
            " ?, 'devices', 0, 30, 300, 'done', 'tanaka', ?, ?)", ("ab" * 32, now - 3600, now - 1800))
        connection.execute(
            "INSERT INTO device_updates (rollout_id, device_id, version, wave, state, from_version, offered_at,"
            " updated_at, cleared) VALUES (1, 'tray-1', '1.4.0', 1, 'running', '1.3.0', ?, ?, 1)",
            (now - 3500, now - 1800))
        connection.execute("INSERT INTO device_software (device_id, runs_on, version, fw, updated) VALUES"
                           " ('tray-1', 'board', '1.4.0', '0.5.0', ?)", (now - 1800,))
    db.connection.close()
    fill_empty_tables(out)
    connection = sqlite3.connect(out)
    empty = [name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        if not connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    connection.execute("PRAGMA journal_mode = DELETE")  # one file, and a page size that can change
    connection.execute("PRAGMA page_size = 1024")  # a small file to commit
    connection.execute("VACUUM")
    connection.close()
    assert not empty, f"still empty: {empty}"
    print(f"{out}: schema {version}, every table has rows")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/data/make_release_db.py RELEASE_CHECKOUT OUT.db")
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
